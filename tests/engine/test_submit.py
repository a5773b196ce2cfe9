"""What `bkd-sweep submit` sends with a job (the cluster tier submits for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bkd_sweep.config import StudyError, load_study
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


def test_job_environment_carries_settings_and_keeps_credentials_back(monkeypatch, tmp_path):
    """Ray logs a job's runtime_env on every node and lists it in `ray job list`: a variable
    named like a secret, or holding a URI password, is not sent (the nodes use their own)."""
    monkeypatch.chdir(tmp_path)  # relative values mean this folder, not the job's
    monkeypatch.setenv("BKD_CACHE_DIR", "cache")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///db/mlflow.db")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("BKD_CKPT", "")  # empty counts as unset
    monkeypatch.setenv("BKD_DATA", "s3://AK:pw@minio/data")  # holds one
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")  # the job gets the cluster's own
    env = job_environment()
    assert env.sent == {"BKD_CACHE_DIR": str(tmp_path.resolve() / "cache"),
                        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path.resolve()}/db/mlflow.db",
                        "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
                        "AWS_DEFAULT_REGION": "eu-west-1"}
    assert sorted(env.withheld) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "BKD_DATA"]
    _, runtime_env = job_spec(load_study(STUDY).with_storage(str(tmp_path / "r")),
                              _staging(tmp_path), environment=env)
    assert runtime_env["env_vars"] == env.sent


def _staging(tmp_path: Path) -> Path:
    staging = tmp_path / "staging"
    staging.mkdir()
    return staging


def test_the_job_runs_the_heads_python_and_refuses_a_storage_uri_with_a_credential(tmp_path):
    loaded = load_study(STUDY)
    entrypoint, _ = job_spec(loaded.with_storage(str(tmp_path / "r")), _staging(tmp_path))
    assert entrypoint.startswith("python -m bkd_sweep.cli run submit_tiny.yaml")
    with pytest.raises(StudyError, match=r"^--storage s3://b/p\?secret_key=\*\*\*: a storage"):
        job_spec(loaded.with_storage("s3://b/p?secret_key=S3"), tmp_path)
