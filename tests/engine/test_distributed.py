"""A 2-worker (gloo, CPU) trial: Ray Train's TorchTrainer inside the Tune trial."""

from __future__ import annotations

import json

import pytest

from bkd_sweep.engine import run_study
from bkd_sweep.config import load_study_text

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a real (shared) Ray instance

STUDY = """
name: ddp
distill: {{mode: none}}
train: {{epochs: 2}}
resources: {{per_trial: {{cpu: 1, workers: 2}}}}
tracking: {{results_dir: {results}}}
"""


def test_two_worker_trial_runs_under_torch_distributed(ray_session, tmp_path, fakes,
                                                       fake_tracker):
    loaded = load_study_text(STUDY.format(results=tmp_path))
    summary = run_study(loaded, trial_fn=fakes.ddp_trial, tracker=fake_tracker, progress=False)
    assert summary.counts["completed"] == 1, summary.render()
    record = fake_tracker.records["t0000"]
    # world 2, ranks 0 + 1 all-reduced: 2 * 10 + 1
    assert [h.top1 for h in record.result.history] == [21.0, 21.0]
    assert record.result.device == "gloo x2"
    assert fake_tracker.epochs("t0000") == [1, 2]  # rank 0's reports reached Tune
    ckpt = json.loads((tmp_path / "ddp/trials/t0000/ckpt/last.pt").read_text())
    assert ckpt == {"epoch": 2, "world": 2}
