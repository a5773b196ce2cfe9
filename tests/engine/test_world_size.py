"""Resuming a sweep with another number of workers per trial would silently change the
recipe (per-worker batch, steps per epoch, LR schedule): it is refused with one line."""

from __future__ import annotations

import pytest

from bkd_sweep.config import StudyError, load_study
from bkd_sweep.engine.book import SweepBook
from bkd_sweep.preflight import check_runnable

BODY = """name: ws
tracking: {{results_dir: {root}}}
distill: {{mode: none}}
search:
  params: {{distill.blur_ratio: [0.0, 0.2]}}
resources: {{per_trial: {{cpu: 0.5, workers: {workers}}}}}  # 4 x 0.5 fits 2 CPUs
"""


def write(tmp_path, workers: int):
    path = tmp_path / "ws.yaml"
    path.write_text(BODY.format(root=tmp_path / "results", workers=workers))
    return load_study(path)


def test_resume_with_other_workers_is_refused_naming_the_field(tmp_path):
    started = write(tmp_path, 2)
    book = SweepBook(started.study, started.results_dir())  # records its world size
    book.open()
    book.next_trial()  # a trial started: this is a sweep to resume
    same = write(tmp_path, 2)
    check_runnable(same, resume=True)  # same workers: resumable
    SweepBook(same.study, same.results_dir()).open()
    other = write(tmp_path, 4)
    with pytest.raises(StudyError) as caught:
        check_runnable(other, resume=True)
    line = caught.value.one_line()
    assert line == (f"{tmp_path / 'ws.yaml'}:6: resources.per_trial.workers: workers is 4 but "
                    "the sweep started with 2: the per-worker batch and the LR schedule would "
                    "change mid-study; resume with workers: 2 (or use a new results directory)")
    with pytest.raises(StudyError, match="workers is 4 but the sweep started with 2"):
        SweepBook(other.study, other.results_dir()).open()


def test_a_start_that_failed_before_any_trial_does_not_block_the_next(tmp_path):
    """The driver made its journal, then died before the first trial (e.g. a lost working
    directory): the next plain start, even with another study version, goes ahead."""
    first = write(tmp_path, 2)
    SweepBook(first.study, first.results_dir()).open()  # journal + fingerprint, no trial
    again = write(tmp_path, 4)
    check_runnable(again, resume=False)
    book = SweepBook(again.study, again.results_dir())
    book.open()
    assert book.remaining() == 2
