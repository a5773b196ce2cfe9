"""Is a distillation mode better than the baseline mode? Seed values in, a Comparison out.

Welch's two-sided t-test (unequal variances; the seed spread of a distilled student need not
match the baseline's) decides the significance mark; a percentile bootstrap of the mean
difference gives its 95% interval. With three seeds a side has only ten distinct resamples,
so the bootstrap interval is narrow and is shown beside the test, never instead of it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats as sps

from bkd_sweep.report.aggregate import Stat
from bkd_sweep.report.data import format_value, sort_key

MODE_PATH = "distill.mode"
SIG_MARK = "*"  # the renderers draw it as a superscript
ALPHA = 0.05
MIN_SEEDS_TEST = 2  # a t-test needs a sample variance on each side
MIN_SEEDS_CLAIM = 3  # below this a p-value is reported but no significance is claimed
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # one fixed stream per comparison: the same Parquet gives the same bytes


@dataclass(frozen=True)
class Comparison:
    """``mode`` vs ``baseline`` in one table cell: diff = mean(mode) - mean(baseline), its
    bootstrap interval, the Welch p-value (None: no test possible) and the seed counts."""

    mode: str
    baseline: str
    diff: float | None  # None when a side has no value
    ci_low: float | None
    ci_high: float | None
    p: float | None
    n: int
    n_baseline: int
    significant: bool  # p < alpha with at least MIN_SEEDS_CLAIM seeds on each side
    where: tuple[Any, ...] = ()  # the cell's other keys (e.g. its column value)

    @property
    def too_few_seeds(self) -> bool:
        """A test was possible but the seed count is too small for a significance claim."""
        return self.p is not None and min(self.n, self.n_baseline) < MIN_SEEDS_CLAIM

    @property
    def no_test_reason(self) -> str | None:
        """Why no p-value exists (fewer than two seeds, or no spread on either side)."""
        if self.p is not None:
            return None
        if min(self.n, self.n_baseline) < MIN_SEEDS_TEST:
            return f"n = {self.n} vs {self.n_baseline}"
        return "zero variance on both sides"


def welch_p(values: Sequence[float], baseline: Sequence[float]) -> float | None:
    """Two-sided Welch t-test p-value; None with under two values a side or no spread at all.

    t = (m1 - m2) / sqrt(s1²/n1 + s2²/n2), Welch-Satterthwaite degrees of freedom.
    """
    if min(len(values), len(baseline)) < MIN_SEEDS_TEST:
        return None
    if np.ptp(values) == 0 and np.ptp(baseline) == 0:  # t = ±inf or nan: not a test
        # (ptp, not var: the variance of [10.7] * 3 is 3e-30 in floating point)
        return None
    with warnings.catch_warnings():  # nearly equal values: scipy warns, the result stands
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(sps.ttest_ind(values, baseline, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def bootstrap_interval(values: Sequence[float], baseline: Sequence[float], *,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile bootstrap interval of mean(values) - mean(baseline), each side resampled
    with replacement at its own size; None with under two values a side."""
    if min(len(values), len(baseline)) < MIN_SEEDS_TEST:
        return None
    rng = np.random.default_rng(seed)
    a, b = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    means_a = a[rng.integers(0, len(a), size=(resamples, len(a)))].mean(axis=1)
    means_b = b[rng.integers(0, len(b), size=(resamples, len(b)))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means_a - means_b, [tail, 100 - tail])
    return float(low), float(high)


