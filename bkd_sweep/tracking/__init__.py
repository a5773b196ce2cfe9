"""Tracking: MLflow runs (a parent per sweep, a nested child per trial) and the Parquet store.

``StudyTracker`` is what the sweep driver calls; ``ResultStore`` is the Parquet side alone
(no MLflow). Importing this package does not import mlflow: the tracker imports it when built.
"""

from bkd_sweep.tracking.mlflow_tracker import StudyTracker, resolve_tracking_uri
from bkd_sweep.tracking.schema import (
    EPOCHS_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    trials_schema,
)
from bkd_sweep.tracking.store import ResultStore, SchemaVersionError

__all__ = [
    "EPOCHS_SCHEMA",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_KEY",
    "ResultStore",
    "SchemaVersionError",
    "StudyTracker",
    "resolve_tracking_uri",
    "trials_schema",
]
