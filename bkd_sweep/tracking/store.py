"""The Parquet side of tracking: one row per trial, one per (trial, epoch), written atomically.

No MLflow, Ray or torch here: ``bkd_sweep.results`` and the report read through this module.
Every write is read-modify-replace: the trial's earlier rows are dropped, the new ones appended,
the table written to a temp file in the same folder and moved over the old one (os.replace),
so a reader sees the old file or the new one, never half of one, and a trial finished twice
(retry, resume) is stored once.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bkd_sweep.config import flatten
from bkd_sweep.redact import redact_params, redact_value
from bkd_sweep.fileio import file_lock, write_parquet_atomic
from bkd_sweep.records import EpochMetrics, TrialRecord, result_metrics
from bkd_sweep.tracking.schema import (
    EPOCHS_SCHEMA,
    LOSS_TERMS,
    PARAM_PREFIX,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    arrow_type_for_value,
    coerce,
    file_schema_version,
    param_types,
    trials_schema,
    upgrade_v1,
)

TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
STUDY_FILE = "study.json"
LOCK_FILE = ".store.lock"  # a second writer (e.g. `bkd-sweep train` beside a sweep) waits


class SchemaVersionError(RuntimeError):
    """A results file written with a schema version this code does not read."""


class ResultStore:
    """trials.parquet / epochs.parquet of one study directory (results/<study>)."""

    def __init__(self, results_dir: str | os.PathLike, study_name: str | None = None):
        self.results_dir = Path(results_dir).resolve()
        self.study_name = study_name or self.results_dir.name

    @property
    def trials_path(self) -> Path:
        return self.results_dir / TRIALS_FILE

    @property
    def epochs_path(self) -> Path:
        return self.results_dir / EPOCHS_FILE

    # ---------------------------------------------------------------- writing

    def upsert(self, record: TrialRecord, mlflow_run_id: str | None = None) -> None:
        """Replace every earlier row of ``record.trial_id`` with this record's rows."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        row = trial_row(record, study=self.study_name, mlflow_run_id=mlflow_run_id)
        with file_lock(self.results_dir / LOCK_FILE):
            old_epochs = _read_checked(self.epochs_path)
            epochs = _replace_rows(old_epochs, record.trial_id,
                                   pa.Table.from_pylist(epoch_rows(record), schema=EPOCHS_SCHEMA),
                                   EPOCHS_SCHEMA, sort_keys=[("trial_id", "ascending"),
                                                             ("epoch", "ascending")])
            # epochs first: a trial row on disk always has its epochs beside it
            write_parquet_atomic(epochs, self.epochs_path)
            old_trials = _read_checked(self.trials_path)
            schema = trials_schema(_extra_param_types(old_trials, row))
            trials = _replace_rows(old_trials, record.trial_id,
                                   pa.Table.from_pylist([row], schema=schema), schema,
                                   sort_keys=[("trial_number", "ascending"),
                                              ("trial_id", "ascending")])
            write_parquet_atomic(trials, self.trials_path)

    # ---------------------------------------------------------------- reading

    def read_tables(self) -> tuple[pa.Table, pa.Table]:
        """Both tables as Arrow (empty, with the full schema, when nothing was written yet)."""
        trials = _read_checked(self.trials_path)
        epochs = _read_checked(self.epochs_path)
        if trials is None:
            trials = trials_schema().empty_table()
        if epochs is None:
            epochs = EPOCHS_SCHEMA.empty_table()
        return trials, epochs

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(trials_df, epochs_df) with stable dtypes (see to_pandas)."""
        trials, epochs = self.read_tables()
        return to_pandas(trials), to_pandas(epochs)

    def trial_ids(self, status: str | None = None) -> set[str]:
        """The stored trial ids: all of them, or those stored with ``status`` (completed |
        pruned | failed). A resumed sweep records every finished trial missing here."""
        table = _read_checked(self.trials_path, columns=["trial_id", "status"])
        if table is None:
            return set()
        if status is not None:
            table = table.filter(pc.equal(table["status"], status))
        return set(table["trial_id"].to_pylist())


# -------------------------------------------------------------------- rows


def trial_row(record: TrialRecord, *, study: str, mlflow_run_id: str | None = None,
              finished_at: datetime | None = None) -> dict[str, Any]:
    """The trials.parquet row of one record, values coerced to the schema's types."""
    result = record.result
    config = result.config or {}
    leaves = redact_params({**record.params, **flatten(config)})
    leaves.setdefault("seed", record.seed)
    types = param_types()
    params = {PARAM_PREFIX + path: coerce(value, types.get(path) or arrow_type_for_value(value))
              for path, value in leaves.items()}
    energy = result.energy
    train = config.get("train")
    planned = train.get("epochs") if isinstance(train, dict) else None
    return {
        "trial_id": record.trial_id,
        "trial_number": int(record.trial_number),
        "study": study,
        "status": result.status,
        "reason": result.reason,
        "seed": int(record.seed),
        **params,
        **{f"metric.{k}": _float(v) for k, v in result_metrics(result).items()},
        "epochs_run": int(result.epochs_run),
        "epochs_planned": planned,
        "pruned_epoch": record.pruned_epoch,
        "wall_seconds": float(result.wall_seconds),
        "device_seconds": float(result.device_seconds),
        "device": result.device,
        "config_hash": result.config_hash,
        "config_id": result.config_id,
        "selection_on_test": bool(result.selection_on_test),
        "split_rule": result.split_rule,
        "code_version": result.code_version,
        "mlflow_run_id": mlflow_run_id,
        "config_json": json.dumps(redact_value(config)),
        "firing_rates_json": json.dumps(energy.firing_rates if energy else {}, sort_keys=True),
        "finished_at": finished_at or datetime.now(UTC),
        "schema_version": SCHEMA_VERSION,
    }