def holm_adjusted(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the k-th smallest times
    (m - k + 1), made monotone, capped at 1. Controls the family-wise error over a table's
    m tests; p_adj < alpha is what a corrected claim needs."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def compare(values: Sequence[float], baseline_values: Sequence[float], mode: str,
            baseline: str, where: tuple[Any, ...] = (), alpha: float = ALPHA) -> Comparison:
    """Test and interval of ``values`` (one cell's seeds) against the baseline cell's seeds."""
    n, n_base = len(values), len(baseline_values)
    diff = (math.fsum(values) / n - math.fsum(baseline_values) / n_base
            if n and n_base else None)
    p = welch_p(values, baseline_values)
    interval = bootstrap_interval(values, baseline_values)
    low, high = interval if interval is not None else (None, None)
    significant = p is not None and p < alpha and min(n, n_base) >= MIN_SEEDS_CLAIM
    return Comparison(mode=mode, baseline=baseline, diff=diff, ci_low=low, ci_high=high, p=p,
                      n=n, n_baseline=n_base, significant=significant, where=where)


def _same(a: Any, b: Any) -> bool:
    return sort_key(a) == sort_key(b)  # 4 == 4.0, None == NaN, as the table's lookups


def compare_cells(cells: dict[tuple, Stat], axis: int, baseline: Any) -> dict[tuple, Comparison]:
    """Each cell against the cell that has ``baseline`` at position ``axis`` of its key and
    the same other keys. Baseline cells are not compared; a missing baseline cell gives a
    comparison with n_baseline = 0 (reported as untestable)."""
    def rest(key: tuple) -> tuple:
        return key[:axis] + key[axis + 1:]

    out: dict[tuple, Comparison] = {}
    for key, stat in cells.items():
        if _same(key[axis], baseline):
            continue
        base = next((s for k, s in cells.items() if _same(k[axis], baseline)
                     and all(_same(x, y) for x, y in zip(rest(k), rest(key)))), None)
        out[key] = compare(stat.values, base.values if base else (), str(key[axis]),
                           str(baseline), rest(key))
    return out


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def significance_notes(comparisons: Sequence[Comparison], baseline: str, within: str,
                       where_paths: Sequence[str], signed: Callable[[float], str],
                       best_of: Sequence[str] = ()) -> list[str]:
    """A table's footnotes on its comparisons: the test, baseline, alpha and mark; each
    difference with its interval and p (``signed`` formats a difference); the cells whose
    seeds allow no test or no claim; the optimism of testing best-of selections."""
    if not comparisons:
        return []

    def label(c: Comparison) -> str:
        return ", ".join(format_value(v) for v in (c.mode, *c.where))

    notes = [f"Significance at α = {ALPHA:g} ({SIG_MARK} marks p < {ALPHA:g}): two-sided "
             "Welch t-test of a "
             f"cell's seeds against {MODE_PATH} = {baseline} {within}, not corrected for "
             f"multiple comparisons (Holm-adjusted p over the table's tests is listed); "
             f"interval: {CONFIDENCE:.0%} percentile bootstrap of the mean difference "
             f"({BOOTSTRAP_RESAMPLES:,} resamples)."]
    tested = [c for c in comparisons if c.p is not None]
    if tested:
        holm = holm_adjusted([c.p for c in tested])
        notes.append(f"Difference to {baseline} [{CONFIDENCE:.0%} CI], Welch p, Holm p, per "
                     f"{', '.join([MODE_PATH, *where_paths])}: " + "; ".join(
                         f"{label(c)}: {signed(c.diff)} [{signed(c.ci_low)}, "
                         f"{signed(c.ci_high)}], {p_text(c.p)}, Holm {p_text(h)}"
                         for c, h in zip(tested, holm)) + ".")
    few = [c for c in comparisons if c.too_few_seeds]
    if few:
        notes.append(f"n too small for a significance claim (under {MIN_SEEDS_CLAIM} seeds on "
                     "a side; not marked): " + "; ".join(
                         f"{label(c)} (n = {c.n} vs {c.n_baseline})" for c in few) + ".")
    untested = [c for c in comparisons if c.p is None]
    if untested:
        notes.append("No test possible: " + "; ".join(
            f"{label(c)} ({c.no_test_reason})" for c in untested) + ".")
    if best_of:
        notes.append(f"Tested cells are best-of selections over {', '.join(best_of)}, so "
                     "their p-values and intervals are optimistic.")
    return notes
