"""One trial end to end on CPU: every mode, determinism, resume, failure, teacher caching."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bkd_sweep.config import TrialConfig, apply_overrides
from bkd_sweep.trial import CHECKPOINT_FILE, run_trial

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "data.dataset": "digits", "data.batch_size": 32, "data.limit_train": 768,
    "data.limit_val": 128, "student.arch": "spiking_cnn_small", "student.timesteps": 2,
    "teacher.arch": "cnn_small", "teacher.checkpoint": "train", "teacher.feature": "features",
    "teacher.train.epochs": 2, "teacher.train.optimizer.lr": 3e-3,
    "train.epochs": 2, "train.optimizer.lr": 3e-3, "train.threads": 1,
    "distill.beta": 1e-5, "energy.samples": 16,
}


def make_config(**overrides) -> TrialConfig:
    merged = {**BASE, **{k.replace("__", "."): v for k, v in overrides.items()}}
    return apply_overrides(TrialConfig(), merged)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


EXPECTED_TERMS = {"none": {"task"}, "logit": {"task", "logit"}, "bkd": {"task", "bkd"},
                  "mixed": {"task", "logit", "bkd"}}


@pytest.mark.parametrize("mode", ["none", *(pytest.param(m, marks=pytest.mark.slow)
                                            for m in ("logit", "bkd", "mixed"))])
def test_each_mode_completes_with_every_result_field(mode, cache_dir):
    reports = []
    result = run_trial(make_config(distill__mode=mode), lambda m, d: reports.append(m),
                       cache_dir=cache_dir)
    assert result.status == "completed", result.reason
    assert [m.epoch for m in reports] == [1, 2] and result.epochs_run == 2
    assert set(result.history[-1].loss_terms) == EXPECTED_TERMS[mode]
    for h in result.history:  # the total is the sum of the weighted terms
        assert h.loss == pytest.approx(sum(h.loss_terms.values()), rel=1e-6)
    assert 0 <= result.final_top1 <= 100 and result.best_top1 >= result.final_top1
    assert result.best_top1 > 50  # 10 classes: clearly learning after 2 short epochs
    energy = result.energy
    assert energy.energy_mj > 0 and energy.sops > 0 and energy.macs > 0
    assert energy.energy_mj == pytest.approx((4.6 * energy.macs + 0.9 * energy.sops) * 1e-9)
    assert energy.firing_rates and 0 < energy.mean_firing_rate < 1
    assert result.teacher_energy_mj > energy.energy_mj  # the ANN teacher costs more
    assert result.config["distill"]["mode"] == mode and len(result.config_hash) == 16
    if mode != "none":
        assert result.teacher_test_top1 > 80 and result.teacher_val_top1 > 80


@pytest.mark.slow
def test_same_seed_same_result_on_cpu(cache_dir):
    config = make_config(distill__mode="mixed")
    a = run_trial(config, cache_dir=cache_dir)
    b = run_trial(config, cache_dir=cache_dir)
    assert [h.top1 for h in a.history] == [h.top1 for h in b.history]
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    c = run_trial(make_config(distill__mode="mixed", seed=1), cache_dir=cache_dir)
    assert [h.loss for h in c.history] != [h.loss for h in a.history]


class Killed(Exception):
    pass


@pytest.mark.slow
def test_killed_trial_resumes_where_it_was_with_the_same_result(tmp_path, cache_dir):
    config = make_config(distill__mode="bkd", train__epochs=3)
    straight = run_trial(config, cache_dir=cache_dir)

    def kill_after_epoch_2(metrics, checkpoint_dir):
        assert (checkpoint_dir / CHECKPOINT_FILE).exists()
        if metrics.epoch == 2:
            raise Killed()

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):
        run_trial(config, kill_after_epoch_2, checkpoint_dir=ckpt, cache_dir=cache_dir)
    epochs_seen = []
    resumed = run_trial(config, lambda m, d: epochs_seen.append(m.epoch), checkpoint_dir=ckpt,
                        cache_dir=cache_dir)
    assert epochs_seen == [3]  # only the missing epoch ran
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    assert [h.loss for h in resumed.history] == pytest.approx([h.loss for h in straight.history])
    assert resumed.final_top1 == pytest.approx(straight.final_top1)
    assert (resumed.selected_epoch, resumed.test_top1) == (straight.selected_epoch, straight.test_top1)
    # a checkpoint of another configuration is never silently reused
    with pytest.raises(RuntimeError, match="another configuration"):
        run_trial(make_config(distill__mode="none", train__epochs=3), checkpoint_dir=ckpt,
                  cache_dir=cache_dir)


def test_non_finite_loss_ends_the_trial_as_failed_with_the_reason(cache_dir):
    result = run_trial(make_config(distill__mode="bkd", distill__beta=1e38), cache_dir=cache_dir)
    assert result.status == "failed"
    assert "non-finite loss" in result.reason and "epoch 1 step 1" in result.reason
    assert result.epochs_run == 0 and result.energy is None


@pytest.mark.slow
def test_loss_imbalance_is_warned(cache_dir):
    result = run_trial(make_config(distill__mode="bkd", distill__beta=2e-2, train__epochs=1),
                       cache_dir=cache_dir)
    assert any("L_bkd" in w and "beta" in w for w in result.warnings)


def _train_teacher_in_process(args):
    cache_dir, queue = args
    from bkd_sweep.trial.teacher import study_data, trained_teacher_weights
    from bkd_sweep.trial.teacher_cache import TeacherCache

    torch.set_num_threads(1)
    config = make_config(distill__mode="mixed")
    bundle = study_data(config, teacher_frames=True)
    weights = trained_teacher_weights(config, bundle, torch.device("cpu"),
                                      TeacherCache.of(cache_dir))
    return weights.trained, weights.source


@pytest.mark.slow
def test_a_study_of_n_trials_trains_its_teacher_once(tmp_path):
    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        outcomes = pool.map(_train_teacher_in_process, [(str(tmp_path), None)] * 3)
    assert sum(trained for trained, _ in outcomes) == 1
    assert len({weights for _, weights in outcomes}) == 1
    assert len(list((tmp_path / "teachers").glob("*.pt"))) == 1


def test_event_data_with_an_snn_teacher_at_larger_t(tmp_path, cache_dir, dataset_files):
    root = dataset_files.write_cifar10_dvs(tmp_path / "dvs", n_per_class=3, n_events=256)
    config = make_config(**{"data.dataset": "cifar10_dvs", "data.root": str(root),
                            "data.image_size": 16, "data.limit_train": None,
                            "data.limit_val": None, "data.batch_size": 8,
                            "teacher.arch": "spiking_cnn_small", "teacher.timesteps": 4,
                            "teacher.feature": "pre_logits", "train.epochs": 1,
                            "teacher.train.epochs": 1, "distill.mode": "mixed"})
    result = run_trial(config, cache_dir=cache_dir)
    assert result.status == "completed", result.reason
    assert result.energy.timesteps == 2 and result.teacher_energy_mj is not None


@pytest.mark.slow
def test_cli_train_writes_the_result_json(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text((ROOT / "studies" / "quickstart.yaml").read_text())
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bkd_sweep.cli", "train", str(study), "--set", "distill.mode=logit",
         "--set", "train.epochs=1", "--set", "data.limit_train=128", "--set", "student.timesteps=1",
         "--set", "teacher.train.epochs=1", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads(out.read_text())
    for key in ("status", "val_top1", "test_top1", "selected_epoch", "teacher_val_top1",
                "teacher_test_top1", "test_top5", "energy_mj", "sops", "macs", "firing_rates",
                "losses_per_epoch", "wall_seconds"):
        assert payload[key] is not None, key
    assert payload["status"] == "completed" and payload["selected_epoch"] == 1
    assert payload["val_top1"] == payload["result"]["history"][0]["top1"]
    assert set(payload["losses_per_epoch"][0]) == {"epoch", "loss", "task", "logit"}
    bad = subprocess.run([sys.executable, "-m", "bkd_sweep.cli", "train", str(study), "--set",
                          "distill.blur_ratio=3"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "blur_ratio" in bad.stderr


@pytest.mark.slow
def test_val_selects_and_test_is_measured_once_on_the_selected_weights(cache_dir):
    """With val = test (val_fraction 0) the one test pass must reproduce the selected
    epoch's val top-1 exactly: same weights, same images."""
    for select in ("best", "last"):
        result = run_trial(make_config(distill__mode="mixed", train__epochs=3,
                                       data__val_fraction=0, train__select=select,
                                       train__optimizer__lr=2e-2), cache_dir=cache_dir)
        top1 = [h.top1 for h in result.history]
        expected = top1.index(max(top1)) + 1 if select == "best" else 3
        assert result.selected_epoch == expected
        assert result.val_top1 == top1[expected - 1]
        assert result.test_top1 == result.val_top1
        assert result.selection_on_test is True


@pytest.mark.slow
def test_result_names_its_splits_and_the_teachers_accuracy(cache_dir):
    result = run_trial(make_config(distill__mode="mixed"), cache_dir=cache_dir)
    assert result.selection_on_test is False and "test: 20% of each class" in result.split_rule
    assert 0 < result.test_top1 <= 100 and result.val_top1 == max(h.top1 for h in result.history)
    assert 50 < result.teacher_val_top1 <= 100 and 50 < result.teacher_test_top1 <= 100
    assert result.config_id == make_config(distill__mode="mixed", seed=5).config_id()
    assert result.config_id != make_config(distill__mode="none").config_id()
    given = run_trial(make_config(distill__mode="logit", teacher__accuracy=12.5,
                                  train__epochs=1), cache_dir=cache_dir)
    assert any(w.startswith("teacher.accuracy says 12.50 but the teacher measures")
               for w in given.warnings)
