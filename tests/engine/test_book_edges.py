"""SweepBook edge cases (driver side, no Ray): a missing objective fails everywhere, a retried
first seed still promotes its configuration, a seed run twice counts once in a mean, and a
resumed driver counts a settled trial's spend once."""

from __future__ import annotations

from optuna.trial import TrialState

from bkd_sweep.config import load_study_text
from bkd_sweep.engine.book import SweepBook

SAMPLED = """
name: edges
distill: {{mode: none}}
train: {{epochs: 2}}
search:
  sampler: random
  n_trials: 9
  seeds: [0, 1, 2]
  params:
    distill.blur_ratio: {{values: [0.1, 0.2]}}
  pruner: {pruner}
  objectives: [{objectives}]
  {budget}
tracking: {{results_dir: {results}}}
"""


MEDIAN = "{name: median, startup_trials: 0}"


def _book(tmp_path, objectives="{metric: top1}", budget="", pruner=MEDIAN):
    study = load_study_text(SAMPLED.format(objectives=objectives, budget=budget, pruner=pruner,
                                           results=tmp_path)).study
    book = SweepBook(study, tmp_path / "edges")
    book.open()
    return book


def _result(fakes, spec, **changes):
    return fakes.curve_trial(spec.config, epoch_seconds=0).model_copy(update=changes)


def test_a_missing_objective_is_a_failed_trial_everywhere(tmp_path, fakes):
    book = _book(tmp_path, objectives="{metric: energy_mj, mode: min}")
    spec = book.next_trial()
    assert book.complete(spec.number, _result(fakes, spec, energy=None)) == TrialState.FAIL
    record = book.record(spec.number)
    assert record.result.status == "failed"  # Parquet, MLflow and --retry-failed agree
    assert record.result.reason == "no finite value for objective energy_mj"
    assert book.retry_failed() == [spec.number]


def test_a_retried_first_seed_still_promotes_its_configuration(tmp_path, fakes):
    book = _book(tmp_path)
    first = book.next_trial()
    assert first.seed == 0
    book.fail(first.number, "RuntimeError: CUDA out of memory")
    assert book.retry_failed() == [first.number]
    rerun = book.next_trial()
    assert (rerun.params, rerun.seed) == (first.params, 0)
    book.complete(rerun.number, _result(fakes, rerun))
    queued = [book.next_trial() for _ in range(2)]
    assert [(s.params, s.seed) for s in queued] == [(first.params, 1), (first.params, 2)]


def test_a_seed_run_twice_counts_once_in_the_told_mean(tmp_path, fakes):
    book = _book(tmp_path)
    first = book.next_trial()
    book.complete(first.number, _result(fakes, first, val_top1=80.0))
    seeds = {book.next_trial().seed: None for _ in range(2)}
    assert set(seeds) == {1, 2}
    # the same configuration and seed once more (a sampler that drew it twice)
    book.optuna.enqueue_trial(book._trial(first.number).params, user_attrs={"seed": 0})
    again = book.next_trial()
    assert (again.params, again.seed) == (first.params, 0)
    book.complete(again.number, _result(fakes, again, val_top1=90.0))
    # told: the mean over seeds with a result (seed 0 once: this run), not (80 + 90) / 2
    assert book._trial(again.number).values == [90.0]


def test_a_resumed_driver_counts_a_settled_trial_once(tmp_path, fakes):
    book = _book(tmp_path, budget="budget: {device_hours: 10}")
    spec = book.next_trial()
    result = _result(fakes, spec, device_seconds=3600.0)
    book.files.write_result(spec.number, result, None, params=spec.params, seed=spec.seed)
    # the driver died after writing result.json, before telling Optuna
    resumed = SweepBook(book.study, tmp_path / "edges")
    assert resumed.settle_interrupted() == [spec.number]
    resumed.open()
    assert resumed.budget.tally.finished == 1
    assert resumed.budget.tally.device_seconds == 3600.0


def test_the_multi_objective_front_holds_configurations_at_their_seed_means(tmp_path, fakes):
    book = _book(tmp_path, objectives="{metric: top1}, {metric: energy_mj, mode: min}",
                 pruner="{name: none}")  # unpruned: a configuration's seeds queued at once
    specs = [book.next_trial() for _ in range(3)]
    assert [s.seed for s in specs] == [0, 1, 2] and len({str(s.params) for s in specs}) == 1
    for spec, val in zip(specs, (90.0, 70.0, 70.0)):
        book.complete(spec.number, _result(fakes, spec, val_top1=val))
    (best,) = book.best()  # one configuration: its last seed, told the mean of three
    assert best.number == specs[2].number
    assert best.values[0] == (90.0 + 70.0 + 70.0) / 3


