"""search.budget: no new trial once the projected spend passes a limit (driver-side, no Ray)."""

from __future__ import annotations

import time

import pytest

from bkd_sweep.config import StudyError, load_study_text
from bkd_sweep.engine.book import SweepBook
from bkd_sweep.engine.budget import SweepBudget
from bkd_sweep.engine.journal import study_fingerprint

STUDY = """
name: budgeted
teacher: {{checkpoint: train}}
train: {{epochs: 2}}
distill: {{blur_ratio: 0.0}}
search:
  sampler: grid
  params: {{distill.mode: [none, logit, bkd, mixed]}}
  budget: {{device_hours: {hours}}}
resources: {{per_trial: {{cpu: 1}}}}
tracking: {{results_dir: {results}}}
"""


def _finish(book: SweepBook, fakes, device_hours: float) -> None:
    spec = book.next_trial()
    result = fakes.curve_trial(spec.config, epoch_seconds=0)
    book.complete(spec.number, result.model_copy(update={"device_seconds": device_hours * 3600}))


def test_device_budget_stops_new_trials_once_one_more_would_pass_it(tmp_path, fakes):
    loaded = load_study_text(STUDY.format(hours=1.0, results=tmp_path))
    book = SweepBook(loaded.study, tmp_path / "budgeted")
    book.open()
    _finish(book, fakes, 0.4)  # spent 0.4, projected 0.4 + 0.4 = 0.8 <= 1.0: go on
    assert book.budget.stop_reason() is None
    _finish(book, fakes, 0.4)  # spent 0.8, projected 0.8 + 0.4 = 1.2 > 1.0: stop
    assert book.next_trial() is None
    assert book.budget.stopped_by == ("search.budget.device_hours: 1 "
                                      "(projected 1.2 with one more trial)")
    assert book.counts()["completed"] == 2 and book.remaining() == 2

    # a resumed sweep counts what earlier sessions spent (from result.json), and a raised
    # budget is the same study (the fingerprint leaves the budget out)
    raised = load_study_text(STUDY.format(hours=2.0, results=tmp_path))
    assert study_fingerprint(raised.study) == study_fingerprint(loaded.study)
    again = SweepBook(raised.study, tmp_path / "budgeted")
    again.open()
    assert again.budget.tally.device_seconds == pytest.approx(0.8 * 3600)
    assert again.next_trial() is not None  # 0.8 + 0.4 = 1.2 <= 2.0


def test_running_trials_count_toward_the_projection(tmp_path):
    loaded = load_study_text(STUDY.format(hours=0.5, results=tmp_path))
    budget = SweepBudget(loaded.study, started_at=time.time(), devices_per_trial=2.0)
    budget.trial_finished(0, device_seconds=900, wall_seconds=450)  # 0.25 h
    budget.tally.running_since[1] = time.monotonic() - 450  # 450 s x 2 devices = 0.25 h
    assert budget.projected_device_hours() == pytest.approx(0.75, abs=0.01)
    assert budget.stop_reason().startswith("search.budget.device_hours: 0.5")


def test_wall_budget_counts_from_the_first_start(tmp_path):
    loaded = load_study_text(STUDY.format(hours=100, results=tmp_path).replace(
        "device_hours: 100", "wall_hours: 1"))
    budget = SweepBudget(loaded.study, started_at=time.time() - 3000, devices_per_trial=1.0)
    assert budget.stop_reason() is None  # 50 min in, no trial finished: no estimate yet
    budget.trial_finished(0, device_seconds=700, wall_seconds=700)
    assert budget.stop_reason().startswith("search.budget.wall_hours: 1 (projected 1.03")


def test_a_budget_must_be_positive(tmp_path):
    with pytest.raises(StudyError, match="device_hours"):
        load_study_text(STUDY.format(hours=0, results=tmp_path))
