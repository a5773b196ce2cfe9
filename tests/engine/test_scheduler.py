"""The Ray<->Optuna glue with plain values: no Ray cluster, only result dicts."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from bkd_sweep.engine.book import SweepBook
from bkd_sweep.engine.scheduler import OptunaPruningScheduler
from bkd_sweep.engine.searcher import OptunaSearcher
from bkd_sweep.engine.worker import epoch_payload, final_payload
from bkd_sweep.records import EnergyReport, EpochMetrics, TrialResult
from bkd_sweep.config import load_study_text

STUDY = """
name: glue
distill: {{mode: none}}
train: {{epochs: 4}}
search:
  sampler: grid
  params:
    distill.blur_ratio: [0.0, 0.2, 0.4, 0.6]
  objectives: {objectives}
  pruner: {pruner}
  pruned_metric: {metric}
"""


def make(tmp_path: Path, pruner="{name: median, startup_trials: 1}",
         objectives="[{metric: top1, mode: max}]", metric="top1"):
    loaded = load_study_text(STUDY.format(pruner=pruner, objectives=objectives, metric=metric))
    book = SweepBook(loaded.study, tmp_path / "glue")
    book.open()
    return book, OptunaSearcher(book), OptunaPruningScheduler(book)


def epoch(n: int, top1: float, val_loss: float = 1.0) -> dict:
    return epoch_payload(EpochMetrics(epoch=n, top1=top1, top5=top1, val_loss=val_loss,
                                      loss=1.0, lr=0.1, wall_seconds=2.0))


def completed(book: SweepBook, number: int, top1s: list[float], energy: float = 0.5,
              status: str = "completed") -> dict:
    spec = book.live.spec(number)
    history = [EpochMetrics(epoch=i + 1, top1=v, top5=v, val_loss=1.0, loss=1.0, lr=0.1,
                            wall_seconds=2.0) for i, v in enumerate(top1s)]
    result = TrialResult.from_history(
        status, history, reason="non-finite loss" if status == "failed" else None,
        energy=EnergyReport(energy_mj=energy, sops=1.0, macs=1.0, mean_firing_rate=0.1,
                            timesteps=4, e_mac_pj=4.6, e_ac_pj=0.9, first_layer_once=False),
        config=spec.config.model_dump(mode="json"), config_hash=spec.config.config_hash(),
        wall_seconds=2.0 * len(top1s), devices=1, device="cpu")
    return final_payload(result)


def start(searcher: OptunaSearcher, ray_id: str) -> SimpleNamespace:
    config = searcher.suggest(ray_id)
    assert isinstance(config, dict)
    return SimpleNamespace(trial_id=ray_id, config=config)


def test_median_pruning_stops_and_records_pruned_never_complete(tmp_path):
    book, searcher, scheduler = make(tmp_path)
    a = start(searcher, "ray-a")
    assert a.config["trial_id"] == "t0000" and a.config["params"] == {"distill.blur_ratio": 0.0}
    for n, v in enumerate([40.0, 60.0, 70.0, 80.0], start=1):
        assert scheduler.on_trial_result(None, a, epoch(n, v)) == TrialScheduler.CONTINUE
    final = completed(book, 0, [40.0, 60.0, 70.0, 80.0])
    assert scheduler.on_trial_result(None, a, final) == TrialScheduler.CONTINUE  # ignored
    searcher.on_trial_complete("ray-a", result={**final, "done": True})
    frozen = book.optuna.trials[0]
    assert frozen.state == TrialState.COMPLETE and frozen.value == 80.0
    assert frozen.intermediate_values == {1: 40.0, 2: 60.0, 3: 70.0, 4: 80.0}

    b = start(searcher, "ray-b")
    assert scheduler.on_trial_result(None, b, epoch(1, 50.0)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, b, epoch(2, 10.0)) == TrialScheduler.STOP
    frozen = book.optuna.trials[1]
    assert frozen.state == TrialState.PRUNED
    assert frozen.user_attrs["pruned_epoch"] == 2
    # Tune then completes the stopped trial with its last (epoch) result: still PRUNED
    searcher.on_trial_complete("ray-b", result={**epoch(2, 10.0), "done": True})
    assert book.optuna.trials[1].state == TrialState.PRUNED
    record = book.record(1)
    assert record.result.status == "pruned"
    assert record.result.reason == "pruned by median pruner at epoch 2"
    assert record.pruned_epoch == 2 and record.result.epochs_run == 2
    assert record.result.best_top1 == 50.0 and record.result.final_top1 == 10.0
    assert record.result.wall_seconds == 4.0
    assert record.result.config_hash == book.live.spec(1).config.config_hash()
    saved = json.loads((tmp_path / "glue/trials/t0001/result.json").read_text())
    assert saved["result"]["status"] == "pruned" and saved["pruned_epoch"] == 2
    # a late result after the stop changes nothing
    assert scheduler.on_trial_result(None, b, epoch(3, 90.0)) == TrialScheduler.CONTINUE
    assert book.optuna.trials[1].intermediate_values == {1: 50.0, 2: 10.0}


def test_failures_are_fail_and_unfinished_trials_stay_running(tmp_path):
    book, searcher, scheduler = make(tmp_path, pruner="{name: none}")
    a, b, c = (start(searcher, f"ray-{x}") for x in "abc")
    searcher.on_trial_complete("ray-a", error=True)
    assert book.optuna.trials[0].state == TrialState.FAIL
    book.fail(0, "ValueError: bad data")  # the callback's better reason
    assert book.record(0).result.reason == "ValueError: bad data"
    searcher.on_trial_complete("ray-b", result={**completed(book, 1, [5.0], status="failed"),
                                                "done": True})
    assert book.optuna.trials[1].state == TrialState.FAIL
    assert book.record(1).result.reason == "non-finite loss"
    scheduler.on_trial_result(None, c, epoch(1, 30.0))
    searcher.on_trial_complete("ray-c", result={**epoch(1, 30.0), "done": True})
    assert book.optuna.trials[2].state == TrialState.RUNNING  # no result: left for resume
    assert book.record(2) is None


def test_multi_objective_completes_with_values_in_order_and_threshold_prunes(tmp_path):
    book, searcher, scheduler = make(
        tmp_path, pruner="{name: threshold, lower: 30.0, warmup_epochs: 1}",
        objectives="[{metric: top1, mode: max}, {metric: energy_mj, mode: min}]")
    a = start(searcher, "ray-a")
    searcher.on_trial_complete("ray-a", result=completed(book, 0, [70.0, 75.0], energy=0.25))
    assert book.optuna.trials[0].values == [75.0, 0.25]
    b = start(searcher, "ray-b")
    assert scheduler.on_trial_result(None, b, epoch(1, 5.0)) == TrialScheduler.CONTINUE  # warmup
    assert scheduler.on_trial_result(None, b, epoch(2, 5.0)) == TrialScheduler.STOP
    assert book.optuna.trials[1].state == TrialState.PRUNED
    assert book.record(1).result.reason == "pruned by threshold pruner at epoch 2"
    c = start(searcher, "ray-c")
    assert scheduler.on_trial_result(None, c, epoch(2, 31.0)) == TrialScheduler.CONTINUE
    assert [t.number for t in book.best()] == [0]


def test_pruned_metric_with_opposite_direction_is_negated(tmp_path):
    book, searcher, scheduler = make(tmp_path, metric="val_loss")
    a = start(searcher, "ray-a")
    scheduler.on_trial_result(None, a, epoch(1, 50.0, val_loss=0.5))
    # the study maximizes top1 and val_loss improves downwards: Optuna sees -val_loss
    assert book.optuna.trials[0].intermediate_values == {1: -0.5}


def test_resume_reruns_interrupted_trials_under_their_number(tmp_path):
    book, searcher, _ = make(tmp_path, pruner="{name: none}")
    start(searcher, "ray-a")
    start(searcher, "ray-b")
    searcher.on_trial_complete("ray-a", result=completed(book, 0, [60.0]))
    # trial 1 was running when the driver died; reopen the journal as a new driver would
    book2 = SweepBook(book.study, book.results_dir)
    assert book2.settle_interrupted() == []
    book2.open()
    assert book2.remaining() == 3  # t0001 again + t0002 + t0003
    spec = book2.next_trial()
    assert (spec.number, spec.rerun, spec.params) == (1, True, {"distill.blur_ratio": 0.2})
    assert [book2.next_trial().number for _ in range(2)] == [2, 3]
    assert book2.next_trial() is None
    assert len(book2.optuna.trials) == 4  # nothing asked twice


def test_result_written_but_not_told_is_settled_on_resume(tmp_path):
    book, searcher, _ = make(tmp_path, pruner="{name: none}")
    start(searcher, "ray-a")
    payload = completed(book, 0, [60.0, 65.0])
    # simulate a kill between writing result.json and telling Optuna
    book.files.write_result(0, TrialResult.model_validate_json(payload["bkd_result"]), None)
    book2 = SweepBook(book.study, book.results_dir)
    assert book2.settle_interrupted() == [0]
    assert book2.optuna.trials[0].state == TrialState.COMPLETE
    assert book2.optuna.trials[0].value == 65.0


def test_sampled_configs_repeat_over_seeds_within_budget(tmp_path):
    loaded = load_study_text("""
