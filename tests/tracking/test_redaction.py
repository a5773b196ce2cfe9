"""No credential reaches MLflow params, Parquet or study.json: a data root with a
user:password URI (from ${VAR}) is stored with the password hidden."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from bkd_sweep.tracking import ResultStore, StudyTracker

SECRET = "wJalrXUtnFEMI/K7MDENG"
ROOT = f"s3://AKIAEXAMPLE:{SECRET}@127.0.0.1:9000/bucket/cifar10"


def test_credentials_are_hidden_everywhere_results_are_written(tmp_path, mlflow_db, make_study,
                                                               make_record):
    study = make_study("redact", data={"dataset": "cifar10", "root": ROOT},
                       tracking={"mlflow_uri": f"http://mlflow:{SECRET}@127.0.0.1:5000"})
    results_dir = tmp_path / "results" / study.name
    tracker = StudyTracker(study, results_dir=results_dir, study_file=None, mlflow_uri=mlflow_db)
    parent = tracker.start_sweep(resume=False)
    record = make_record(study, 0, {"distill.mode": "bkd", "student.timesteps": 2}, 0)
    for m in record.result.history:
        tracker.log_epoch(record.trial_id, record.params, m)
    tracker.finish_trial(record)
    tracker.finish_sweep()

    client = MlflowClient(mlflow_db)
    runs = client.search_runs([client.get_run(parent).info.experiment_id])
    params = {k: v for run in runs for k, v in run.data.params.items()}
    assert params["data.root"] == "s3://AKIAEXAMPLE:***@127.0.0.1:9000/bucket/cifar10"
    assert all(SECRET not in v for v in params.values())
    trials, _ = ResultStore(results_dir).read()
    assert trials.loc[0, "param.data.root"] == "s3://AKIAEXAMPLE:***@127.0.0.1:9000/bucket/cifar10"
    assert SECRET not in trials.loc[0, "config_json"]
    for name in ("study.json", "sweep.json"):
        assert SECRET not in (results_dir / name).read_text(), name
    assert json.loads((results_dir / "study.json").read_text())["data"]["root"].count("***") == 1
