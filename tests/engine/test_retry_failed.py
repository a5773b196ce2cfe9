"""`run --resume --retry-failed`: the sweep's failed trials run again, the others never."""

from __future__ import annotations

import pytest

from bkd_sweep.engine import run_study
from bkd_sweep.engine.book import RETRY_OF_ATTR, SweepBook
from bkd_sweep.config import load_study_text

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STUDY = """
name: flaky
teacher: {{checkpoint: train}}
train: {{epochs: 2}}
distill: {{blur_ratio: 0.0}}
search:
  sampler: grid
  params:
    distill.mode: [none, logit, bkd]
resources: {{per_trial: {{cpu: 1}}, max_concurrent: 1, max_failures: 0}}
tracking: {{results_dir: {results}}}
"""


def test_retry_failed_reruns_only_the_failed_trial(ray_session, tmp_path, fakes, fake_tracker):
    loaded = load_study_text(STUDY.format(results=tmp_path))
    marker = tmp_path / "flaky/fail_mode"
    marker.parent.mkdir()
    marker.write_text("logit")
    first = run_study(loaded, trial_fn=fakes.flaky_trial, tracker=fake_tracker, progress=False)
    assert first.counts["completed"] == 2 and first.counts["failed"] == 1
    failed = [r for r in fake_tracker.records.values() if r.result.status == "failed"]
    assert [r.params for r in failed] == [{"distill.mode": "logit"}]

    marker.unlink()
    plain = run_study(loaded, resume=True, trial_fn=fakes.flaky_trial, tracker=fake_tracker,
                      progress=False)
    assert plain.ran == [] and plain.counts["failed"] == 1  # --resume alone: FAIL is final

    again = run_study(loaded, resume=True, retry_failed=True, trial_fn=fakes.flaky_trial,
                      tracker=fake_tracker, progress=False)
    assert again.ran == ["t0003"]
    assert again.counts == {"completed": 3, "pruned": 0, "failed": 0, "running": 0,
                            "waiting": 0, "retried": 1}
    assert again.ok and again.done == again.total == 3
    book = SweepBook(loaded.study, tmp_path / "flaky")
    rerun = book.optuna.trials[3]
    number = failed[0].trial_number
    assert rerun.user_attrs[RETRY_OF_ATTR] == number
    assert rerun.params == book.optuna.trials[number].params
    assert fake_tracker.records["t0003"].result.status == "completed"
    assert fake_tracker.records["t0003"].params == {"distill.mode": "logit"}

    once_more = run_study(loaded, resume=True, retry_failed=True, trial_fn=fakes.flaky_trial,
                          tracker=fake_tracker, progress=False)
    assert once_more.ran == []  # a failed trial is retried once per failure, not again
