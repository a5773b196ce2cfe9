"""submit_study against a real Ray head on this machine (Jobs API, token auth)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bkd_sweep.engine.submit import EXCLUDES, job_spec, submit_study

HERE = Path(__file__).parent
STUDY = HERE / "studies/submit_tiny.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_head(tmp_path: Path):
    """`ray start --head --block` in its own process group; stopped by that group's id (not
    `ray stop --force`, which would stop every Ray on this shared machine)."""
    dashboard = _free_port()
    ports = {"--port": _free_port(), "--dashboard-port": dashboard,
             "--dashboard-agent-listen-port": _free_port(),
             "--ray-client-server-port": _free_port(), "--node-manager-port": _free_port(),
             "--object-manager-port": _free_port(), "--runtime-env-agent-port": _free_port(),
             "--metrics-export-port": _free_port()}
    temp = Path(f"/tmp/bkd_head_{os.getpid()}")
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
           "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2",
           "--object-store-memory=200000000", f"--temp-dir={temp}",
           *[f"{k}={v}" for k, v in ports.items()]]
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # anything of the group still alive
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_dashboard(address: str, timeout: float = 120) -> None:
    from bkd_sweep.engine.submit import job_client

    deadline = time.time() + timeout
    while True:
        try:
            job_client(address)
            return
        except Exception:  # noqa: BLE001 - not up yet
            if time.time() > deadline:
                raise
            time.sleep(1)


def test_job_spec_ships_project_with_absolute_results(monkeypatch, tmp_path):
    monkeypatch.setenv("BKD_RESULTS_DIR", str(tmp_path / "res"))
    entrypoint, env = job_spec(STUDY, python="/opt/py")
    assert entrypoint == "/opt/py -m bkd_sweep.cli run tests/engine/studies/submit_tiny.yaml"
    assert env["working_dir"] == str(HERE.parents[1])
    assert env["env_vars"]["BKD_RESULTS_DIR"] == str(tmp_path / "res")
    assert set(EXCLUDES) <= set(env["excludes"]) and "/data/" in env["excludes"]


def test_job_spec_passes_the_cache_and_tracking_settings_that_are_set(monkeypatch, tmp_path):
    monkeypatch.setenv("BKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("BKD_CKPT", "")  # empty counts as unset
    _, env = job_spec(STUDY, python="/opt/py")
    assert env["env_vars"]["BKD_CACHE_DIR"] == str(tmp_path / "cache")
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "BKD_CKPT" not in env["env_vars"]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.server  # a `ray start --head` with its dashboard (Jobs API)
def test_submit_runs_the_cli_as_a_ray_job_and_writes_results(tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("BKD_RESULTS_DIR", str(results))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with ray_head(tmp_path) as address:
        _wait_for_dashboard(address)
        out = io.StringIO()
        job_id = submit_study(STUDY, address=address, stream=out, poll_seconds=0.5)
        text = out.getvalue()
        assert job_id in text and f"job {job_id} SUCCEEDED" in text
        assert "2/2 trials done (2 completed" in text  # the job's own summary, streamed
        from bkd_sweep.engine.submit import job_client
        assert job_client(address).get_job_status(job_id).value == "SUCCEEDED"
    from bkd_sweep.tracking import ResultStore
    trials, epochs = ResultStore(results / "submit_tiny").read()
    assert sorted(trials.trial_id) == ["t0000", "t0001"] and len(epochs) == 2
    assert sorted(trials["param.student.timesteps"]) == [1, 2]
