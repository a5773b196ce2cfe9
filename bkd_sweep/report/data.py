"""Read one study's results (Parquet + study.json) into a typed value the report works from.

The report reads only ``results/<study>/{trials,epochs}.parquet`` and ``study.json`` (schema
version 1, see the tracking stage), never MLflow, so a copy of that folder is enough.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from bkd_sweep.study import CategoricalParam, Study

SCHEMA_VERSION = 1
STATUSES = ("completed", "pruned", "failed")
TRIAL_COLUMNS = ("trial_id", "status", "seed")
EPOCH_COLUMNS = ("trial_id", "epoch", "metric.top1")
# metrics shown as percentages: fixed two decimals; everything else gets significant digits
PERCENT_METRICS = frozenset({"top1", "top5", "final_top1", "final_top5", "teacher_top1"})


@dataclass(frozen=True)
class ResultsData:
    """One study's trials (one row each), epochs (one row per trial and epoch) and schema."""

    study: Study
    trials: pd.DataFrame
    epochs: pd.DataFrame

    @property
    def config_keys(self) -> list[str]:
        """Searched parameter paths (a configuration = these values; seeds are aggregated)."""
        return [p for p in self.study.search.params if p != "seed" and param_col(p) in self.trials]

    @property
    def completed(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == "completed"]

    def status_counts(self) -> dict[str, int]:
        counts = self.trials["status"].value_counts()
        return {s: int(counts.get(s, 0)) for s in STATUSES}

    def order(self, path: str, values: list[Any]) -> list[Any]:
        """A fixed order for a parameter's values: the study's declared order, then sorted."""
        spec = self.study.search.params.get(path)
        declared = list(spec.values) if isinstance(spec, CategoricalParam) else []
        present = _unique(values)
        first = [v for v in declared if any(_same(v, p) for p in present)]
        rest = [v for v in present if not any(_same(v, d) for d in first)]
        return first + sorted(rest, key=_sort_key)

    def metric_col(self, name: str) -> str:
        """Resolve a metric name (``top1``) to its trials column (``metric.top1``)."""
        for col in (f"metric.{name}", name):
            if col in self.trials.columns:
                return col
        known = sorted(c.removeprefix("metric.") for c in self.trials.columns
                       if c.startswith("metric.")) + ["wall_seconds", "device_seconds"]
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(known)}")


def param_col(path: str) -> str:
    return path if path.startswith("param.") else f"param.{path}"


def _unique(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if not any(_same(v, o) for o in out):
            out.append(v)
    return out


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _same(a: Any, b: Any) -> bool:
    if is_missing(a) or is_missing(b):
        return is_missing(a) and is_missing(b)
    if isinstance(a, bool) != isinstance(b, bool):  # True == 1 in Python; not as a label
        return False
    return a == b


def _sort_key(value: Any) -> tuple:
    """Numbers numerically, then strings, then missing values; total and deterministic."""
    if is_missing(value):
        return (3, 0, "")
    if isinstance(value, bool):
        return (0, int(value), "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0, str(value))


def format_value(value: Any) -> str:
    """A parameter value as a table label: 0.15 -> '0.15', 4 -> '4', None -> 'none'."""
    if is_missing(value):
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _python(value: Any) -> Any:
    """numpy scalars -> Python scalars, so labels and comparisons behave the same everywhere."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value


def _read_parquet(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    frame = pq.read_table(path).to_pandas()
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)} (not a bkd-sweep table?)")
    if "schema_version" in frame.columns and len(frame):
        versions = sorted({int(v) for v in frame["schema_version"].dropna()})
        if versions and versions != [SCHEMA_VERSION]:
            raise ValueError(f"{path}: schema_version {versions} unsupported; this report reads "
                             f"version {SCHEMA_VERSION}")
    return frame


def load_results_dir(results_dir: str | Path) -> ResultsData:
    """Read ``trials.parquet``, ``epochs.parquet`` (optional) and ``study.json`` of one study."""
    results_dir = Path(results_dir)
    study_file = results_dir / "study.json"
    if not study_file.exists():
        raise FileNotFoundError(f"{study_file}: no study.json (is this a results/<study>/ dir?)")
    study = Study.model_validate(json.loads(study_file.read_text(encoding="utf-8")))
    trials_file = results_dir / "trials.parquet"
    if not trials_file.exists():
        raise FileNotFoundError(f"{trials_file}: no trials table yet")
    trials = _read_parquet(trials_file, TRIAL_COLUMNS)
    bad = sorted(set(trials["status"].dropna()) - set(STATUSES))
    if bad:
        raise ValueError(f"{trials_file}: unknown status {bad}; expected one of {STATUSES}")
    for col in trials.columns:  # object columns of numpy scalars -> Python values
        if col.startswith("param.") and trials[col].dtype == object:
            trials[col] = trials[col].map(_python)
    epochs_file = results_dir / "epochs.parquet"
    if epochs_file.exists():
        epochs = _read_parquet(epochs_file, EPOCH_COLUMNS)
    else:
        epochs = pd.DataFrame({c: pd.Series(dtype="float64") for c in EPOCH_COLUMNS})
    sort_cols = [c for c in ("trial_number", "trial_id") if c in trials.columns]
    trials = trials.sort_values(sort_cols, kind="stable").reset_index(drop=True)
    epochs = epochs.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)
    return ResultsData(study=study, trials=trials, epochs=epochs)


def norm_value(value: Any) -> Any:
    """A hashable, comparable cell value: missing -> None, numpy scalars -> Python scalars."""
    value = _python(value)
    return None if is_missing(value) else value


def sort_key(value: Any) -> tuple:
    """The public face of the value order used for rows, columns and configurations."""
    return _sort_key(value)
