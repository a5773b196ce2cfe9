"""A trial's checkpoints and its teacher cache in a storage Location: what is kept
(retention), resume through a real S3 server, and a teacher trained once before the trials
(ensure_teacher) that trials then only read."""

from __future__ import annotations

import json

import pytest
import torch

from bkd_sweep.config import TrialConfig, apply_overrides
from bkd_sweep.records import CHECKPOINT_FILE, EpochMetrics
from bkd_sweep.storage import Location
from bkd_sweep.trial import run_trial
from bkd_sweep.trial.state import (BEST_FILE, build_state, load_checkpoint, resume,
                                   save_checkpoint, track_best)
from bkd_sweep.trial.teacher import ensure_teacher
from bkd_sweep.trial.teacher_cache import TeacherCache, evaluation_key

BASE = {
    "data.dataset": "digits", "data.batch_size": 32, "data.limit_train": 512,
    "data.limit_val": 128, "student.arch": "spiking_cnn_small", "student.timesteps": 2,
    "teacher.arch": "cnn_small", "teacher.checkpoint": "train", "teacher.feature": "features",
    "teacher.train.epochs": 2, "teacher.train.optimizer.lr": 3e-3,
    "train.epochs": 3, "train.optimizer.lr": 3e-3, "train.threads": 1,
    "distill.beta": 1e-5, "energy.samples": 16,
}


def make_config(**overrides) -> TrialConfig:
    merged = {**BASE, **{k.replace("__", "."): v for k, v in overrides.items()}}
    return apply_overrides(TrialConfig(), merged)


def epoch_metrics(epoch: int, top1: float) -> EpochMetrics:
    return EpochMetrics(epoch=epoch, top1=top1, top5=top1, val_loss=1.0, loss=1.0, lr=0.1,
                        wall_seconds=1.0)