name: seeds
search:
  sampler: random
  seeds: [0, 1]
  n_trials: 5
  params:
    distill.blur_ratio: {low: 0.0, high: 0.9}
  pruner: {name: none}    # without pruning, a configuration's seeds are queued at once
""")
    book = SweepBook(loaded.study, tmp_path / "seeds")
    book.open()
    specs = []
    while (spec := book.next_trial()) is not None:
        specs.append(spec)
    assert [s.seed for s in specs] == [0, 1, 0, 1, 0]
    assert specs[0].params == specs[1].params and specs[2].params == specs[3].params
    assert specs[0].params != specs[2].params
    assert len(book.optuna.trials) == 5  # no stray sibling beyond the budget


@pytest.mark.parametrize("metric,expected", [("val_top1", 75.0), ("final_top1", 70.0),
                                             ("energy_mj", 0.25), ("loss", 1.0)])
def test_objective_values(tmp_path, metric, expected):
    from bkd_sweep.engine.objectives import objective_value

    book, searcher, _ = make(tmp_path, pruner="{name: none}")
    start(searcher, "ray-a")
    result = TrialResult.model_validate_json(
        completed(book, 0, [75.0, 70.0], energy=0.25)["bkd_result"])
    assert objective_value(result, metric) == expected


def test_finished_but_unrecorded_trials_are_recorded_once_on_resume(tmp_path, fake_tracker):
    from bkd_sweep.engine.runner import _record_missing

    book, searcher, scheduler = make(tmp_path)
    a = start(searcher, "ray-a")
    b = start(searcher, "ray-b")
    for n, v in enumerate([70.0, 80.0], start=1):
        scheduler.on_trial_result(None, a, epoch(n, v))
    searcher.on_trial_complete("ray-a", result=completed(book, 0, [70.0, 80.0]))
    assert scheduler.on_trial_result(None, b, epoch(1, 75.0)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, b, epoch(2, 10.0)) == TrialScheduler.STOP
    tracker = fake_tracker  # the driver died before tracking saw either trial
    book2 = SweepBook(book.study, book.results_dir)
    assert _record_missing(book2, tracker) == ["t0000", "t0001"]
    assert tracker.records["t0000"].result.best_top1 == 80.0
    pruned = tracker.records["t0001"]
    assert pruned.result.status == "pruned" and pruned.pruned_epoch == 2
    assert [m.epoch for m in pruned.result.history] == [1, 2]  # from the epoch log
    assert _record_missing(book2, tracker) == []  # exactly once
    # MLflow was down as t0000 finished: the next session sends it again, keeping its time
    tracker.unsynced = {"t0000": "2026-01-01T00:00:00+00:00"}
    assert _record_missing(book2, tracker) == []
    assert tracker.calls[-1] == ("finish", "t0000", "2026-01-01T00:00:00+00:00")
    assert _record_missing(book2, tracker) == [] and len(tracker.finishes()) == 3
    # MLflow still down: one try, not one wait per trial it lacks
    tracker.unsynced = {"t0000": "2026-01-01T00:00:00+00:00", "t0001": "2026-01-01T00:01:00"}
    tracker.mlflow_down = True
    assert _record_missing(book2, tracker) == [] and len(tracker.finishes()) == 4


def test_the_last_epoch_is_never_pruned(tmp_path):
    book, searcher, scheduler = make(tmp_path)
    a = start(searcher, "ray-a")
    for n, v in enumerate([40.0, 60.0, 70.0, 80.0], start=1):
        scheduler.on_trial_result(None, a, epoch(n, v))
    searcher.on_trial_complete("ray-a", result={**completed(book, 0, [40.0, 60.0, 70.0, 80.0]),
                                                "done": True})
    b = start(searcher, "ray-b")
    # epochs 1-3 stay just above the median, the last (epoch 4 of 4) falls far below it
    for n, v in enumerate([41.0, 61.0, 71.0], start=1):
        assert scheduler.on_trial_result(None, b, epoch(n, v)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, b, epoch(4, 5.0)) == TrialScheduler.CONTINUE
    assert book.optuna.trials[1].state == TrialState.RUNNING
    assert book.optuna.trials[1].intermediate_values[4] == 5.0  # still reported to Optuna
    # the same value one epoch earlier is pruned
    c = start(searcher, "ray-c")
    assert scheduler.on_trial_result(None, c, epoch(1, 41.0)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, c, epoch(2, 5.0)) == TrialScheduler.STOP

# --------------------------------------------------------------------------------------
# Seeds of one configuration are one unit: Optuna is told seed means, pruning compares seed
# means at equal epochs, and "best" is the best mean, not the luckiest seed. Synthetic
# objective: seed noise (+-5) larger than the gap between configurations (1 point).
# Configuration A: seeds 95, 85, 85 (mean 88.33, luckiest seed 95); B: 91, 91, 91 (mean 91).

UNITS_STUDY = """
name: units
distill: {mode: none}
train: {epochs: 2}
search:
  sampler: grid
  seeds: [0, 1, 2]
  params:
    distill.blur_ratio: [0.0, 0.2]
  pruner: %s
