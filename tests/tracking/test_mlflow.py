"""StudyTracker against a real MLflow SQLite store: experiment, parent, nested children,
per-epoch curves, resume/retry without duplicates, tags, artifacts, Parquet beside it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bkd_sweep.config import load_study_text
from bkd_sweep.tracking import ResultStore, StudyTracker, resolve_tracking_uri


def _children(client: MlflowClient, experiment_id: str, parent: str):
    return client.search_runs([experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, path)}


def _run_trial(tracker: StudyTracker, record, epochs=None) -> None:
    for m in record.result.history[:epochs]:
        tracker.log_epoch(record.trial_id, record.params, m)
    tracker.finish_trial(record)


@pytest.mark.slow
def test_sweep_makes_one_parent_and_a_nested_child_per_trial(
        tmp_path, mlflow_db, make_study, grid_records, epoch_top1):
    study = make_study("sweep_basic", description="tracking test")
    results_dir = tmp_path / "results" / study.name
    study_file = tmp_path / "s.yaml"
    # a file `submit` staged: its ${VARS} filled in, a password among them
    study_file.write_text("name: sweep_basic\ntracking: {mlflow_uri: http://bob:hunter2@h}\n")
    tracker = StudyTracker(study, results_dir=results_dir, study_file=study_file,
                           mlflow_uri=mlflow_db)
    parent = tracker.start_sweep(resume=False)
    records = grid_records(study)[:4]
    for rec in records:
        _run_trial(tracker, rec)
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("<html></html>")
    tracker.store.compact()  # the sweep's end: snapshots for the parent's results/ artifacts
    tracker.finish_sweep()
    # `bkd-sweep report` runs later in another process: the parent comes from sweep.json
    StudyTracker(study, results_dir=results_dir, study_file=None,
                 mlflow_uri=mlflow_db).log_report(report)

    client = MlflowClient(mlflow_db)
    experiments = [e for e in client.search_experiments() if e.name == study.name]
    assert len(experiments) == 1
    exp_id = experiments[0].experiment_id
    runs = client.search_runs([exp_id])
    assert len(runs) == 1 + len(records)
    top = client.get_run(parent)
    assert top.info.status == "FINISHED" and top.data.tags["bkd_sweep.role"] == "sweep"
    assert "mlflow.parentRunId" not in top.data.tags
    assert json.loads(top.data.params["search.seeds"]) == [0, 1]
    assert _artifacts(client, parent, "study") == {"study/s.yaml", "study/study.json"}
    logged = Path(client.download_artifacts(parent, "study/s.yaml", str(tmp_path)))
    assert logged.read_text() == "name: sweep_basic\ntracking: {mlflow_uri: http://bob:***@h}\n"
    assert _artifacts(client, parent, "results") == {"results/trials.parquet",
                                                     "results/epochs.parquet"}
    assert _artifacts(client, parent, "report") == {"report/index.html"}

    children = {r.data.tags["trial_id"]: r for r in _children(client, exp_id, parent)}
    assert set(children) == {r.trial_id for r in records}
    for rec in records:
        child = children[rec.trial_id]
        run_id = child.info.run_id
        history = client.get_metric_history(run_id, "top1")
        assert sorted((m.step, m.value) for m in history) == [
            (e, pytest.approx(epoch_top1(rec.trial_number, e))) for e in (1, 2, 3)]
        assert len(client.get_metric_history(run_id, "loss.task")) == 3
        tags = child.data.tags
        assert tags["status"] == "completed" and tags["mode"] == rec.params["distill.mode"]
        assert tags["T"] == str(rec.params["student.timesteps"])
        assert tags["arch"] == "spiking_cnn_small" and tags["seed"] == str(rec.seed)
        assert tags["config_hash"] == rec.result.config_hash and "reason" not in tags
        assert child.info.status == "FINISHED"
        params = child.data.params
        assert params["distill.mode"] == rec.params["distill.mode"]
        assert params["train.epochs"] == "3" and params["data.root"] == "None"
        assert len(params) == len(study.base_config().flat())
        metrics = child.data.metrics
        assert metrics["val_top1"] == pytest.approx(rec.result.val_top1)
        assert metrics["test_top1"] == pytest.approx(rec.result.test_top1)
        assert metrics["final_top1"] == pytest.approx(rec.result.final_top1)
        assert metrics["energy_mj"] == pytest.approx(rec.result.energy_mj)
        assert metrics["sops"] == 1e6 and metrics["firing_rate"] == pytest.approx(0.12)
        assert _artifacts(client, run_id) == {"config.json", "result.json"}
    # Parquet beside MLflow, linked by run id; study.json and sweep.json written
    trials, epochs = ResultStore(results_dir).read()
    assert dict(zip(trials["trial_id"], trials["mlflow_run_id"])) == {
        k: r.info.run_id for k, r in children.items()}
    assert len(epochs) == 12
    assert json.loads((results_dir / "sweep.json").read_text())["parent_run_id"] == parent
    assert json.loads((results_dir / "study.json").read_text())["name"] == study.name
    # artifacts of a local store live beside the database, not under the current directory
    db_dir = Path(mlflow_db.removeprefix("sqlite:///")).parent
    assert (db_dir / "mlartifacts" / study.name).is_dir()


def test_resume_and_retry_reuse_parent_and_children(tmp_path, mlflow_db, make_study,
                                                    make_record, epoch_top1):
    study = make_study("sweep_resume")
    results_dir = tmp_path / "results" / study.name
    p0 = {"distill.mode": "bkd", "student.timesteps": 4}
    p1 = {"distill.mode": "none", "student.timesteps": 2}
    first = StudyTracker(study, results_dir=results_dir, study_file=None, mlflow_uri=mlflow_db)
    parent = first.start_sweep(resume=False)
    done = make_record(study, 1, p1, 0)
    _run_trial(first, done)
    crashed = make_record(study, 0, p0, 0)
    for m in crashed.result.history[:2]:  # the driver dies after epoch 2 of t0000
        first.log_epoch(crashed.trial_id, crashed.params, m)

    # a new driver process resumes the sweep
    second = StudyTracker(study, results_dir=results_dir, study_file=None,
                          mlflow_uri=mlflow_db)
    assert second.start_sweep(resume=True) == parent
    client = MlflowClient(mlflow_db)
    assert client.get_run(parent).info.status == "RUNNING"
    # the retried trial reports epochs 1-3 again: 1 and 2 are not logged twice
    failed = make_record(study, 0, p0, 0, status="failed")
    _run_trial(second, failed)
    retried = make_record(study, 0, p0, 0)
    _run_trial(second, retried)
    second.finish_trial(done)  # a replayed finish of an already finished trial
    second.finish_sweep()

    exp_id = client.get_experiment_by_name(study.name).experiment_id
    assert len(client.search_runs([exp_id])) == 3  # one parent, two children, no duplicates
    children = {r.data.tags["trial_id"]: r for r in _children(client, exp_id, parent)}
    assert set(children) == {"t0000", "t0001"}
    run0 = children["t0000"]
    steps = [m.step for m in client.get_metric_history(run0.info.run_id, "top1")]
    assert sorted(steps) == [1, 2, 3]
    assert len(client.get_metric_history(run0.info.run_id, "val_top1")) == 1
    assert len(client.get_metric_history(children["t0001"].info.run_id, "val_top1")) == 1
    assert run0.data.tags["status"] == "completed" and "reason" not in run0.data.tags
    assert run0.info.status == "FINISHED"
    trials, epochs = ResultStore(results_dir).read()
    assert sorted(trials["trial_id"]) == ["t0000", "t0001"] and len(epochs) == 6
    assert client.get_run(parent).info.status == "FINISHED"

    # a fresh (non-resume) sweep opens a new parent run in the same experiment
    third = StudyTracker(study, results_dir=results_dir, study_file=None, mlflow_uri=mlflow_db)
    assert third.start_sweep(resume=False) != parent


def test_epochs_not_logged_live_are_backfilled_at_finish(tmp_path, mlflow_db, make_study,
                                                         make_record):
    study = make_study("sweep_backfill")
    tracker = StudyTracker(study, results_dir=tmp_path / study.name, study_file=None,
                           mlflow_uri=mlflow_db)
    tracker.start_sweep(resume=False)
    rec = make_record(study, 0, {"distill.mode": "bkd"}, 0, status="pruned", pruned_epoch=3)
    tracker.log_epoch(rec.trial_id, rec.params, rec.result.history[0])
    tracker.finish_trial(rec)
    client = MlflowClient(mlflow_db)
    run = client.search_runs([tracker.experiment_id], filter_string="tags.trial_id = 't0000'")
    assert len(run) == 1
    assert sorted(m.step for m in client.get_metric_history(run[0].info.run_id, "top1")) == [
        1, 2, 3]
    assert run[0].info.status == "KILLED"
    assert run[0].data.tags["pruned_epoch"] == "3"
    assert run[0].data.tags["reason"] == "pruned by test"


def test_live_epochs_fill_a_result_without_history(tmp_path, mlflow_db, make_study,
                                                   make_record):
    """A trial that failed after 2 reported epochs, whose result carries no history."""
    study = make_study("sweep_failed")
    tracker = StudyTracker(study, results_dir=tmp_path / study.name, study_file=None,
                           mlflow_uri=mlflow_db)
    tracker.start_sweep(resume=False)
    rec = make_record(study, 0, {"distill.mode": "none"}, 0, status="failed")
    for m in rec.result.history[:2]:
        tracker.log_epoch(rec.trial_id, rec.params, m)
    rec.result = rec.result.model_copy(update={"history": []})
    tracker.finish_trial(rec)
    _, epochs = tracker.store.read()
    assert list(epochs["epoch"]) == [1, 2]


def _failing_tracker(tmp_path, mlflow_db, study, monkeypatch, call: str,
                     error: Exception) -> StudyTracker:
    """A started tracker whose MLflow client raises ``error`` on ``call``."""
    tracker = StudyTracker(study, results_dir=tmp_path / study.name, study_file=None,
                           mlflow_uri=mlflow_db)
    tracker.start_sweep(resume=False)

    def down(*args, **kwargs):
        raise error

    monkeypatch.setattr(tracker.client, call, down)
    return tracker


def test_mlflow_failure_keeps_the_parquet_record(tmp_path, mlflow_db, make_study, make_record,
                                                 monkeypatch, caplog):
    study = make_study("sweep_mlflow_down")
    tracker = _failing_tracker(tmp_path, mlflow_db, study, monkeypatch, "log_batch",
                               ConnectionError("tracking server unreachable"))
    rec = make_record(study, 0, {"distill.mode": "none"}, 0)
    with caplog.at_level(logging.WARNING):
        _run_trial(tracker, rec)
    assert sum("tracking server unreachable" in r.message for r in caplog.records) == 1
    trials, epochs = tracker.store.read()
    assert list(trials["trial_id"]) == ["t0000"] and len(epochs) == 3
    # no run id: the run was never completed, so the next session sends the trial again
    finished_at = trials["finished_at"].iloc[0]
    assert pd.isna(trials["mlflow_run_id"].iloc[0])
    assert tracker.unsynced_trials() == {"t0000": finished_at.to_pydatetime()}
    monkeypatch.undo()  # MLflow is back
    again = StudyTracker(study, results_dir=tmp_path / study.name, study_file=None,
                         mlflow_uri=mlflow_db)
    again.start_sweep(resume=True)
    again.finish_trial(rec, finished_at=again.unsynced_trials()["t0000"])
    trials, _ = again.store.read()
    assert trials["finished_at"].iloc[0] == finished_at and again.unsynced_trials() == {}
    client = MlflowClient(mlflow_db)
    [child] = client.search_runs([client.get_experiment_by_name(study.name).experiment_id],
                                 "tags.trial_id = 't0000'")
    assert child.info.run_id == trials["mlflow_run_id"].iloc[0]  # the same run, completed
    assert child.info.status == "FINISHED" and "test_top1" in child.data.metrics


def test_tracking_uri_precedence(tmp_path, make_study, make_record, monkeypatch):
    study = make_study("uri")
    results_dir = tmp_path / "res" / "uri"
    default = f"sqlite:///{tmp_path}/res/mlflow.db"
    assert default.startswith("sqlite:////")
    assert resolve_tracking_uri(study, results_dir) == default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(study, results_dir) == "http://env:5000"
    study.tracking.mlflow_uri = "http://study:5000"
    assert resolve_tracking_uri(study, results_dir) == "http://study:5000"
    assert resolve_tracking_uri(study, results_dir, "http://explicit") == "http://explicit"
    tracker = StudyTracker(study, results_dir=results_dir, study_file=None,
                           mlflow_uri="sqlite:///" + str(tmp_path / "x.db"))
    assert tracker.tracking_uri.endswith("/x.db")
    with pytest.raises(RuntimeError, match="no sweep started"):
        _ = tracker.parent_run_id
    # a relative database or folder is made absolute: under Ray Jobs the current
    # directory is a temporary one (a study file's own value: its folder, when loaded)
    monkeypatch.chdir(tmp_path)
    for given, meant in (("sqlite:///db/m.db", f"sqlite:///{tmp_path.resolve()}/db/m.db"),
                         ("./mlruns", str(tmp_path.resolve() / "mlruns")),
                         ("databricks", "databricks"),
                         ("file:///abs/mlruns", "file:///abs/mlruns")):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", given)
        study.tracking.mlflow_uri = None
        assert resolve_tracking_uri(study, results_dir) == meant
    loaded = load_study_text("name: u\ntracking: {mlflow_uri: 'sqlite:///m.db'}\n",
                             tmp_path / "sub" / "u.yaml")
    assert loaded.study.tracking.mlflow_uri == f"sqlite:///{tmp_path / 'sub'}/m.db"
    with pytest.raises(RuntimeError, match="start_sweep"):
        tracker.finish_trial(make_record(study, 0, {}, 0))


def test_a_report_is_attached_only_to_the_store_the_sweep_tracked_to(
        tmp_path, mlflow_db, make_study, monkeypatch, caplog):
    """`bkd-sweep report` from a shell without the sweep's MLFLOW_TRACKING_URI: it says so
    and makes no stray store beside the results (it used to open a new sqlite one there)."""
    from bkd_sweep.storage import Location
    from bkd_sweep.tracking.mlflow_tracker import attach_report

    study = make_study("attach")
    results_dir = tmp_path / "results" / study.name
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    tracker = StudyTracker(study, results_dir=results_dir, study_file=None)
    parent = tracker.start_sweep(resume=False)
    tracker.finish_sweep()
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("<html></html>")

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with caplog.at_level(logging.WARNING):
        attach_report(Location.of(results_dir), report)
    assert any("report not attached to MLflow: the sweep tracked to sqlite:///" in r.message
               for r in caplog.records)
    assert not (tmp_path / "results" / "mlflow.db").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    attach_report(Location.of(results_dir), report)
    assert _artifacts(MlflowClient(mlflow_db), parent, "report") == {"report/index.html"}


def test_an_epoch_a_retry_ran_again_shows_its_new_value(tmp_path, mlflow_db, make_study,
                                                       make_record):
    """Ray retried the trial and its epochs came out otherwise (no checkpoint to resume
    from): MLflow's latest value per epoch is the retry's, as in Parquet (it kept the first)."""
    study = make_study("retry_values")
    tracker = StudyTracker(study, results_dir=tmp_path / study.name, study_file=None,
                           mlflow_uri=mlflow_db)
    tracker.start_sweep(resume=False)
    params = {"distill.mode": "bkd", "student.timesteps": 2}
    first = make_record(study, 0, params, 0)
    for m in first.result.history:
        tracker.log_epoch("t0000", params, m)
    again = make_record(study, 0, params, 0, offset=5.0)
    _run_trial(tracker, again)
    run_id = tracker.store.read_trials().loc[0, "mlflow_run_id"]
    points: dict[int, set[float]] = {}
    for m in MlflowClient(mlflow_db).get_metric_history(run_id, "top1"):
        points.setdefault(m.step, set()).add(m.value)
    # each epoch holds both runs' values (no point rewritten), the retry's logged after
    assert points == {m.epoch: {m.top1, m.top1 + 5.0} for m in first.result.history}
    assert {m.epoch: m.top1 for m in again.result.history} == dict(zip(
        tracker.store.read_epochs()["epoch"], tracker.store.read_epochs()["metric.top1"]))
    # the run's latest top1 (MLflow: last step, then last logged) is the retry's last epoch
    assert MlflowClient(mlflow_db).get_run(run_id).data.metrics["top1"] == \
        again.result.history[-1].top1


def test_an_unreachable_artifact_store_leaves_the_run_finished(tmp_path, mlflow_db, make_study,
                                                               make_record, monkeypatch):
    """The tracking server answers, its artifact store does not (from this driver): the run
    is still completed and the row names it, so no later session sends it again."""
    study = make_study("artifacts_down")
    tracker = _failing_tracker(tmp_path, mlflow_db, study, monkeypatch, "log_artifact",
                               OSError("artifact store unreachable"))
    rec = make_record(study, 0, {"distill.mode": "none"}, 0)
    for m in rec.result.history:
        tracker.log_epoch(rec.trial_id, rec.params, m)
    run_id = tracker.finish_trial(rec)
    assert run_id and tracker.unsynced_trials() == {}
    assert MlflowClient(mlflow_db).get_run(run_id).info.status == "FINISHED"