def test_a_trial_trains_in_the_students_layout_with_a_fused_optimizer():
    state = build_state(make_config(distill__mode="none"))
    conv = next(m for m in state.student.modules()
                if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    assert state.optimizer.defaults["fused"] is True


def test_checkpoint_folder_keeps_last_and_best_only_while_the_best_is_older(tmp_path):
    """select best, val top-1 50, 60, 55, 70: best.pt exists only after epoch 3 (the best,
    epoch 2, is no longer last.pt's); a trial killed then resumes with epoch 2 as its best."""
    config = make_config(distill__mode="none", train__epochs=4)
    state = build_state(config)
    folder = Location.of(tmp_path / "ckpt")
    expected = {1: ["last.pt"], 2: ["last.pt"], 3: ["best.pt", "last.pt"], 4: ["last.pt"]}
    written = {}
    for epoch, top1 in zip(range(1, 5), (50.0, 60.0, 55.0, 70.0)):
        with torch.no_grad():  # each epoch's weights recognisable by their value
            for param in state.model.parameters():
                param.fill_(float(epoch))
        metrics = epoch_metrics(epoch, top1)
        state.history.append(metrics)
        track_best(state, metrics)
        written[epoch] = save_checkpoint(state, epoch, folder, wall_seconds=float(epoch))
        assert list(folder.list_files()) == expected[epoch], epoch
        if epoch == 3:
            resumed = build_state(config)
            resume(resumed, folder)
            assert resumed.start_epoch == 4 and resumed.best.epoch == 2
            names = dict(resumed.model.named_parameters())
            assert all(bool((resumed.best.model[n] == 2.0).all()) for n in names)
            assert load_checkpoint(folder.local_path / BEST_FILE)["epoch"] == 2
    # the weights are written once per epoch, twice only when the best turns older
    assert written[3] > 1.2 * written[2] and written[4] == pytest.approx(written[2], rel=0.05)
    assert load_checkpoint(folder.local_path / CHECKPOINT_FILE)["best"]["epoch"] == 4

    last_only = build_state(make_config(distill__mode="none", train__select="last"))
    for epoch, top1 in ((1, 60.0), (2, 50.0)):
        last_only.history.append(epoch_metrics(epoch, top1))
        track_best(last_only, last_only.history[-1])
        save_checkpoint(last_only, epoch, Location.of(tmp_path / "last"), wall_seconds=1.0)
    assert list(Location.of(tmp_path / "last").list_files()) == ["last.pt"]


def _mark_cache(cache: TeacherCache, config: TrialConfig, val_top1: float) -> None:
    """Tag the cached teacher's metadata and evaluation: a later write would drop the tag,
    and a trial that reads the evaluation reports the planted accuracy."""
    name = cache.metadata_name(config)
    meta = json.loads(cache.teachers.read_text(name))
    cache.teachers.write_text(json.dumps({**meta, "planted": True}), name)
    key = evaluation_key(cache.read_trained(config), config)
    cache.store_evaluation(key, {**cache.read_evaluation(key), "val_top1": val_top1})


def _assert_cache_untouched(cache: TeacherCache, config: TrialConfig) -> None:
    assert json.loads(cache.teachers.read_text(cache.metadata_name(config)))["planted"]
    assert list(cache.teachers.list_files(suffix=".pt")) == [cache.weights_name(config)]


def test_ensure_teacher_trains_once_and_trials_then_only_read(tmp_path):
    config = make_config(distill__mode="logit", train__epochs=1)
    first = ensure_teacher(config, tmp_path / "cache")
    assert first.trained and first.cache_key and 80 < first.test_top1 <= 100
    second = ensure_teacher(config, str(tmp_path / "cache"), device="cpu")
    assert not second.trained and second.cache_key == first.cache_key
    assert (second.val_top1, second.test_top1) == (first.val_top1, first.test_top1)
    assert second.seconds < first.seconds
    cache = TeacherCache.of(tmp_path / "cache")
    _mark_cache(cache, config, val_top1=12.5)
    result = run_trial(config, cache_dir=tmp_path / "cache")
    assert result.status == "completed", result.reason
    assert result.teacher_val_top1 == 12.5  # read from the cache, not measured again
    _assert_cache_untouched(cache, config)


@pytest.mark.server
@pytest.mark.slow
def test_trial_on_s3_resumes_after_a_kill_and_matches_the_uninterrupted_run(s3_root):
    config = make_config(distill__mode="bkd")
    cache = TeacherCache.of(f"{s3_root}/cache")
    assert ensure_teacher(config, cache).trained  # the driver's step: trials only read
    _mark_cache(cache, config, val_top1=12.5)
    straight = run_trial(config, cache_dir=cache)
    folder = f"{s3_root}/trials/t0000/ckpt"

    def kill_after_epoch_2(metrics, checkpoints):
        assert isinstance(checkpoints, Location) and checkpoints.exists(CHECKPOINT_FILE)
        if metrics.epoch == 2:
            raise Killed()

    with pytest.raises(Killed):
        run_trial(config, kill_after_epoch_2, checkpoint_dir=folder, cache_dir=cache)
    epochs_seen = []
    resumed = run_trial(config, lambda m, d: epochs_seen.append(m.epoch),
                        checkpoint_dir=Location.of(folder), cache_dir=f"{s3_root}/cache")
    assert epochs_seen == [3]  # only the missing epoch ran
    assert [h.loss for h in resumed.history] == pytest.approx([h.loss for h in straight.history])
    assert (resumed.selected_epoch, resumed.test_top1) == (straight.selected_epoch,
                                                           straight.test_top1)
    assert resumed.teacher_val_top1 == straight.teacher_val_top1 == 12.5
    _assert_cache_untouched(cache, config)
    # retention: last.pt, and best.pt only when the selected epoch is not the last one
    kept = ["last.pt"] if resumed.selected_epoch == 3 else ["best.pt", "last.pt"]
    assert list(Location.of(folder).list_files()) == kept
    with pytest.raises(RuntimeError, match="another configuration"):
        run_trial(make_config(distill__mode="none"), checkpoint_dir=folder, cache_dir=cache)


class Killed(Exception):
    pass