"""
A, B = [95.0, 85.0, 85.0], [91.0, 91.0, 91.0]


def make_units(tmp_path, pruner="{name: none}"):
    loaded = load_study_text(UNITS_STUDY % pruner)
    book = SweepBook(loaded.study, tmp_path / "units")
    book.open()
    return book, OptunaSearcher(book), OptunaPruningScheduler(book)


def run_all(book, searcher) -> None:
    for number, value in enumerate(A + B):
        ray_id = f"ray-{number}"
        trial = start(searcher, ray_id)
        assert trial.config["trial_id"] == f"t{number:04d}"
        searcher.on_trial_complete(ray_id, result={**completed(book, number, [value]),
                                                   "done": True})


def test_optuna_is_told_seed_means_and_best_is_the_best_mean(tmp_path):
    book, searcher, _ = make_units(tmp_path)
    run_all(book, searcher)
    told = [t.value for t in book.optuna.trials]
    assert told == pytest.approx([95.0, 90.0, 265 / 3, 91.0, 91.0, 91.0])
    assert all(t.state == TrialState.COMPLETE for t in book.optuna.trials)
    best = book.best()
    assert [t.number for t in best] == [5] and best[0].value == pytest.approx(91.0)
    from bkd_sweep.engine.runner import SweepSummary, _best

    summary = SweepSummary(study="units", results_dir=tmp_path, total=6, counts=book.counts(),
                           best=_best(book), wall_seconds=1.0, resumed=False)
    assert "best t0005: val_top1=91 (mean of 3 seeds distill.blur_ratio=0.2)" in summary.render()
    assert best[0].params == book.optuna.trials[3].params  # configuration B
    # what single seeds would have picked: the luckiest seed, of the worse configuration
    own = [book.record(n).result.val_top1 for n in range(6)]
    assert own.index(max(own)) == 0 and sum(A) / 3 < sum(B) / 3
    # tracking keeps each seed's own numbers, the told mean is Optuna's alone
    assert [book.record(n).result.val_top1 for n in range(3)] == A


def test_pruning_compares_seed_means_at_equal_epochs(tmp_path):
    book, searcher, scheduler = make_units(tmp_path, "{name: median, startup_trials: 0}")
    first = start(searcher, "ray-0")
    scheduler.on_trial_result(None, first, epoch(1, 80.0))
    second = start(searcher, "ray-1")
    scheduler.on_trial_result(None, second, epoch(1, 60.0))
    # the second seed reports the mean of the configuration's seeds at epoch 1
    assert book.optuna.trials[1].intermediate_values == {1: pytest.approx(70.0)}
    assert book.optuna.trials[0].intermediate_values == {1: 80.0}
    saved = json.loads((tmp_path / "units/trials/t0001/epochs.jsonl").read_text()
                       .splitlines()[0])
    assert saved["top1"] == 60.0  # the seed's own curve is what is recorded


PROMOTION_STUDY = """
name: promo
distill: {mode: none}
train: {epochs: 3}
search:
  sampler: random
  n_trials: 4
  seeds: [0, 1]
  params:
    distill.blur_ratio: {low: 0.0, high: 0.5}
  pruner: {name: median, startup_trials: 1}
