"""Fault injection on a real sweep (real run_trial, Parquet and MLflow): a trial's worker
SIGKILLed mid-epoch resumes from its checkpoint; a NaN loss fails one trial while the
others finish; no finished trial is lost and none is recorded twice."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from bkd_sweep.config import load_study_text
from bkd_sweep.engine import run_study
from bkd_sweep.engine.book import SweepBook
from bkd_sweep.results import load

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a real (shared) Ray instance

STUDY = """
name: faults
data: {{dataset: digits, batch_size: 32, limit_train: 400, limit_val: 100}}
teacher: {{arch: cnn_small, checkpoint: train, feature: features, train: {{epochs: 1}}}}
student: {{arch: spiking_cnn_small, timesteps: 2}}
train: {{epochs: 3, threads: 1}}
distill: {{beta: 1.0e-5}}
energy: {{samples: 8}}
search:
  sampler: grid
  params:
    distill.mode: [none, bkd]
    distill.beta: {{values: [1.0e-5, 1.0e+38], when: {{distill.mode: [bkd]}}}}
resources: {{per_trial: {{cpu: 1}}, max_failures: 2}}
tracking: {{results_dir: {results}}}
"""


def test_sigkilled_worker_resumes_and_nan_fails_one_trial_exactly_once(ray_session, tmp_path,
                                                                       faulty):
    loaded = load_study_text(STUDY.format(results=tmp_path / "results"), tmp_path / "f.yaml")
    summary = run_study(loaded, trial_fn=faulty.sigkill_once_mid_epoch, progress=False)
    assert summary.counts["completed"] == 2 and summary.counts["failed"] == 1, summary.render()

    results = load(tmp_path / "results" / "faults")
    trials = results.trials.set_index("trial_id")
    assert len(trials) == 3 and trials.index.is_unique
    by_config = {(r["param.distill.mode"], r["param.distill.beta"]): tid
                 for tid, r in trials.iterrows()}
    killed, nan, plain = (by_config[("bkd", 1e-5)], by_config[("bkd", 1e38)],
                          by_config[("none", 1e-5)])

    # the SIGKILLed trial was retried from its epoch-1 checkpoint, not from scratch
    ckpt = tmp_path / "results/faults/trials" / killed / "ckpt"
    assert (ckpt / "killed").exists()
    assert (ckpt / "starts.txt").read_text().split() == ["0", "1"]
    assert trials.loc[killed, "status"] == "completed"
    assert trials.loc[killed, "epochs_run"] == 3

    # the NaN trial failed with its reason; the others finished
    assert trials.loc[nan, "status"] == "failed"
    assert "non-finite loss" in trials.loc[nan, "reason"]
    assert trials.loc[plain, "status"] == "completed"

    # exactly one epoch row per (trial, epoch), whatever retries happened
    epochs = results.epochs
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert sorted(epochs[epochs.trial_id == killed].epoch) == [1, 2, 3]

    # Optuna: one trial each, in the right state
    book = SweepBook(loaded.study, tmp_path / "results/faults")
    states = {f"t{t.number:04d}": t.state for t in book.optuna.trials}
    assert states == {killed: TrialState.COMPLETE, plain: TrialState.COMPLETE,
                      nan: TrialState.FAIL}

    # MLflow: one parent, one child per trial, one top1 point per epoch run
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("faults")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3
    by_trial = {r.data.tags["trial_id"]: r for r in children}
    assert set(by_trial) == {killed, nan, plain}
    history = client.get_metric_history(by_trial[killed].info.run_id, "top1")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert by_trial[nan].data.tags["status"] == "failed"
