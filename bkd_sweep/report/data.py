"""Read one study's results (Parquet + study.json) into a typed value the report works from.

The report reads only ``results/<study>/{trials,epochs}.parquet`` and ``study.json`` (schema
version 1, through ``bkd_sweep.results.load``), never MLflow: a copy of that folder is enough.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bkd_sweep.config import CategoricalParam, Study
from bkd_sweep.results import configuration_params, load, repeated_runs
from bkd_sweep.storage import Location

STATUSES = ("completed", "pruned", "failed")
TRIAL_COLUMNS = ("trial_id", "status", "seed")
EPOCH_COLUMNS = ("trial_id", "epoch", "metric.top1")
# metrics shown as percentages: fixed two decimals; everything else gets significant digits
PERCENT_METRICS = frozenset({"top1", "top5", "final_top1", "final_top5", "val_top1", "test_top1",
                             "test_top5", "teacher_top1", "teacher_val_top1",
                             "teacher_test_top1"})
# what a study or an older results file calls top1 is the reported (test) number today
REPORTED_AS = {"top1": "test_top1", "top5": "test_top5", "teacher_top1": "teacher_test_top1"}


@dataclass(frozen=True)
class ResultsData:
    """One study's trials (one row each), epochs (one row per trial and epoch) and schema."""

    study: Study
    trials: pd.DataFrame
    epochs: pd.DataFrame
    stopped_by: str | None = None  # the budget limit that ended the sweep (sweep.json)
    teacher_device_hours: float = 0.0  # teachers prepared before the trials (sweep.json)

    @property
    def config_keys(self) -> list[str]:
        """Searched parameter paths, linked groups included (a configuration = these values;
        seeds are aggregated)."""
        return [p for p in configuration_params(self.study.search)
                if param_col(p) in self.trials]

    @cached_property  # read by every table, the Pareto plot and the notes: built once
    def completed(self) -> pd.DataFrame:
        """Completed trials, one per (configuration, seed): a seed run twice (Optuna records a
        completed trial without an objective value as FAIL, and --retry-failed runs it
        again) counts once, as its latest run."""
        done = self.trials[self.trials["status"] == "completed"]
        repeated = repeated_runs(done)
        return done.drop(index=repeated) if len(repeated) else done

    def selection(self) -> tuple[str, str] | None:
        """(column, mode) that picks a cell's configuration among several: the study's first
        objective (a val metric: test never selects); val top-1 (max) when the results lack
        the objective (``loss`` is no trials column); None when they lack both (a column with
        no value in any completed trial, as in results older than three splits, is lacking)."""
        objectives = self.study.search.objectives
        for metric, mode in [*((o.metric, o.mode) for o in objectives[:1]), ("val_top1", "max")]:
            try:
                col = self.metric_col(metric)
            except ValueError:
                continue
            if self.completed[col].notna().any():
                return col, mode
        return None

    def selects_by_objective(self) -> bool:
        """Whether ``selection()`` is the study's own first objective (not a stand-in)."""
        select, objective = self.selection(), self.study.search.objectives[0].metric
        return select is not None and select[0].removeprefix("metric.") == objective

    def selection_note(self) -> str:
        """How the reported top-1 was selected, said once under every accuracy table."""
        done = self.completed
        rules = sorted({r for r in done.get("split_rule", pd.Series(dtype=str)).dropna()})
        on_test = done.get("selection_on_test", pd.Series(dtype=bool)).fillna(False)
        if len(done) and bool(on_test.all()):
            return ("Selected on the test split (the papers' practice: data.val_fraction 0, or "
                    "results older than three splits): top-1 is optimistically biased. "
                    + " ".join(rules))
        select = self.study.train.select
        on_test_note = (f"{int(on_test.sum())} of {len(done)} completed trials were selected on "
                        "the test split (data.val_fraction 0, or results older than three "
                        "splits): their top-1 is optimistically biased. "
                        if bool(on_test.any()) else "")
        return (f"top-1 is test accuracy, measured once on the checkpoint selected on val "
                f"(train.select: {select}); energy is measured on the same weights. "
                + on_test_note + " ".join(rules)).strip()

    def teacher_note(self) -> str | None:
        """The teacher's measured val/test top-1, and a flag when it is no better than the
        undistilled students it is meant to teach."""
        done = self.completed
        test = _mean(done, "metric.teacher_test_top1")
        if test is None:
            return None
        val = _mean(done, "metric.teacher_val_top1")
        text = f"Teacher {self.study.teacher.arch}: test top-1 {test:.2f}" + (
            f", val {val:.2f}" if val is not None else "") + "."
        mode = param_col("distill.mode")
        if mode in done:
            students = _mean(done[done[mode] == "none"], "metric.test_top1")
            if students is not None and test <= students:
                text += (f" Warning: the teacher is no better than the undistilled (none) "
                         f"students ({students:.2f}); train a stronger teacher "
                         "(teacher.train) before reading distillation gains.")
        return text

    def status_counts(self) -> dict[str, int]:
        counts = self.trials["status"].value_counts()
        return {s: int(counts.get(s, 0)) for s in STATUSES}

    def order(self, path: str, values: list[Any]) -> list[Any]:
        """A fixed order for a parameter's values: the study's declared order, then sorted."""
        spec = self.study.search.params.get(path)
        declared = list(spec.values) if isinstance(spec, CategoricalParam) else \
            self.study.linked_params().get(path, [])  # a linked group: its labels
        present = _distinct(values)
        first = [v for v in declared if value_key(norm_value(v)) in present]
        for v in first:
            present.pop(value_key(norm_value(v)), None)
        return first + sorted(present.values(), key=sort_key)

    def config_order(self, paths: list[str]) -> Callable[[tuple], tuple]:
        """A sort key for configurations (value tuples of ``paths``): each value's position
        in ``order`` (values it lacks go last), then the value itself. Lookups, not scans:
        10,000 trials hold thousands of configurations."""
        ranks: list[tuple[dict[tuple, int], int]] = []
        for p in paths:
            order = self.order(p, self.trials[param_col(p)].tolist())
            first: dict[tuple, int] = {}
            for i, value in enumerate(order):
                first.setdefault(sort_key(value), i)
            ranks.append((first, len(order)))

        def key(config: tuple) -> tuple:
            return tuple((first.get(sort_key(v), missing), sort_key(v))
                         for (first, missing), v in zip(ranks, config))

        return key

    def metric_col(self, name: str) -> str:
        """Resolve a metric name to its trials column: ``top1`` is the reported top-1, i.e.
        ``metric.test_top1`` (schema v1 files are upgraded to the same column on load)."""
        name = REPORTED_AS.get(name, name)
        known = sorted(c.removeprefix("metric.") for c in self.trials.columns
                       if c.startswith("metric.")) + ["wall_seconds", "device_seconds"]
        for col in (f"metric.{name}", name):
            if col not in self.trials.columns:
                continue
            dtype = self.trials[col].dtype
            if not pd.api.types.is_numeric_dtype(dtype):  # device, status, finished_at
                kind = "text" if pd.api.types.is_string_dtype(dtype) else str(dtype)
                raise ValueError(f"metric {name!r} is a {kind} column, not a number; "
                                 f"available: {', '.join(known)}")
            return col
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(known)}")


