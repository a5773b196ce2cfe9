"""A whole sweep with its storage root on a real S3-compatible server process (moto): the
journal, per-trial records, Parquet, checkpoints and the teacher cache are objects, nothing of
the study is written to the local disk, and results / status read it back from there."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "bkd-sweeps"
STUDY = """\
name: onstore
data: {dataset: digits, batch_size: 64, limit_train: 200, limit_val: 60, limit_test: 60}
teacher: {arch: cnn_small, checkpoint: train, feature: features, train: {epochs: 1}}
student: {arch: spiking_cnn_small, timesteps: 2}
train: {epochs: 2, threads: 1}
distill: {mode: mixed, beta: 1.0e-5}
energy: {samples: 4}
search:
  sampler: grid
  params: {distill.mode: [none, mixed]}
resources: {per_trial: {cpu: 1}}
"""


def _cli(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    bkd = str(Path(sys.executable).with_name("bkd-sweep"))
    return subprocess.run([bkd, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_sweep_on_an_object_store_root(s3_env, tmp_path, monkeypatch):
    import os

    import boto3

    endpoint = s3_env(BUCKET)
    prefix = uuid.uuid4().hex[:10]
    storage = f"s3://{BUCKET}/{prefix}"
    study = tmp_path / "onstore.yaml"
    study.write_text(STUDY)
    work = tmp_path / "cwd"
    work.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow/mlflow.db"}
    env.pop("RAY_ADDRESS", None)

    # an object-store root without an MLflow server is refused before anything runs: no
    # driver lease written, no Ray started (Ray points session_latest at each new session)
    latest = Path(tempfile.gettempdir()) / "ray" / "session_latest"
    session = os.readlink(latest) if latest.is_symlink() else None
    refused = _cli("run", str(study), "--storage", storage, cwd=work,
                   env={k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"})
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "an object-store root needs an MLflow tracking server" in refused.stderr
    assert (os.readlink(latest) if latest.is_symlink() else None) == session
    s3 = boto3.client("s3", endpoint_url=endpoint)
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("KeyCount") == 0

    done = _cli("run", str(study), "--storage", storage, cwd=work, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2/2 trials done (2 completed" in done.stdout
    assert "teacher cnn_small trained" in done.stdout

    keys = {o["Key"].removeprefix(f"{prefix}/") for page in s3.get_paginator(
        "list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix) for o in page.get("Contents", [])}
    for expected in ("onstore/tables/trials/t0000.parquet", "onstore/trials/t0001/result.json",
                     "onstore/trials/t0001/ckpt/last.pt", "onstore/study.json",
                     "onstore/sweep.json", "onstore/journal/000000000000.jsonl"):
        assert expected in keys, sorted(keys)
    assert any(k.startswith("cache/teachers/cnn_small-") for k in keys)
    assert not any(k.endswith("driver.lease") for k in keys)  # released at the end
    assert sorted(p.name for p in work.iterdir()) == []  # nothing of the study on this disk

    status = _cli("status", str(study), "--storage", storage, cwd=work, env=env)
    assert status.returncode == 0, status.stderr
    assert "trials: 2 planned; 2 done (2 completed, 0 pruned, 0 failed)" in status.stdout
    results = _cli("results", f"{storage}/onstore", cwd=work, env=env)
    assert results.returncode == 0, results.stderr
    assert f"onstore: 2 trials (2 completed, 0 pruned, 0 failed) in {storage}/onstore" \
        in results.stdout

    _check_reports(study, storage, results.stdout, tmp_path, work, env)

    again = _cli("run", str(study), "--storage", storage, cwd=work, env=env)
    assert again.returncode == 2 and "already holds a sweep" in again.stderr


def _top1_per_mode(results_stdout: str) -> dict[str, str]:
    """The test top-1 that `bkd-sweep results` printed per distill.mode row."""
    rows = [line.split() for line in results_stdout.splitlines()]
    return {row[0]: row[5] for row in rows if row and row[0] in ("none", "mixed")}


def _check_reports(study: Path, storage: str, results_stdout: str, tmp_path: Path,
                   work: Path, env: dict) -> None:
    """`bkd-sweep report` on the object-store root, as a user types it: by study file and
    --storage (the report attached to the sweep's MLflow run), by results URI (default
    --out reports/<study> in the cwd), and on a root holding nothing (one line, exit 2)."""
    out = tmp_path / "report"
    report = _cli("report", str(study), "--storage", storage, "--out", str(out),
                  cwd=work, env=env)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert f"report: {out / 'index.html'}" in report.stdout
    assert "not attached" not in report.stderr  # logged on the sweep's parent run
    assert "2 trials." in (out / "index.html").read_text(encoding="utf-8")
    top1 = _top1_per_mode(results_stdout)
    assert sorted(top1) == ["mixed", "none"], results_stdout
    table = (out / "ablation.md").read_text(encoding="utf-8").splitlines()
    for mode, value in top1.items():  # the same number `results` printed, one seed each
        [row] = [line for line in table if line.startswith(f"| {mode} ")]
        assert f"{value} (n=1)" in row, (mode, value, table)

    by_uri = _cli("report", f"{storage}/onstore", "--no-mlflow", cwd=work, env=env)
    assert by_uri.returncode == 0, by_uri.stderr[-3000:]
    assert (work / "reports/onstore/ablation.md").read_text(encoding="utf-8").splitlines() \
        == table

    empty_root = f"{storage}-empty"  # BKD_STORAGE is honoured as by status
    empty = _cli("report", str(study), cwd=work, env={**env, "BKD_STORAGE": empty_root})
    assert empty.returncode == 2
    assert empty.stderr.strip() == \
        f"error: {empty_root}/onstore: no trials.parquet (run the study first)"
