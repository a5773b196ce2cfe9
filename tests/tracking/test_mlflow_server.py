"""StudyTracker against a real `mlflow server` over HTTP, read back through the REST API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bkd_sweep.tracking import StudyTracker

pytestmark = [pytest.mark.server, pytest.mark.slow]  # starts `mlflow server`

START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _mlflow_command() -> list[str]:
    exe = Path(sys.executable).parent / "mlflow"
    return [str(exe)] if exe.exists() else [shutil.which("mlflow") or "mlflow"]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real tracking server on a free local port (SQLite backend), stopped afterwards."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    cmd = [*_mlflow_command(), "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "artifacts")]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited early:\n{log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server gave no /health within {START_TIMEOUT_S} s")
            time.sleep(0.25)
        yield url
    finally:  # the server and its workers run in their own process group
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def _get(url: str, path: str, **query: str) -> dict:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(query)}",
                                timeout=10) as resp:
        return json.load(resp)


def _post(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def test_tracker_on_a_tracking_server(mlflow_server, tmp_path, make_study, grid_records,
                                      epoch_top1):
    study = make_study("server_sweep")
    tracker = StudyTracker(study, results_dir=tmp_path / "results" / study.name,
                           study_file=None, mlflow_uri=mlflow_server)
    assert tracker.tracking_uri == mlflow_server
    parent = tracker.start_sweep(resume=False)
    records = grid_records(study)[:3]
    for rec in records:
        for m in rec.result.history:
            tracker.log_epoch(rec.trial_id, rec.params, m)
        tracker.finish_trial(rec)
    tracker.finish_sweep()

    exp = _get(mlflow_server, "/api/2.0/mlflow/experiments/get-by-name",
               experiment_name=study.name)["experiment"]
    top = _get(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=parent)["run"]
    assert top["info"]["status"] == "FINISHED"
    assert top["info"]["experiment_id"] == exp["experiment_id"]
    found = _post(mlflow_server, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp["experiment_id"]],
        "filter": f"tags.`mlflow.parentRunId` = '{parent}'"})["runs"]
    children = {next(t["value"] for t in r["data"]["tags"] if t["key"] == "trial_id"): r
                for r in found}
    assert set(children) == {r.trial_id for r in records}
    for rec in records:
        run = children[rec.trial_id]
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent and tags["status"] == "completed"
        assert tags["mode"] == rec.params["distill.mode"]
        history = _get(mlflow_server, "/api/2.0/mlflow/metrics/get-history",
                       run_id=run["info"]["run_id"], metric_key="top1")["metrics"]
        assert sorted((int(m["step"]), m["value"]) for m in history) == [
            (e, pytest.approx(epoch_top1(rec.trial_number, e))) for e in (1, 2, 3)]
        files = _get(mlflow_server, "/api/2.0/mlflow/artifacts/list",
                     run_id=run["info"]["run_id"])["files"]
        assert {f["path"] for f in files} == {"config.json", "result.json"}
    trials, _ = tracker.store.read()
    assert set(trials["mlflow_run_id"]) == {r["info"]["run_id"] for r in found}
