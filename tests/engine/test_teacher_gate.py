"""Trials that need no teacher run while the teachers are prepared; the others wait for them
(the searcher's gate over PendingTeachers), with plain values: no Ray cluster; the last two
tests check the teacher jobs (Tune trials of their own) in their order."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import patch

import pytest
from ray.tune.search import Searcher

from bkd_sweep.config import load_study_text
import bkd_sweep.engine.book as book_module
from bkd_sweep.engine.book import SweepBook
from bkd_sweep.engine.searcher import HOLD_AT_MOST, OptunaSearcher

STUDY = """
name: gate
teacher: {arch: cnn_small, checkpoint: train, feature: features}
student: {arch: spiking_cnn_small}
data: {dataset: digits}
distill: {mode: mixed}
search:
  sampler: grid
  seeds: [0, 1]
  params:
    distill.mode: [mixed, none, logit]
"""


class FakeTeachers:
    """PendingTeachers as the searcher sees it: not ready until told, or failing."""

    def __init__(self):
        self.done = False
        self.error: Exception | None = None

    def ready(self) -> bool:
        if self.error is not None:
            raise self.error
        return self.done

    def next_job(self, trial_id: str) -> None:
        return None  # every job handed out already

    def in_flight(self) -> int:
        return 0


def in_grid_order(study, trials):
    return trials


def grid_order_book(path: Path) -> SweepBook:
    """A book that hands out the grid in its written order (distilling trials first), as a
    sampled study can; a real grid runs its teacherless trials first (grid_run_order)."""
    book = SweepBook(load_study_text(STUDY).study, path)
    with patch.object(book_module, "grid_run_order", in_grid_order):
        book.open()
    return book


def gate(tmp_path: Path):
    book = grid_order_book(tmp_path / "gate")
    teachers = FakeTeachers()
    return book, OptunaSearcher(book, teachers=teachers), teachers


def mode(config: dict) -> str:
    return config["params"]["distill.mode"]


def test_none_trials_go_first_and_the_held_ones_follow_in_order(tmp_path):
    book, searcher, teachers = gate(tmp_path)
    # grid order: mixed s0, mixed s1, none s0, none s1, logit s0, logit s1
    first = [searcher.suggest(f"tune-{i}") for i in range(3)]
    assert [mode(c) for c in first[:2]] == ["none", "none"]
    assert first[2] is None  # nothing but distilling trials left: wait, do not finish
    assert [s.number for s in searcher.held] == [0, 1, 4, 5]
    assert searcher.running() == 2  # the held trials are not counted as running
    teachers.done = True
    after = [searcher.suggest(f"tune-{i}") for i in range(3, 7)]
    assert [c["number"] for c in after] == [0, 1, 4, 5]
    assert [mode(c) for c in after] == ["mixed", "mixed", "logit", "logit"]
    assert searcher.suggest("tune-7") == Searcher.FINISHED
    assert searcher.held == []


def test_at_most_hold_at_most_trials_are_asked_ahead(tmp_path):
    book, searcher, _ = gate(tmp_path)
    searcher.held = [object()] * HOLD_AT_MOST  # type: ignore[list-item]
    assert searcher.suggest("tune-0") is None
    assert book.counts()["running"] == 0  # nothing more was asked of Optuna


def test_a_failed_teacher_starts_no_trial_that_needs_it(tmp_path):
    book, searcher, teachers = gate(tmp_path)
    teachers.error = RuntimeError("teacher checkpoint unreadable")
    assert searcher.suggest("tune-0") == Searcher.FINISHED
    assert isinstance(searcher.teacher_error, RuntimeError)
    assert book.counts()["running"] == 0  # no trial asked: the sweep ends, the runner raises


def test_without_a_gate_trials_come_in_plain_order(tmp_path):
    searcher = OptunaSearcher(grid_order_book(tmp_path / "plain"))
    assert [mode(searcher.suggest(f"t{i}")) for i in range(3)] == ["mixed", "mixed", "none"]


def test_a_grid_enqueues_its_teacherless_trials_first(tmp_path):
    book = SweepBook(load_study_text(STUDY).study, tmp_path / "grid")
    book.open()
    searcher = OptunaSearcher(book, teachers=FakeTeachers())
    first = [searcher.suggest(f"tune-{i}") for i in range(2)]
    assert [(mode(c), c["number"]) for c in first] == [("none", 0), ("none", 1)]
    assert searcher.held == []  # nothing had to be held back to find them


def test_a_cached_and_evaluated_teacher_needs_no_task(tmp_path):
    from bkd_sweep.engine.teachers_first import PendingTeachers, cached_report
    from bkd_sweep.trial.teacher_cache import TeacherCache, evaluation_key

    config = load_study_text(STUDY).study.trial_config({}, 0)
    cache = TeacherCache.of(tmp_path / "cache")
    assert cached_report(config, str(tmp_path / "cache")) is None  # nothing trained yet
    weights = b"not really a checkpoint, only its bytes are hashed"
    cache.store_trained(config, weights, {"arch": "cnn_small"})
    assert cached_report(config, str(tmp_path / "cache")) is None  # trained, not evaluated
    cache.store_evaluation(evaluation_key(weights, config), {"val_top1": 91.5,
                                                             "test_top1": 90.25})
    report = cached_report(config, str(tmp_path / "cache"))
    assert report is not None
    assert (report["val_top1"], report["test_top1"], report["trained"]) == (91.5, 90.25, False)
    assert report["weights"] == cache.weights_uri(config) and report["device_seconds"] == 0.0
    # other weights under the same name: their evaluation is not that one
    cache.store_trained(config, weights + b"!", {"arch": "cnn_small"})
    assert cached_report(config, str(tmp_path / "cache")) is None

    seen = []
    pending = PendingTeachers([], 0.0, seen.append, cached=[report])
    assert pending.ready() and seen == [[report]]  # no Ray task, ready at once


def test_the_teacher_task_trains_once_with_its_own_cpus_as_threads(tmp_path):
    """The task's body, run here as Ray runs it on a worker: torch's threads become the
    task's CPUs (whatever the process had), the teacher is trained and evaluated once, and a
    second call finds both in the cache."""
    import torch

    from bkd_sweep.engine.teachers_first import cached_report, teacher_task

    small = STUDY.replace("feature: features}", "feature: features, train: {epochs: 1}}") \
        .replace("data: {dataset: digits}", "data: {dataset: digits, limit_train: 128, limit_val: 32, limit_test: 32}")
    config = load_study_text(small).study.trial_config({}, 0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        report = teacher_task(config.model_dump_json(), str(tmp_path / "cache"), 1.0, 0.0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert report["trained"] is True and report["arch"] == "cnn_small"
    assert 0.0 <= report["val_top1"] <= 100.0 and report["seconds"] > 0.0
    again = teacher_task(config.model_dump_json(), str(tmp_path / "cache"), 1.0, 0.0)
    assert again["trained"] is False and again["val_top1"] == report["val_top1"]
    cached = cached_report(config, str(tmp_path / "cache"))
    assert cached is not None and cached["test_top1"] == report["test_top1"]


FILE_TEACHER = """
name: two_data
teacher: {{arch: cnn_small, checkpoint: {checkpoint}, feature: features}}
student: {{arch: spiking_cnn_small}}
data: {{dataset: digits}}
distill: {{mode: mixed}}
search:
  sampler: grid
  params:
    data.{field}: [32, 64]
    student.timesteps: [1, 2]
