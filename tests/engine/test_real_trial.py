"""The default path end to end: the real run_trial and the real tracking stage, tiny data."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from bkd_sweep.engine import run_study
from bkd_sweep.engine.book import SweepBook
from bkd_sweep.config import load_study_text

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a real (shared) Ray instance

STUDY = """
name: real_tiny
data: {{dataset: digits, batch_size: 64, limit_train: 200, limit_val: 100}}
teacher: {{arch: cnn_small, checkpoint: train, train: {{epochs: 1}}}}
student: {{arch: spiking_cnn_small, timesteps: 2}}
train: {{epochs: 2}}
energy: {{samples: 8}}
search:
  sampler: grid
  params:
    distill.mode: [none, mixed]
  objectives: [{{metric: top1, mode: max}}, {{metric: energy_mj, mode: min}}]
resources: {{per_trial: {{cpu: 1}}}}
tracking: {{results_dir: {results}}}
"""


def test_real_trials_complete_with_multi_objective_values(ray_session, tmp_path):
    loaded = load_study_text(STUDY.format(results=tmp_path / "results"))
    summary = run_study(loaded, progress=False)
    assert summary.ok and summary.counts["completed"] == 2, summary.render()
    from bkd_sweep.tracking import ResultStore
    trials, epochs = ResultStore(tmp_path / "results/real_tiny").read()
    assert sorted(trials.trial_id) == ["t0000", "t0001"]
    assert sorted(trials["param.distill.mode"]) == ["mixed", "none"]
    assert (trials.epochs_run == 2).all() and len(epochs) == 4
    book = SweepBook(loaded.study, tmp_path / "results/real_tiny")
    for frozen in book.optuna.trials:  # COMPLETE with [top1, energy_mj] as tracked
        assert frozen.state == TrialState.COMPLETE
        row = trials[trials.trial_id == f"t{frozen.number:04d}"].iloc[0]
        assert frozen.values == pytest.approx([row["metric.val_top1"], row["metric.energy_mj"]])
        assert (tmp_path / f"results/real_tiny/trials/t{frozen.number:04d}/ckpt/last.pt").exists()
