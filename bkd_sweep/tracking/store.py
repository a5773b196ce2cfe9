"""The Parquet side of tracking: one row per trial, one per (trial, epoch), in a study folder
on a local/shared path or an object store (``bkd_sweep.storage.Location``).

No MLflow, Ray or torch here: ``bkd_sweep.results`` and the report read through this module.
Recording a trial writes that trial's own two files, each in one whole write (``tables.py``:
the layout), so it rewrites no table, takes no lock and costs the same at any study size; a
trial recorded again (retry, resume) replaces its files and is still stored once.
``compact()`` (at a sweep's end) writes the consolidated snapshots readers start from.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bkd_sweep.records import TrialRecord
from bkd_sweep.storage import Location
from bkd_sweep.tracking.parquet_files import DamagedFileError, SchemaVersionError
from bkd_sweep.tracking.rows import epoch_rows, trial_row
from bkd_sweep.tracking.schema import (
    EPOCHS_SCHEMA,
    PARAM_PREFIX,
    arrow_type_for_value,
    trials_schema,
)
from bkd_sweep.tracking.tables import (
    EPOCHS,
    KINDS,
    TABLES_DIR,
    TRIALS,
    TableKind,
    compact_table,
    extra_param_types,
    read_view,
    storage_clock_ns,
    write_part,
)

TRIALS_FILE = TRIALS.snapshot
EPOCHS_FILE = EPOCHS.snapshot
STUDY_FILE = "study.json"

__all__ = ["DamagedFileError", "EPOCHS_FILE", "ResultStore", "STUDY_FILE", "SchemaVersionError",
           "TABLES_DIR", "TRIALS_FILE", "epoch_rows", "read_study_json", "to_pandas",
           "trial_row"]


class ResultStore:
    """The trials and epochs tables of one study folder (results/<study>)."""

    def __init__(self, where: Location | str | os.PathLike, study_name: str | None = None):
        self.location = Location.of(where)
        self.study_name = study_name or self.location.name

    @property
    def results_dir(self) -> Path:
        """The study folder as a Path (local and shared filesystems only)."""
        return self.location.local_path

    @property
    def trials_path(self) -> Path:
        """The trials snapshot (written by compact(); local folders only)."""
        return self.results_dir / TRIALS_FILE

    @property
    def epochs_path(self) -> Path:
        return self.results_dir / EPOCHS_FILE

    def has_tables(self) -> bool:
        """Whether any trial was recorded here (a snapshot or a part)."""
        return any(self.location.exists(kind.snapshot) or self.location.exists(*kind.parts_dir)
                   for kind in KINDS)

    # ---------------------------------------------------------------- writing

    def upsert(self, record: TrialRecord, mlflow_run_id: str | None = None, *,
               finished_at: datetime | None = None) -> None:
        """Store ``record`` as its trial's rows, replacing any earlier rows of that trial
        (``finished_at``: the row's time when not now, e.g. a rebuilt row keeps its own)."""
        row = trial_row(record, study=self.study_name, mlflow_run_id=mlflow_run_id,
                        finished_at=finished_at)
        schema = trials_schema(extra_param_types([_row_schema(row)]))
        epochs = pa.Table.from_pylist(epoch_rows(record), schema=EPOCHS_SCHEMA)
        # epochs first: a trial row on disk always has its epochs beside it
        write_part(self.location, EPOCHS, record.trial_id, epochs)
        write_part(self.location, TRIALS, record.trial_id,
                   pa.Table.from_pylist([row], schema=schema))

    def compact(self) -> tuple[int, int]:
        """Write the trials.parquet / epochs.parquet snapshots of everything stored now, so
        readers start from one file per table. Returns (trial rows, epoch rows); parts stay
        (a snapshot is a cache of them: losing one loses nothing)."""
        if not self.has_tables():
            return 0, 0
        clock = storage_clock_ns(self.location)
        counts = {kind.name: compact_table(self.location, kind, clock) for kind in KINDS}
        return max(counts["trials"], 0), max(counts["epochs"], 0)

    # ---------------------------------------------------------------- reading

    def read_tables(self) -> tuple[pa.Table, pa.Table]:
        """Both tables as Arrow (empty, with the full schema, when nothing was written yet)."""
        return self._table(TRIALS), self._table(EPOCHS)

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(trials_df, epochs_df) with stable dtypes (see to_pandas)."""
        return self.read_trials(), self.read_epochs()

    def read_trials(self) -> pd.DataFrame:
        return to_pandas(self._table(TRIALS))

    def read_epochs(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The epochs table, or only ``columns`` of it (the report reads three of ~20)."""
        return to_pandas(self._table(EPOCHS, columns))

    def _table(self, kind: TableKind, columns: list[str] | None = None) -> pa.Table:
        table = read_view(self.location, kind, columns).table
        if table is None:
            table = (trials_schema() if kind is TRIALS else EPOCHS_SCHEMA).empty_table()
        if columns is not None:
            table = table.select([c for c in columns if c in table.column_names])
        return table

    def without_mlflow_run(self) -> dict[str, Any]:
        """{trial id: finished_at} of the stored trials with no MLflow run id: MLflow failed
        as they finished, so a resumed sweep sends them again (keeping their time)."""
        table = read_view(self.location, TRIALS,
                          columns=["trial_id", "mlflow_run_id", "finished_at"]).table
        if table is None:
            return {}
        table = table.filter(pc.is_null(table["mlflow_run_id"]))
        return dict(zip(table["trial_id"].to_pylist(), table["finished_at"].to_pylist()))

    def trial_ids(self, status: str | None = None) -> set[str]:
        """The stored trial ids: all of them, or those stored with ``status`` (completed |
        pruned | failed). A resumed sweep records every finished trial missing here."""
        table = read_view(self.location, TRIALS, columns=["trial_id", "status"]).table
        if table is None:
            return set()
        if status is not None:
            table = table.filter(pc.equal(table["status"], status))
        return set(table["trial_id"].to_pylist())


def _row_schema(row: dict[str, Any]) -> pa.Schema:
    """The param columns of one row, typed from values (for leaves TrialConfig lacks)."""
    return pa.schema([pa.field(k, arrow_type_for_value(v)) for k, v in row.items()
                      if k.startswith(PARAM_PREFIX)])


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas with dtypes that do not depend on the data: int columns are nullable
    Int64/Int32 and bools nullable boolean even when a column holds no null."""
    mapping = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(),
               pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=mapping.get)


def read_study_json(where: Location | str | os.PathLike) -> dict[str, Any] | None:
    location = Location.of(where)
    try:
        text = location.read_text(STUDY_FILE)
    except FileNotFoundError:
        return None
    return json.loads(text)
