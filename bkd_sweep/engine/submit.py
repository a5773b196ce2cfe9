"""``submit_study``: run a study on a Ray cluster through the Ray Jobs API.

What travels with the job, and why:

* **The study, resolved here.** The job's working dir is a small folder made for this
  submission holding only ``<name>.yaml``: the study as this machine reads it (``${VARS}``
  filled in, relative paths made absolute, ``--set`` overrides applied). The driver never
  depends on a copy of the project that Ray may unpack again or clean away, and each
  submission has its own package (no two jobs share one unpacked folder). The code that runs
  is the bkd-sweep installed on the cluster; preflight checks every node has the driver's.
* **The storage root**, absolute (``--storage``), so results land where the submitter reads,
  never in the job's working dir.
* **The environment, credentials left out**: the settings bkd-sweep reads (BKD_*,
  MLFLOW_TRACKING_URI) and the standard AWS / MLflow variables, as runtime_env ``env_vars``.
  Ray writes a job's runtime_env into its logs on every node and shows it in ``ray job
  list``, so a variable named like a secret (AWS_SECRET_ACCESS_KEY, MLFLOW_TRACKING_PASSWORD)
  or holding one (a URI with a password) stays here: the nodes use their own credentials
  (an instance profile, or variables set where ``ray start`` ran), and submit says which
  variables it kept back, by name.
* **The interpreter on the head**: ``python`` as the head's PATH finds it (the submitter's
  own path rarely exists there), or ``--python``.

Token authentication (on by default since Ray 2.59): the client sends the token from
``~/.ray/auth_token`` / ``RAY_AUTH_TOKEN(_PATH)`` when one is available and RAY_AUTH_MODE is
unset; without that, a token-protected dashboard answers "Missing authentication token".
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import yaml

from bkd_sweep.config import LoadedStudy, StudyError
from bkd_sweep.config.loading import absolute_tracking_uri
from bkd_sweep.redact import is_secret_name, redact_text
from bkd_sweep.settings import Settings, env_var

# sent with every job when set here (credentials excepted): bkd-sweep's own settings, the
# object-store and the MLflow client's variables
AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")
MLFLOW_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                    "MLFLOW_TRACKING_TOKEN", "MLFLOW_S3_ENDPOINT_URL")
_PATH_VARIABLES = ("BKD_CACHE_DIR", "BKD_DATA", "BKD_CKPT")
_NOT_SENT = ("ray_address", "results_dir", "storage")  # the job gets --storage instead


@dataclass(frozen=True)
class SweepOptions:
    """The `run` options a submitted job runs with (`run` and `submit` take the same)."""

    resume: bool = False
    retry_failed: bool = False

    def flags(self) -> list[str]:
        return (["--resume"] if self.resume else []) + (
            ["--retry-failed"] if self.retry_failed else [])


class JobFailedError(RuntimeError):
    """The submitted job ended in a state other than SUCCEEDED."""

    def __init__(self, job_id: str, status: str):
        super().__init__(f"job {job_id} ended {status}")
        self.job_id = job_id
        self.status = status


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
    try:
        return JobSubmissionClient(address)
    except _authentication_errors():
        raise StudyError(
            "RAY_AUTH_MODE=token but no Ray token here: copy the cluster's ~/.ray/auth_token "
            "to this machine or point RAY_AUTH_TOKEN_PATH at it") from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StudyError(f"cannot reach the Ray dashboard at {address}: {first}") from None


def _authentication_errors() -> tuple[type[BaseException], ...]:
    try:
        from ray.exceptions import AuthenticationError
    except ImportError:  # an older Ray without token authentication
        return ()
    return (AuthenticationError,)


def resolved_study_text(loaded: LoadedStudy) -> str:
    """The study as this machine reads it: variables filled in, relative paths absolute."""
    from bkd_sweep.config.loading import resolve_relative_paths

    tree = resolve_relative_paths(loaded.raw, loaded.path.parent.resolve())
    header = (f"# {loaded.path.name} as resolved by `bkd-sweep submit` "
              f"(submission {uuid.uuid4().hex[:12]})\n")
    return header + yaml.safe_dump(tree, sort_keys=False)


@dataclass(frozen=True)
class JobEnvironment:
    """The variables a job gets from this shell, and the names of those kept back because
    they are, or hold, credentials."""

    sent: dict[str, str]
    withheld: tuple[str, ...]


def job_environment() -> JobEnvironment:
    """bkd-sweep's settings and the AWS / MLflow variables set here, credentials left out."""
    names = [env_var(field) for field in Settings.model_fields if field not in _NOT_SENT]
    found = {name: os.environ[name] for name in [*names, *AWS_VARIABLES, *MLFLOW_VARIABLES]
             if os.environ.get(name)}
    withheld = tuple(name for name, value in found.items()
                     if is_secret_name(name) or redact_text(value) != value)
    sent = {k: _absolute_here(k, v) for k, v in found.items() if k not in withheld}
    return JobEnvironment(sent, withheld)


def _absolute_here(name: str, value: str) -> str:
    """A relative path (or sqlite URI) means this shell's folder, not the job's temporary one."""
    if name == "MLFLOW_TRACKING_URI":
        return absolute_tracking_uri(value, Path.cwd())
    if name in _PATH_VARIABLES and "://" not in value:
        return str(Path(value).expanduser().resolve())
    return value


def job_spec(loaded: LoadedStudy, staging: Path, *, python: str | None = None,
             options: SweepOptions = SweepOptions(),
             environment: JobEnvironment | None = None) -> tuple[str, dict]:
    """(entrypoint, runtime_env) of the job; ``staging`` (a new empty folder) becomes its
    working dir, holding the resolved study."""
    storage = loaded.storage_uri()
    if redact_text(storage) != storage:  # Ray keeps the entrypoint in its job table
        raise StudyError(f"--storage {redact_text(storage)}: a storage URI given to submit "
                         "cannot hold a credential (Ray shows a job's command line); give "
                         "the nodes their own (instance profile, AWS_* where ray start runs)")
    study_file = staging / f"{loaded.study.name}.yaml"
    study_file.write_text(resolved_study_text(loaded), encoding="utf-8")
    command = [python or "python", "-m", "bkd_sweep.cli", "run", study_file.name,
               "--storage", storage, *options.flags()]
    sent = (environment or job_environment()).sent
    return shlex.join(command), {"working_dir": str(staging), "env_vars": sent}


def submit_study(loaded: LoadedStudy, *, address: str, wait: bool = True,
                 python: str | None = None, options: SweepOptions = SweepOptions(),
                 stream: TextIO | None = None, poll_seconds: float = 1.0) -> str:
    """Submit ``bkd-sweep run`` of the loaded study as a Ray job at ``address`` (the
    dashboard URL) and return the job id. With ``wait`` the job's log is streamed until it
    ends; a job that does not succeed raises JobFailedError."""
    out = stream or sys.stdout
    client = job_client(address)
    environment = job_environment()
    if environment.withheld:
        print(f"not sent with the job (credentials; Ray logs a job's environment): "
              f"{', '.join(environment.withheld)}; the nodes use their own", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bkd-submit-") as staging:
        entrypoint, runtime_env = job_spec(loaded, Path(staging), python=python,
                                           options=options, environment=environment)
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                   metadata={"bkd_sweep.study": loaded.study.name})
    # the entrypoint holds the storage URI: hide a user:password part if it has one
    print(f"submitted job {job_id} to {address}: {redact_text(entrypoint)}", file=out,
          flush=True)
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
