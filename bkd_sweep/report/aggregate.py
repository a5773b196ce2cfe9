"""Seed aggregation: mean, sample std and count per configuration, and best-of selection.

Only completed trials enter an aggregate; pruned and failed trials are counted, not averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable, Literal

import pandas as pd

from bkd_sweep.report.data import norm_value, param_col, sort_key
from bkd_sweep.results import retried_failures

Mode = Literal["max", "min"]


@dataclass(frozen=True)
class Stat:
    """One configuration's metric over its seeds: mean, sample std (ddof=1; None if n=1), n,
    and the seed values themselves (a significance test needs them, not only the moments)."""

    mean: float
    std: float | None
    n: int
    others: tuple = ()  # values of the parameters a best-of selection chose over
    values: tuple[float, ...] = ()

    @classmethod
    def of(cls, values: list[float], others: tuple = ()) -> "Stat":
        n = len(values)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        return cls(mean=mean, std=std, n=n, others=others, values=tuple(values))


def keys_of(df: pd.DataFrame, paths: Iterable[str]) -> list[tuple]:
    """Row-wise tuples of the given parameters' values (missing -> None)."""
    cols = [[norm_value(v) for v in df[param_col(p)].tolist()] for p in paths]
    return list(zip(*cols)) if cols else [()] * len(df)


def group_stats(df: pd.DataFrame, paths: list[str], metric_col: str) -> dict[tuple, Stat]:
    """Stat per distinct value tuple of ``paths`` (seeds and other columns are pooled).
    Missing, NaN and infinite values are left out alike (see ``nonfinite_note``)."""
    groups: dict[tuple, list[float]] = {}
    for key, value in zip(keys_of(df, paths), df[metric_col].tolist()):
        value = norm_value(value)
        if value is None or not math.isfinite(value):
            continue
        groups.setdefault(key, []).append(float(value))
    return {k: Stat.of(v) for k, v in groups.items()}


def nonfinite_note(df: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    """Infinite values (a diverged run) of the metric ``columns`` of ``df``: left out of every
    mean as missing ones are, so n counts finite values; said, never silently."""
    counts = []
    for col in columns:
        if col in df.columns:
            values = pd.to_numeric(df[col], errors="coerce").astype("Float64")
            k = int(values.isin([math.inf, -math.inf]).sum())
            counts += [f"{k} of {col.removeprefix('metric.')}"] if k else []
    if not counts:
        return []
    return [f"Infinite values left out of the means, as missing values are (n counts finite "
            f"values only): {', '.join(counts)}."]


def best_per_cell(df: pd.DataFrame, cell_paths: list[str], other_paths: list[str],
                  metric_col: str, mode: Mode,
                  select: tuple[str, Mode] | None = None) -> dict[tuple, Stat]:
    """Per cell (values of ``cell_paths``), the ``metric_col`` Stat of the configuration over
    ``other_paths`` that ``select`` (column, mode) prefers by its mean over seeds: the
    study's objective, a val metric, so a test metric is shown, never chosen on. Without
    ``select`` (or for configurations with no value there, ranked last) the metric's own mean
    decides. Ties go to more seeds, then to the first configuration in value order."""
    paths = cell_paths + other_paths
    stats = group_stats(df, paths, metric_col)
    chosen_by = group_stats(df, paths, select[0]) if select else {}
    sign = -1.0 if (select[1] if select else mode) == "max" else 1.0
    own_sign = -1.0 if mode == "max" else 1.0

    def rank(key: tuple, stat: Stat) -> tuple:
        by = chosen_by.get(key)
        preference = ((0, sign * by.mean, -by.n) if by is not None
                      else (1, own_sign * stat.mean, -stat.n))
        return (tuple(sort_key(v) for v in key[:len(cell_paths)]), *preference,
                tuple(sort_key(v) for v in key[len(cell_paths):]))

    best: dict[tuple, Stat] = {}
    for key, stat in sorted(stats.items(), key=lambda kv: rank(*kv)):
        cell, others = key[:len(cell_paths)], key[len(cell_paths):]
        if cell not in best:
            best[cell] = replace(stat, others=others)
    return best


def excluded_counts(trials: pd.DataFrame) -> tuple[int, int]:
    """(pruned, failed) trials among ``trials``: excluded from every aggregate. A failed run
    whose (configuration, seed) completed in another run (a retry) dropped nothing: not
    counted (``retried_failures``)."""
    status = trials["status"]
    failed = int((status == "failed").sum()) - len(retried_failures(trials))
    return int((status == "pruned").sum()), failed


def mean_of(df: pd.DataFrame, col: str) -> float | None:
    """Mean of the non-missing values of a column, or None."""
    if col not in df.columns:
        return None
    values = [float(v) for v in (norm_value(x) for x in df[col].tolist()) if v is not None]
    return math.fsum(values) / len(values) if values else None
