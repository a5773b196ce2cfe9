"""The values StudyTracker sends to MLflow: the tracking URI, params, tags and metrics.

Credentials are hidden here (bkd_sweep.redact) before anything reaches MLflow; long values are
cut to MLflow's limits.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bkd_sweep.config import LoadedStudy, Study, StudyError
from bkd_sweep.config.loading import absolute_tracking_uri
from bkd_sweep.records import EpochMetrics, TrialRecord, result_metrics
from bkd_sweep.redact import redact_value
from bkd_sweep.settings import settings
from bkd_sweep.storage import Location

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
MAX_TAG_CHARS = 5000  # below MLflow's tag limit; a failure reason may be a long traceback


def resolve_tracking_uri(study: Study, results_dir, explicit: str | None = None) -> str:
    """explicit > study.tracking.mlflow_uri > $MLFLOW_TRACKING_URI > sqlite beside results
    (a filesystem storage root only: an object store cannot hold a database)."""
    for candidate in (explicit, study.tracking.mlflow_uri, settings().mlflow_tracking_uri):
        if candidate:  # the study's is absolute once loaded; a flag's or variable's, here
            return absolute_tracking_uri(candidate, Path.cwd())
    location = Location.of(results_dir)
    if not location.is_local:
        raise StudyError(f"storage {location.uri}: an object-store root needs an MLflow "
                         "tracking server: set tracking.mlflow_uri or MLFLOW_TRACKING_URI",
                         field="tracking.mlflow_uri")
    return f"sqlite:///{location.local_path.parent}/mlflow.db"


def tracking_problems(loaded: LoadedStudy) -> list[StudyError]:
    """No MLflow store for the sweep: an object-store root without a tracking server (the
    SQLite default cannot live there), a server that cannot be reached, a SQLite file set
    elsewhere in a folder that cannot be written. A check of the driver
    (preflight.check_runnable), whose tracker writes MLflow; a node never does, and may lack
    MLFLOW_TRACKING_URI."""
    location = loaded.results_location()
    try:
        uri = resolve_tracking_uri(loaded.study, location)
    except StudyError as exc:
        return [loaded.error(exc.message, exc.field)]
    if not uri.startswith("sqlite:///"):
        problem = server_unreachable(uri)
    elif location.is_local and sqlite_path(uri).parent == location.local_path.parent:
        problem = None  # the default store, in the results root: results_dir_problems' part
    else:
        problem = sqlite_unwritable(uri)
    return [loaded.error(problem, "tracking.mlflow_uri")] if problem else []


def sqlite_unwritable(uri: str) -> str | None:
    """Why MLflow could not create or write a SQLite store there, or None."""
    from bkd_sweep.preflight import writable_dir

    db = sqlite_path(uri)
    return None if writable_dir(db.parent) else \
        f"MLflow store {db}: its folder cannot be written or created"


def server_unreachable(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why an http(s) tracking server takes no connection, or None: MLflow's client would
    retry its first request for minutes, then fail with a traceback."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None  # a database URI or a scheme MLflow resolves itself
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except ValueError as exc:  # a port that is no number
        return f"{parts.scheme}://{parts.hostname}: {exc}"
    except OSError as exc:  # the address only: the URI may hold a user and password
        return (f"cannot reach the MLflow tracking server at {parts.scheme}://"
                f"{parts.hostname}:{port}: {exc.strerror or exc}")
    return None


def param_value(value: Any, name: str = "") -> str:
    """MLflow param text: credentials hidden (bkd_sweep.redact), scalars as str(), containers
    as JSON, cut to MLflow's 6000 chars."""
    value = redact_value(value, name)
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def tag_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 3] + "..."


def sqlite_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]).resolve()


def now_ms() -> int:
    return int(time.time() * 1000)


def epoch_metrics(m: EpochMetrics) -> list:
    """One epoch's metrics for MLflow, all at step = epoch."""
    from mlflow.entities import Metric

    values = {"top1": m.top1, "top5": m.top5, "val_loss": m.val_loss, "loss": m.loss,
              "lr": m.lr, "epoch_seconds": m.wall_seconds,
              "samples_per_second": m.samples_per_second,
              **{f"loss.{k}": v for k, v in m.loss_terms.items()}}
    stamp = now_ms()
    return [Metric(k, float(v), stamp, m.epoch) for k, v in values.items()]


def final_metrics(record: TrialRecord) -> dict[str, float]:
    r = record.result
    # the same names as Parquet's metric.<name>; the per-epoch series are top1, top5 (val)
    values = dict(result_metrics(r))
    values.update(epochs_run=r.epochs_run, wall_seconds=r.wall_seconds,
                  device_seconds=r.device_seconds)
    return {k: float(v) for k, v in values.items() if v is not None}


def trial_tags(study: str, record: TrialRecord) -> dict[str, Any]:
    config = record.result.config or {}
    student = config.get("student") or {}
    return {
        "study": study,
        "trial_id": record.trial_id,
        "trial_number": record.trial_number,
        "status": record.result.status,
        "reason": record.result.reason,
        "mode": (config.get("distill") or {}).get("mode"),
        "arch": student.get("arch"),
        "T": student.get("timesteps"),
        "seed": record.seed,
        "pruned_epoch": record.pruned_epoch,
        "config_hash": record.result.config_hash,
        "code_version": record.result.code_version,
    }