"""


def test_one_teacher_task_per_evaluation_key(tmp_path):
    """A file teacher read on two data variants has two evaluation keys: two tasks, else each
    trial of the second variant evaluates the teacher itself. (Trials of one variant share.)"""
    from bkd_sweep.engine.teachers_first import distinct_teachers

    weights = tmp_path / "teacher.pt"
    weights.write_bytes(b"weights")
    study = load_study_text(FILE_TEACHER.format(checkpoint=weights, field="batch_size")).study
    planned = distinct_teachers(study)
    assert sorted(c.data.batch_size for c in planned) == [32, 64]

    from bkd_sweep.engine.teachers_first import trained_first

    assert trained_first(planned) == [None, None]  # nothing to train: both run at once


def test_a_trained_teacher_is_trained_once_then_evaluated_per_data(tmp_path):
    from bkd_sweep.engine.teachers_first import distinct_teachers

    # eval_batch_size is not part of the training key, only of the evaluation's
    study = load_study_text(FILE_TEACHER.format(checkpoint="train",
                                                field="eval_batch_size")).study
    planned = distinct_teachers(study)
    assert sorted(c.data.eval_batch_size for c in planned) == [32, 64]

    from bkd_sweep.engine.teachers_first import trained_first

    assert trained_first(planned) == [None, 0]  # the second waits for the training


def test_teacher_jobs_go_first_and_a_training_before_its_evaluations(tmp_path):
    """Two evaluation keys of one trained teacher: two jobs, the second handed out only once
    the first (which trains) reported; the searcher hands jobs out before any trial and
    counts them as running; all reports reach on_ready, with device-seconds."""
    from bkd_sweep.engine.teachers_first import pending_teachers

    study = load_study_text(FILE_TEACHER.format(checkpoint="train",
                                                field="eval_batch_size")).study
    seen = []
    teachers = pending_teachers(study, str(tmp_path / "cache"), seen.append)
    assert [job.after for job in teachers.jobs] == [None, 0]
    book = SweepBook(study, tmp_path / "jobs")
    book.open()
    searcher = OptunaSearcher(book, capacity=lambda: 2, teachers=teachers)
    assert searcher.suggest("tune-0") == {"trial_id": "teacher0", "bkd_teacher": 0}
    assert searcher.running() == 1 and teachers.owns("tune-0")
    assert searcher.suggest("tune-1") is None  # job 1 waits for job 0's training; the
    assert teachers.next_job("tune-x") is None  # trials (all distilling) are held
    report = {"arch": "cnn_small", "trained": True, "seconds": 2.0, "val_top1": 90.0,
              "test_top1": 89.0}
    teachers.finished("tune-0", report)
    assert not teachers.ready() and searcher.suggest("tune-2")["bkd_teacher"] == 1
    teachers.finished("tune-2", {**report, "trained": False, "seconds": 0.5})
    assert teachers.ready() and [r["device_seconds"] for r in seen[0]] == [2.0, 0.5]
    assert searcher.suggest("tune-3")["number"] == 0  # now the held trials


def test_a_teacher_job_that_failed_is_raised_and_starts_nothing_after_it(tmp_path):
    from bkd_sweep.engine.teachers_first import TeacherFailed, pending_teachers

    study = load_study_text(FILE_TEACHER.format(checkpoint="train",
                                                field="eval_batch_size")).study
    teachers = pending_teachers(study, str(tmp_path / "cache"))
    assert teachers.next_job("tune-0") == 0
    teachers.finished("tune-0", None, "data root /gone does not exist")
    assert teachers.next_job("tune-1") is None
    with pytest.raises(TeacherFailed, match="cnn_small could not be prepared: data root"):
        teachers.wait()


@pytest.mark.ray
def test_a_multi_worker_trial_prepares_its_teacher_as_a_task_on_one_ranks_resources(
        ray_session, tmp_path):
    """A trial that only drives Train workers holds no CPU: its teacher job runs as a Ray
    task asking one rank's CPUs (here), and reports as the inline one does."""
    import ray

    from bkd_sweep.engine.worker import WorkerSetup, prepare_teacher

    small = STUDY.replace("feature: features}", "feature: features, train: {epochs: 1}}") \
        .replace("data: {dataset: digits}",
                 "data: {dataset: digits, limit_train: 64, limit_val: 32, limit_test: 32}")
    study = load_study_text(small).study
    setup = WorkerSetup(results_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), cpu=1.0,
                        gpu=0.0, workers=2, cwd=str(tmp_path), train_storage=str(tmp_path),
                        study=study)
    here = ray.get_runtime_context().get_node_id()
    report = prepare_teacher(setup, study.trial_config({}, 0).model_dump_json(), [here])
    assert report["trained"] is True and report["arch"] == "cnn_small"
    assert len(list((tmp_path / "cache/teachers").glob("*.pt"))) == 1


