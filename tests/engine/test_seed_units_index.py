"""SeedUnits keeps an index of configurations: the answers equal a full scan of the study,
and the cost of an epoch report does not grow with the study (each trial's configuration key
is computed once, however many epochs are reported or times "best" is asked)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from ray.tune.schedulers import TrialScheduler

from bkd_sweep.config import load_study_text
from bkd_sweep.engine import seed_units
from bkd_sweep.engine.book import SEED_ATTR, SweepBook
from bkd_sweep.engine.journal import open_study
from bkd_sweep.engine.scheduler import OptunaPruningScheduler
from bkd_sweep.engine.searcher import OptunaSearcher
from bkd_sweep.engine.worker import epoch_payload, final_payload
from bkd_sweep.records import EpochMetrics, TrialResult

STUDY = """
name: index
distill: {mode: none}
train: {epochs: 12}
search:
  sampler: random
  n_trials: 600
  seeds: [0, 1, 2]
  params:
    distill.blur_ratio: {low: 0.0, high: 0.5}
  pruner: {name: median, startup_trials: 0}
"""


def make(tmp_path):
    book = SweepBook(load_study_text(STUDY).study, tmp_path / "index")
    book.open()
    return book, OptunaSearcher(book), OptunaPruningScheduler(book)


def start(searcher, ray_id: str) -> SimpleNamespace:
    config = searcher.suggest(ray_id)
    assert isinstance(config, dict)
    return SimpleNamespace(trial_id=ray_id, config=config)


def epoch(n: int, top1: float) -> dict:
    return epoch_payload(EpochMetrics(epoch=n, top1=top1, top5=top1, val_loss=1.0, loss=1.0,
                                      lr=0.1, wall_seconds=1.0))


def finish(book, searcher, ray_id: str, number: int, top1s: list[float]) -> None:
    spec = book.live.spec(number)
    history = [EpochMetrics(epoch=i + 1, top1=v, top5=v, val_loss=1.0, loss=1.0, lr=0.1,
                            wall_seconds=1.0) for i, v in enumerate(top1s)]
    result = TrialResult.from_history("completed", history,
                                      config=spec.config.model_dump(mode="json"),
                                      config_hash=spec.config.config_hash(), wall_seconds=1.0,
                                      devices=1, device="cpu")
    searcher.on_trial_complete(ray_id, result={**final_payload(result), "done": True})


def scan_siblings(book, number: int) -> list[int]:
    """What a full scan of the study says (the behaviour the index must keep)."""
    trials = book.optuna.get_trials(deepcopy=False)
    key = json.dumps(trials[number].params, sort_keys=True, default=str)
    return [t.number for t in trials if t.number != number
            and json.dumps(t.params, sort_keys=True, default=str) == key]


def scan_best(book):
    """The last-completed seed of the configuration with the best told mean, by a scan."""
    latest = {}
    for trial in book.optuna.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = json.dumps(trial.params, sort_keys=True, default=str)
        if key not in latest or trial.datetime_complete >= latest[key].datetime_complete:
            latest[key] = trial
    return max(latest.values(), key=lambda t: (t.value, -t.number))


def add_finished(book, count: int, distributions) -> None:
    """``count`` completed single-seed configurations, added straight to the Optuna study."""
    book.optuna.add_trials([
        create_trial(params={"distill.blur_ratio": 0.4 * i / count},
                     distributions=distributions, value=50.0 + i % 7,
                     user_attrs={SEED_ATTR: 0}) for i in range(count)])


@pytest.fixture
def counted(monkeypatch):
    """Counts the trials whose configuration key is computed."""
    calls = {"n": 0}
    real = seed_units.unit_key

    def counting(trial):
        calls["n"] += 1
        return real(trial)

    monkeypatch.setattr(seed_units, "unit_key", counting)
    return calls


@pytest.mark.parametrize("finished", [10, 400])
def test_an_epoch_report_touches_the_same_trials_at_10_and_at_400(tmp_path, counted, finished):
    book, searcher, scheduler = make(tmp_path)
    live = start(searcher, "ray-0")
    add_finished(book, finished, book.optuna.trials[0].distributions)
    scheduler.on_trial_result(None, live, epoch(1, 60.0))  # the index catches up once
    assert counted["n"] <= finished + 1
    before, read = counted["n"], book.units.trials_read
    for n in range(2, 12):
        scheduler.on_trial_result(None, live, epoch(n, 60.0 + n))
        book.best()
    assert counted["n"] == before  # ten more epochs and "best" asked ten times: no trial again
    # each look reads the running trial and probes for a new one: the same at 10 and 400
    assert book.units.trials_read - read <= 10 * 2 * 2
    nxt = start(searcher, "ray-1")  # a new trial: its own key only
    scheduler.on_trial_result(None, nxt, epoch(1, 70.0))
    assert counted["n"] == before + 1


def test_the_index_answers_what_a_full_scan_answers(tmp_path):
    book, searcher, scheduler = make(tmp_path)
    for step in range(24):
        ray_id = f"ray-{step}"
        trial = start(searcher, ray_id)
        number = trial.config["number"]
        value = 40.0 + (number * 37) % 50
        stopped = False
        for n in (1, 2, 3):
            decision = scheduler.on_trial_result(None, trial, epoch(n, value + n))
            if decision != TrialScheduler.CONTINUE:
                stopped = True
                break
        if not stopped:
            finish(book, searcher, ray_id, number, [value + 1, value + 2, value + 3])
        for other in range(len(book.optuna.trials)):
            if book.optuna.trials[other].state != TrialState.WAITING:
                assert book.units.siblings(other) == scan_siblings(book, other)
    seeds = [t.user_attrs[SEED_ATTR] for t in book.optuna.trials]
    assert 1 in seeds  # some configuration was promoted to more seeds (waiting -> asked)
    assert [t.number for t in book.best()] == [scan_best(book).number]


def test_a_study_started_afresh_is_indexed_afresh(tmp_path):
    book, searcher, _ = make(tmp_path)
    start(searcher, "ray-0")
    assert book.units.siblings(0) == []
    optuna.delete_study(study_name=book.study.name, storage=book.storage)
    book.optuna = open_study(book.study, book.storage)
    assert book.units.siblings(0) == [] and book.best() == []
