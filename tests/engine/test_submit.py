"""What `bkd-sweep submit` sends with a job (the cluster tier submits for real)."""

from __future__ import annotations

from pathlib import Path

from bkd_sweep.config import load_study
from bkd_sweep.engine.submit import SweepOptions, job_environment, job_spec

HERE = Path(__file__).parent
STUDY = HERE / "studies/submit_tiny.yaml"


def test_job_spec_ships_the_resolved_study_and_an_absolute_storage_root(tmp_path):
    study = tmp_path / "proj/studies/rel.yaml"
    study.parent.mkdir(parents=True)
    study.write_text(STUDY.read_text().replace(
        "data: {dataset: digits,", "data: {dataset: digits, root: ../data/digits,"))
    loaded = load_study(study, {"train.epochs": 3}).with_storage(str(tmp_path / "res"))
    staging = tmp_path / "staging"
    staging.mkdir()
    entrypoint, env = job_spec(loaded, staging, python="/opt/py",
                               options=SweepOptions(resume=True, retry_failed=True))
    assert entrypoint == (f"/opt/py -m bkd_sweep.cli run submit_tiny.yaml --storage "
                          f"{tmp_path / 'res'} --resume --retry-failed")
    assert env["working_dir"] == str(staging) and list(staging.iterdir()) == [
        staging / "submit_tiny.yaml"]  # only the study: no copy of the project to lose
    shipped = load_study(staging / "submit_tiny.yaml").study
    assert shipped.data.root == str(tmp_path / "proj/data/digits")  # made absolute here
    assert shipped.train.epochs == 3  # --set travels inside the resolved study
    assert shipped == loaded.study


def test_job_environment_carries_settings_and_object_store_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("BKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("BKD_CKPT", "")  # empty counts as unset
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")  # the job gets the cluster's own
    env = job_environment()
    assert env["BKD_CACHE_DIR"] == str(tmp_path / "cache")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t"
    assert "BKD_CKPT" not in env and "RAY_ADDRESS" not in env