BAD_TEACHER = """
name: bad_teacher
teacher: {{arch: cnn_small, checkpoint: {checkpoint}, feature: features}}
student: {{arch: spiking_cnn_small, timesteps: 1}}
data: {{dataset: digits, limit_train: 64, limit_val: 32, limit_test: 32}}
train: {{epochs: 1}}
distill: {{mode: mixed}}
energy: {{samples: 4}}
search: {{sampler: grid, params: {{distill.mode: [none, mixed]}}}}
resources: {{per_trial: {{cpu: 1}}, max_failures: 0}}
tracking: {{results_dir: {results}}}
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_teacher_that_cannot_be_prepared_is_one_line_and_its_trials_wait(
        ray_session, tmp_path, fake_tracker, capsys):
    """A teacher checkpoint that is no checkpoint: its job's trial fails, the trial that
    needs no teacher still runs, the distilling one never starts (left for --resume), and
    the cause is one line on stderr, not a traceback."""
    from bkd_sweep.engine import run_study

    junk = tmp_path / "teacher.pt"
    junk.write_bytes(b"not a torch checkpoint")
    loaded = load_study_text(BAD_TEACHER.format(checkpoint=junk, results=tmp_path / "r"))
    summary = run_study(loaded, tracker=fake_tracker, progress=False)
    assert summary.counts["completed"] == 1 and not summary.ok
    assert [r.result.config["distill"]["mode"] for r in fake_tracker.records.values()] == \
        ["none"]
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("error: teacher cnn_small could not be prepared: ")]
    assert len(errors) == 1 and "Traceback" not in errors[0], errors
