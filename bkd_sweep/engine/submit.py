"""``submit_study``: run a study on a Ray cluster through the Ray Jobs API.

The job runs ``<python> -m bkd_sweep.cli run <study>`` in a temporary copy of the project
(``runtime_env.working_dir``), so outputs written to relative paths would vanish with it:
the job gets ``BKD_RESULTS_DIR`` = the absolute results root this machine would use, and
``run_study`` writes there (a path the cluster must see: the same machine or a shared mount).
The study's ${VARS} that are set here travel with the job as environment variables.

Token authentication (on by default since Ray 2.59): the client sends the token from
``~/.ray/auth_token`` / ``RAY_AUTH_TOKEN(_PATH)`` when one is available and RAY_AUTH_MODE is
unset; without that, a token-protected dashboard answers "Missing authentication token".
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import TextIO

from bkd_sweep.config import StudyError, load_study
from bkd_sweep.settings import env_var

# Never shipped with the job: outputs, environments, VCS data, weights and data sets.
EXCLUDES = ["/results/", "/reports/", "/.venv/", "/venv/", "/.git/", "/data/", "/datasets/",
            "/weights/", "/checkpoints/", "/build/", "/dist/", "*.pt", "*.pth", "*.ckpt",
            "mlflow.db", "mlruns/", "mlartifacts/", "__pycache__/", ".pytest_cache/",
            ".hypothesis/", "*.egg-info/", ".ruff_cache/"]
PASSED_SETTINGS = ("cache_dir", "mlflow_tracking_uri")  # travel with the job when set here
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


class JobFailedError(RuntimeError):
    """The submitted job ended in a state other than SUCCEEDED."""

    def __init__(self, job_id: str, status: str):
        super().__init__(f"job {job_id} ended {status}")
        self.job_id = job_id
        self.status = status


def project_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding pyproject.toml (else the cwd)."""
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").exists():
            return folder
    return Path.cwd().resolve()


def enable_token_auth() -> None:
    """Send the local Ray token when one exists and RAY_AUTH_MODE was left unset."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # an older Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def job_client(address: str):
    from ray.job_submission import JobSubmissionClient

    enable_token_auth()
    return JobSubmissionClient(address)


def job_spec(study_path: Path, *, python: str | None = None, resume: bool = False
             ) -> tuple[str, dict]:
    """(entrypoint, runtime_env) for a study file: validated, with an absolute results root."""
    loaded = load_study(study_path)
    study_file = Path(study_path).resolve()
    root = project_root(study_file.parent)
    try:
        relative = study_file.relative_to(root)
    except ValueError:
        raise StudyError(f"the study must lie inside the project directory {root} "
                         "(the job runs in a copy of it)", file=study_path) from None
    results_root = loaded.results_dir().parent
    excludes = list(EXCLUDES)
    try:
        excludes.append("/" + results_root.relative_to(root).as_posix() + "/")
    except ValueError:
        pass  # results outside the project are not shipped anyway
    variables = set(_VAR.findall(study_file.read_text(encoding="utf-8")))
    # the study's own ${VARS} and the passed settings travel as this shell has them
    passed = {env_var(field) for field in PASSED_SETTINGS}
    env = {name: os.environ[name] for name in sorted(variables | passed) if os.environ.get(name)}
    env[env_var("results_dir")] = str(results_root)
    command = [python or sys.executable, "-m", "bkd_sweep.cli", "run", relative.as_posix()]
    if resume:
        command.append("--resume")
    runtime_env = {"working_dir": str(root), "excludes": excludes, "env_vars": env}
    return shlex.join(command), runtime_env


def submit_study(study_path: str | os.PathLike, *, address: str, wait: bool = True,
                 python: str | None = None, resume: bool = False,
                 stream: TextIO | None = None, poll_seconds: float = 1.0) -> str:
    """Submit ``bkd-sweep run STUDY`` as a Ray job at ``address`` (the dashboard URL) and
    return the job id. With ``wait`` the job's log is streamed until it ends; a job that does
    not succeed raises JobFailedError."""
    out = stream or sys.stdout
    entrypoint, runtime_env = job_spec(Path(study_path), python=python, resume=resume)
    client = job_client(address)
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                               metadata={"bkd_sweep.study": Path(study_path).name})
    print(f"submitted job {job_id} to {address}: {entrypoint}", file=out, flush=True)
    if not wait:
        return job_id
    status = follow_job(client, job_id, out, poll_seconds)
    print(f"job {job_id} {status}", file=out, flush=True)
    if status != "SUCCEEDED":
        raise JobFailedError(job_id, status)
    return job_id


def follow_job(client, job_id: str, out: TextIO, poll_seconds: float = 1.0) -> str:
    """Print the job's new log lines until it reaches a terminal state; return that state."""
    shown = 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            out.write(logs[shown:])
            out.flush()
            shown = len(logs)
        if status.is_terminal():
            return str(status.value)
        time.sleep(poll_seconds)
