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
    on the front.
    """

    points: pd.DataFrame
    x: str
    y: str
    x_mode: Mode
    y_mode: Mode
    front: tuple[int, ...]

    def on_front(self) -> list[bool]:
        members = set(self.front)
        return [i in members for i in range(len(self.points))]

    def front_points(self) -> pd.DataFrame:
        return self.points.iloc[list(self.front)]


def pareto_front(df: pd.DataFrame, x: str, y: str, x_mode: Mode = "min",
                 y_mode: Mode = "max") -> ParetoFront:
    """Non-dominated rows of ``df`` on columns x and y, in O(n log n).

    Both axes are turned into "smaller is better" (a, b); after sorting by (a, b), a point is
    dominated iff an earlier point has a smaller b, or the same b with a smaller a.
    """
    for mode in (x_mode, y_mode):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    for col in (x, y):
        if col not in df.columns:
            raise ValueError(f"no column {col!r}; columns: {', '.join(map(str, df.columns))}")
    points = df.reset_index(drop=True)
    a = _floats(points[x])
    b = _floats(points[y])
    a = a if x_mode == "min" else -a
    b = -b if y_mode == "max" else b
    valid = np.flatnonzero(~(np.isnan(a) | np.isnan(b)))
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
                       front=tuple(front))


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


def pareto_points(data: ResultsData, spec: ParetoSpec) -> tuple[pd.DataFrame, list[str]]:
    """One row per configuration: mean x, mean y (and y's std, n) over completed seeds."""
    x_col, y_col = data.metric_col(spec.x), data.metric_col(spec.y)
    paths = pareto_group_paths(data, spec)
    done = data.completed
    done = done[done[x_col].notna() & done[y_col].notna()]
    xs, ys = group_stats(done, paths, x_col), group_stats(done, paths, y_col)
    keys = sorted(set(keys_of(done, paths)), key=data.config_order(paths))
    records = []
    for key in keys:
        rec = {param_col(p): v for p, v in zip(paths, key)}
        rec.update({x_col: xs[key].mean, y_col: ys[key].mean, "y_std": ys[key].std,
                    "n": ys[key].n})
        records.append(rec)
    columns = [param_col(p) for p in paths] + [x_col, y_col, "y_std", "n"]
    return pd.DataFrame.from_records(records, columns=columns), paths