def test_trials_held_for_a_teacher_do_not_spend_the_budget(tmp_path, fakes):
    from types import SimpleNamespace

    from bkd_sweep.engine.searcher import OptunaSearcher

    text = SAMPLED.format(objectives="{metric: top1}", budget="budget: {device_hours: 1}",
                          pruner=MEDIAN, results=tmp_path).replace(
        "distill: {mode: none}", "distill: {mode: bkd}\nteacher: {checkpoint: train}")
    book = SweepBook(load_study_text(text).study, tmp_path / "edges")
    book.open()
    teachers = SimpleNamespace(ready=lambda: teachers.done, done=False,
                               next_job=lambda trial_id: None, in_flight=lambda: 0)
    searcher = OptunaSearcher(book, teachers=teachers)
    assert searcher.suggest("ray-0") is None and len(searcher.held) == 9  # all of them
    assert book.budget.tally.running_since == {}  # asked ahead, not started
    first = searcher.held[0].number
    teachers.done = True
    assert isinstance(searcher.suggest("ray-0"), dict)
    assert list(book.budget.tally.running_since) == [first]


def test_a_promotion_lost_to_a_crash_is_made_on_resume(tmp_path, fakes, monkeypatch):
    book = _book(tmp_path)
    first = book.next_trial()
    monkeypatch.setattr(SweepBook, "_promote", lambda self, number: None)  # dies right after
    book.complete(first.number, _result(fakes, first))
    monkeypatch.undo()
    resumed = SweepBook(book.study, tmp_path / "edges")
    resumed.open()
    queued = [resumed.next_trial() for _ in range(2)]
    assert [(s.params, s.seed) for s in queued] == [(first.params, 1), (first.params, 2)]


def test_hundreds_of_invalid_combinations_in_a_row_fail_one_by_one(tmp_path, monkeypatch):
    """The schema can reject a combination only when it is built (cross-field checks): each
    fails at once, and the next is taken in a loop, not by recursion."""
    from bkd_sweep.config import Study, StudyError

    text = f"""
name: invalid
distill: {{mode: none}}
search:
  sampler: grid
  seeds: {list(range(25))}
  params: {{distill.blur_ratio: {[round(0.01 * i, 2) for i in range(30)]}}}
tracking: {{results_dir: {tmp_path}}}
"""
    book = SweepBook(load_study_text(text).study, tmp_path / "invalid")
    book.open()
    real, calls = Study.trial_config, {"n": 0}

    def rejecting(self, params, seed):
        calls["n"] += 1
        if calls["n"] <= 600:
            raise StudyError("teacher.mean and teacher.std go together")
        return real(self, params, seed)

    monkeypatch.setattr(Study, "trial_config", rejecting)
    spec = book.next_trial()
    assert spec is not None and spec.number == 600
    assert book.counts()["failed"] == 600


def test_a_configuration_drawn_again_runs_its_next_seed(tmp_path, fakes):
    """A sampler that draws a configuration it already has gets that configuration's next
    seed, not a second run of one it has; promotion then queues only the seeds still missing."""
    text = SAMPLED.format(objectives="{metric: top1}", budget="", pruner=MEDIAN,
                          results=tmp_path).replace("[0.1, 0.2]", "[0.1]").replace(
        "n_trials: 9", "n_trials: 4")  # one configuration: every draw is the same
    book = SweepBook(load_study_text(text).study, tmp_path / "edges")
    book.open()
    first, again = book.next_trial(), book.next_trial()
    assert (first.seed, again.seed) == (0, 1) and first.params == again.params
    book.complete(first.number, _result(fakes, first))  # promotes: only seed 2 is missing
    rest = [book.next_trial(), book.next_trial()]
    assert [s.seed for s in rest] == [2, 0]  # then all seeds are taken: seed 0 once more
    assert book.next_trial() is None


def test_credentials_in_a_result_never_reach_its_file(tmp_path, fakes):
    """A data root or an error message may carry a URI password: result.json (what Parquet,
    MLflow and --rebuild read) holds neither."""
    book = _book(tmp_path)
    secret = "s3://AKIAEX:wJalrXUtn@minio:9000/data"
    spec = book.next_trial()
    config = {**spec.config.model_dump(mode="json"), "data": {"root": secret}}
    book.complete(spec.number, _result(fakes, spec, config=config))
    failed = book.next_trial()
    book.fail(failed.number, f"DataError: data root {secret.replace('//', '/')} does not exist")
    files = sorted((tmp_path / "edges" / "trials").glob("*/result.json"))
    assert len(files) == 2 and not any("wJalrXUtn" in f.read_text() for f in files)
    assert book.record(spec.number).result.config["data"]["root"] == \
        "s3://AKIAEX:***@minio:9000/data"
    assert book.record(failed.number).result.reason == \
        "DataError: data root s3:/AKIAEX:***@minio:9000/data does not exist"