def epoch_rows(record: TrialRecord) -> list[dict[str, Any]]:
    """One epochs.parquet row per epoch of the record's history (the last report of an epoch
    wins if a retry reported it twice)."""
    by_epoch: dict[int, EpochMetrics] = {m.epoch: m for m in record.result.history}
    return [
        {
            "trial_id": record.trial_id,
            "epoch": m.epoch,
            "metric.top1": m.top1,
            "metric.top5": m.top5,
            "metric.val_loss": m.val_loss,
            "metric.loss": m.loss,
            **{f"loss.{t}": _float(m.loss_terms.get(t)) for t in LOSS_TERMS},
            "lr": m.lr,
            "wall_seconds": m.wall_seconds,
            "schema_version": SCHEMA_VERSION,
        }
        for _, m in sorted(by_epoch.items())
    ]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


# -------------------------------------------------------------------- files


def _read_checked(path: Path, columns: list[str] | None = None) -> pa.Table | None:
    """Read a results file in today's terms (an older version upgraded), refusing one
    written under a version this bkd-sweep does not know."""
    if not path.exists():
        return None
    table = pq.read_table(path, columns=columns)
    version = file_schema_version(table.schema)
    if version not in READABLE_VERSIONS:
        raise SchemaVersionError(
            f"{path}: schema version {version}, this bkd-sweep reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}")
    if version == 1 and "status" in table.column_names:
        table = upgrade_v1(table)
    return table


def _extra_param_types(old: pa.Table | None, row: dict[str, Any]) -> dict[str, pa.DataType]:
    """Param leaves not in today's TrialConfig: kept from the old file, typed from values."""
    known = set(param_types())
    extra: dict[str, pa.DataType] = {}
    if old is not None:
        for field in old.schema:
            path = field.name.removeprefix(PARAM_PREFIX)
            if field.name.startswith(PARAM_PREFIX) and path not in known:
                extra[path] = field.type
    for name, value in row.items():
        path = name.removeprefix(PARAM_PREFIX)
        if name.startswith(PARAM_PREFIX) and path not in known and path not in extra:
            extra[path] = arrow_type_for_value(value)
    return extra


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (missing ones null), in order, cast."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table[field.name].cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _replace_rows(old: pa.Table | None, trial_id: str, new: pa.Table, schema: pa.Schema,
                  sort_keys: list[tuple[str, str]]) -> pa.Table:
    if old is None:
        combined = new
    else:
        kept = old.filter(pc.not_equal(old["trial_id"], pa.scalar(trial_id)))
        combined = pa.concat_tables([_conform(kept, schema), _conform(new, schema)])
    return combined.sort_by(sort_keys).replace_schema_metadata(schema.metadata)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas with dtypes that do not depend on the data: int columns are nullable
    Int64/Int32 and bools nullable boolean even when a column holds no null."""
    mapping = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(),
               pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=mapping.get)


def read_study_json(results_dir: Path) -> dict[str, Any] | None:
    path = Path(results_dir) / STUDY_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