"""


def test_seed_promotion_runs_more_seeds_only_for_surviving_configurations(tmp_path):
    book = SweepBook(load_study_text(PROMOTION_STUDY).study, tmp_path / "promo")
    book.open()
    searcher, scheduler = OptunaSearcher(book), OptunaPruningScheduler(book)
    first = start(searcher, "ray-0")
    assert len(book.optuna.trials) == 1  # no sibling queued before the first seed survives
    for n in (1, 2, 3):
        scheduler.on_trial_result(None, first, epoch(n, 50.0 + 10 * n))
    searcher.on_trial_complete("ray-0", result={**completed(book, 0, [60.0, 70.0, 80.0]),
                                                "done": True})
    sibling = start(searcher, "ray-1")  # promoted: the same configuration, seed 1
    assert sibling.config["seed"] == 1 and sibling.config["params"] == first.config["params"]
    searcher.on_trial_complete("ray-1", result={**completed(book, 1, [60.0, 70.0, 80.0]),
                                                "done": True})
    weak = start(searcher, "ray-2")  # a new sampled configuration, seed 0
    assert weak.config["seed"] == 0 and weak.config["params"] != first.config["params"]
    assert scheduler.on_trial_result(None, weak, epoch(1, 10.0)) == TrialScheduler.STOP
    searcher.on_trial_complete("ray-2", result={**epoch(1, 10.0), "done": True})
    nxt = start(searcher, "ray-3")  # the pruned configuration gets no second seed
    assert nxt.config["seed"] == 0 and nxt.config["params"] != weak.config["params"]
    assert [t.user_attrs["seed"] for t in book.optuna.trials] == [0, 1, 0, 0]
