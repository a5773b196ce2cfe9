"""Pareto front of configurations (compute first, render later): typed value, no drawing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from bkd_sweep.report.aggregate import group_stats, keys_of
from bkd_sweep.report.data import ResultsData, param_col
from bkd_sweep.config import ParetoSpec

Mode = Literal["min", "max"]


@dataclass(frozen=True)
class ParetoFront:
    """Points (index 0..n-1) and the positions of the non-dominated ones, by x ascending.

    A point is dominated when another is at least as good on both axes and strictly better on
    one; identical points do not dominate each other; points with a missing x or y never are
    on the front. ``chosen_on``: the columns dominance was judged on (modes x_mode, y_mode)
    when they are not (x, y), e.g. val top-1 selects while y shows the same points' test top-1.
    """

    points: pd.DataFrame
    x: str
    y: str
    x_mode: Mode
    y_mode: Mode
    front: tuple[int, ...]
    chosen_on: tuple[str, str] | None = None

    def on_front(self) -> list[bool]:
        members = set(self.front)
        return [i in members for i in range(len(self.points))]

    def front_points(self) -> pd.DataFrame:
        return self.points.iloc[list(self.front)]


def pareto_front(df: pd.DataFrame, x: str, y: str, x_mode: Mode = "min",
                 y_mode: Mode = "max", chosen_on: tuple[str, str] | None = None) -> ParetoFront:
    """Non-dominated rows of ``df`` on columns x and y (or on ``chosen_on``), in O(n log n).

    Both axes are turned into "smaller is better" (a, b); after sorting by (a, b), a point is
    dominated iff an earlier point has a smaller b, or the same b with a smaller a.
    """
    for mode in (x_mode, y_mode):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    chosen_on = None if chosen_on is None or tuple(chosen_on) == (x, y) else tuple(chosen_on)
    judged = chosen_on or (x, y)
    for col in (x, y, *judged):
        if col not in df.columns:
            raise ValueError(f"no column {col!r}; columns: {', '.join(map(str, df.columns))}")
    points = df.reset_index(drop=True)
    a = _floats(points[judged[0]])
    b = _floats(points[judged[1]])
    a = a if x_mode == "min" else -a
    b = -b if y_mode == "max" else b
    shown = np.isnan(_floats(points[x])) | np.isnan(_floats(points[y]))  # drawn, or not on it
    valid = np.flatnonzero(~(np.isnan(a) | np.isnan(b) | shown))
    order = valid[np.lexsort((b[valid], a[valid]))]  # by a, then b (stable)
    front: list[int] = []
    best_b = np.inf
    best_a = np.inf  # smallest a among points reaching best_b (the first one to reach it)
    for i in order:
        if b[i] < best_b:
            best_b, best_a = b[i], a[i]
            front.append(int(i))
        elif b[i] == best_b and a[i] == best_a:  # an identical point: not dominated
            front.append(int(i))
    x_vals = _floats(points[x])
    front.sort(key=lambda i: (x_vals[i], i))
    return ParetoFront(points=points, x=x, y=y, x_mode=x_mode, y_mode=y_mode,
                       front=tuple(front), chosen_on=chosen_on)


def _floats(column: pd.Series) -> np.ndarray:
    """Numbers as float64 with NaN for missing (nullable Int64/Float64 columns included)."""
    return pd.to_numeric(column, errors="coerce").astype("Float64").to_numpy(
        dtype=float, na_value=np.nan)


def pareto_group_paths(data: ResultsData, spec: ParetoSpec) -> list[str]:
    """Parameters a Pareto point is defined by: the configuration, plus color and label."""
    paths: list[str] = []
    for p in [*data.config_keys, spec.color, spec.label]:
        if p and p not in paths and param_col(p) in data.trials.columns:
            paths.append(p)
    return paths


def front_selection(data: ResultsData, spec: ParetoSpec) -> tuple[str, Mode] | None:
    """(column, mode) the front is chosen on in place of y when y is a test metric: test is
    measured, never chosen on. ``data.selection()`` (the study's objective, else val top-1)
    when it is a val accuracy other than x, else val top-1. None when y is no test metric (it
    may choose itself) or the results have no val metric (the front falls back to test)."""
    x_col, y_col = data.metric_col(spec.x), data.metric_col(spec.y)
    if not y_col.startswith("metric.test_"):
        return None
    done = data.completed
    for col, mode in filter(None, [data.selection(), ("metric.val_top1", "max")]):
        if (col != x_col and ("top1" in col or "top5" in col) and col in done
                and not col.startswith("metric.test_") and done[col].notna().any()):
            return col, "min" if mode == "min" else "max"
    return None


def pareto_points(data: ResultsData, spec: ParetoSpec) -> tuple[pd.DataFrame, list[str]]:
    """One row per configuration: mean x, mean y (and y's std, n) over completed seeds with a
    finite x and y, and the mean of the column the front is chosen on (``front_selection``)."""
    x_col, y_col = data.metric_col(spec.x), data.metric_col(spec.y)
    select = front_selection(data, spec)
    paths = pareto_group_paths(data, spec)
    done = data.completed
    done = done[np.isfinite(_floats(done[x_col])) & np.isfinite(_floats(done[y_col]))]
    xs, ys = group_stats(done, paths, x_col), group_stats(done, paths, y_col)
    by = group_stats(done, paths, select[0]) if select else {}
    keys = sorted(set(keys_of(done, paths)), key=data.config_order(paths))
    records = []
    for key in keys:
        rec = {param_col(p): v for p, v in zip(paths, key)}
        rec.update({x_col: xs[key].mean, y_col: ys[key].mean, "y_std": ys[key].std,
                    "n": ys[key].n})
        if select:
            rec[select[0]] = by[key].mean if key in by else np.nan
        records.append(rec)
    columns = [param_col(p) for p in paths] + [x_col, y_col, "y_std", "n"]
    columns += [select[0]] if select else []
    return pd.DataFrame.from_records(records, columns=columns), paths


def configuration_front(data: ResultsData, spec: ParetoSpec, x_mode: Mode,
                        y_mode: Mode) -> tuple[ParetoFront, list[str]]:
    """The front over configuration means, chosen on x and the selection metric (val) when
    y is a test metric, with x and y (test) as its shown axes; and the group paths."""
    points, paths = pareto_points(data, spec)
    x_col, y_col = data.metric_col(spec.x), data.metric_col(spec.y)
    select = front_selection(data, spec)
    front = pareto_front(points, x_col, y_col, x_mode=x_mode,
                         y_mode=select[1] if select else y_mode,
                         chosen_on=(x_col, select[0]) if select else None)
    return front, paths


def front_note(front: ParetoFront) -> str:
    """What the front was chosen on, said under the Pareto table and the figure."""
    x, y = (c.removeprefix("metric.") for c in (front.x, front.y))
    if front.chosen_on is not None:
        by_x, by_y = (c.removeprefix("metric.") for c in front.chosen_on)
        return (f"The Pareto front is chosen on the mean {by_y} ({front.y_mode}) and {by_x} "
                f"({front.x_mode}) over seeds, so val selects; shown is each configuration's "
                f"mean {y}, measured once (a point off the front may show a better {y}).")
    if front.y.startswith("metric.test_"):
        return (f"The Pareto front is chosen on the mean {y} ({front.y_mode}) and {x} "
                f"({front.x_mode}): the results have no val metric to select on, so it is "
                "selected on test and optimistically biased.")
    return f"The Pareto front: mean {y} ({front.y_mode}) and {x} ({front.x_mode}) over seeds."