def val_note(metric: str, metric_col: str) -> list[str]:
    """A table of a val accuracy says so: the split that selected the checkpoint (and the
    configuration) is no unbiased estimate; test top-1 is the number to report."""
    if metric_col not in ("metric.val_top1", "metric.final_top1"):
        return []
    return [f"{metric} is measured on the val split, which selected the checkpoint and the "
            "configuration: optimistically biased; report test top-1 (metric top1)."]


def param_col(path: str) -> str:
    return path if path.startswith("param.") else f"param.{path}"


def _distinct(values: list[Any]) -> dict[Any, Any]:
    """Distinct values (normalized) by ``value_key``, first occurrence first."""
    seen: dict[Any, Any] = {}
    for v in values:
        v = norm_value(v)
        seen.setdefault(value_key(v), v)
    return seen


def value_key(value: Any) -> Any:
    """A hashable key for "the same value" as a table label: missing values are one, True
    is not 1, 1 is 1.0 (unhashable values: by their repr)."""
    if is_missing(value):
        return ("missing",)
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return (isinstance(value, bool), value)


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def sort_key(value: Any) -> tuple:
    """The value order of rows, columns and configurations: booleans, numbers numerically,
    strings, then missing values; total and deterministic."""
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


def _check_columns(frame: pd.DataFrame, required: tuple[str, ...], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {', '.join(missing)} (not a bkd-sweep table?)")


def load_results_dir(results_dir: "str | Path | Location") -> ResultsData:
    """Read one study's folder (a local path, or a ``Location``: a local or shared folder or
    an object-store prefix such as ``s3://bucket/prefix/<study>``) through
    ``bkd_sweep.results.load`` (the Parquet reader, which checks the schema version) and
    validate its study.json."""
    location = Location.of(results_dir)
    # as the caller named it: a local path unchanged (relative stays relative), else the URI
    where = location.uri if isinstance(results_dir, Location) or not location.is_local \
        else str(Path(results_dir))
    if not location.is_dir():
        raise FileNotFoundError(f"{where}: no such results directory")
    results = load(location)
    if results.study is None:
        missing = _shown(where, location, "study.json")
        raise FileNotFoundError(f"{missing}: missing (the report takes its table specs and "
                                "seeds from it)")
    study = Study.model_validate(results.study)
    trials, epochs = results.trials, results.read_epochs(list(EPOCH_COLUMNS))
    _check_columns(trials, TRIAL_COLUMNS, _shown(where, location, "trials.parquet"))
    _check_columns(epochs, EPOCH_COLUMNS, _shown(where, location, "epochs.parquet"))
    bad = sorted(set(trials["status"].dropna()) - set(STATUSES))
    if bad:
        raise ValueError(f"{where}: unknown trial status {bad}; expected one of {STATUSES}")
    sort_cols = [c for c in ("trial_number", "trial_id") if c in trials.columns]
    trials = trials.sort_values(sort_cols, kind="stable").reset_index(drop=True)
    epochs = _in_order(epochs, "trial_id", "epoch")
    info = _sweep_info(location)
    teacher_seconds = sum(float(t.get("device_seconds", 0.0)) for t in info.get("teachers", []))
    return ResultsData(study=study, trials=trials, epochs=epochs,
                       stopped_by=info.get("stopped_by"),
                       teacher_device_hours=teacher_seconds / 3600)


def _shown(where: str, location: Location, name: str) -> str:
    """A file of the folder shown as ``where``: a path locally, else a URI."""
    return str(Path(where) / name) if location.is_local else posixpath.join(where, name)


def _in_order(frame: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """``frame`` sorted by (first, second), stable; a table already in that order (a
    snapshot is written so) is only checked, not sorted again (3 M rows at 10,000 trials)."""
    if frame[first].is_monotonic_increasing:
        a = frame[first].to_numpy()
        b = frame[second].to_numpy(dtype="float64", na_value=math.nan)
        if not ((a[1:] == a[:-1]) & (b[1:] < b[:-1])).any():
            return frame.reset_index(drop=True)
    return frame.sort_values([first, second], kind="stable").reset_index(drop=True)


def _sweep_info(location: Location) -> dict[str, Any]:
    """sweep.json (written by the tracker), or {} when absent or unreadable."""
    import json

    try:
        return json.loads(location.read_text("sweep.json"))
    except (OSError, ValueError):
        return {}


def norm_value(value: Any) -> Any:
    """A hashable, comparable cell value: missing -> None, numpy scalars -> Python scalars."""
    kind = type(value)
    if kind is str or kind is int or kind is bool:  # most cells (.tolist() gives these)
        return value
    if kind is float:
        return None if value != value else value
    value = _python(value)
    return None if is_missing(value) else value


def _mean(df: pd.DataFrame, col: str) -> float | None:
    if col not in df or df[col].dropna().empty:
        return None
    return float(df[col].dropna().astype(float).mean())
