"""Significance against the baseline mode: Welch p and bootstrap interval vs hand computation,
the seed-count rules, and the mark in tables built from fixtures with and without an effect."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from bkd_sweep.report.data import load_results_dir
from bkd_sweep.report.render import render
from bkd_sweep.report.stats import bootstrap_interval, compare, holm_adjusted, p_text, welch_p
from bkd_sweep.report.tables import ablation_table, main_results_table
from bkd_sweep.config import TableSpec

CLEAR_MIXED, CLEAR_NONE = [98.0, 98.2, 98.1], [90.0, 90.3, 90.1]
SPEC = TableSpec(name="ablation", rows="distill.mode")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _var(xs: list[float]) -> float:
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def _t_two_sided_p(t: float, df: float) -> float:
    """1 - 2 * integral_0^|t| of the Student t density (Simpson's rule), real df allowed."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    steps, h = 20_000, abs(t) / 20_000
    ys = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
    area = h / 3 * (ys[0] + ys[-1] + 4 * sum(ys[1:-1:2]) + 2 * sum(ys[2:-1:2]))
    return 1 - 2 * area


def _welch_by_hand(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(t, Welch-Satterthwaite df, two-sided p)."""
    va, vb = _var(a) / len(a), _var(b) / len(b)
    t = (_mean(a) - _mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, df, _t_two_sided_p(t, df)


def test_welch_p_matches_hand_computation() -> None:
    a, b = [1.0, 2.0, 4.0], [3.0, 5.0, 6.0, 8.0]
    t, df, p = _welch_by_hand(a, b)
    # var a = 7/3, var b = 13/3: t = -3.1667 / sqrt(7/9 + 13/12), df between 4 and 5
    assert t == pytest.approx(-2.3212, abs=1e-4) and df == pytest.approx(4.993, abs=1e-3)
    assert welch_p(a, b) == pytest.approx(p, abs=1e-7)
    assert welch_p(b, a) == pytest.approx(p, abs=1e-7)  # two-sided
    # unequal variances matter: Student's pooled test (df = 5) gives another p
    pooled = (2 * _var(a) + 3 * _var(b)) / 5
    t_pooled = (_mean(a) - _mean(b)) / math.sqrt(pooled * (1 / 3 + 1 / 4))
    assert abs(welch_p(a, b) - _t_two_sided_p(t_pooled, 5)) > 5e-3
    t, df, p = _welch_by_hand(CLEAR_MIXED, CLEAR_NONE)
    assert welch_p(CLEAR_MIXED, CLEAR_NONE) == pytest.approx(p, rel=1e-4) and p < 1e-4


def test_bootstrap_interval_is_deterministic_and_covers_the_difference() -> None:
    spread_a, spread_b = [x ** 2 for x in range(9)], [x ** 1.5 for x in range(9)]
    once = bootstrap_interval(spread_a, spread_b)
    assert once == bootstrap_interval(spread_a, spread_b)  # same bytes every run
    assert once != bootstrap_interval(spread_a, spread_b, seed=1)  # ... because seeded
    first = bootstrap_interval(CLEAR_MIXED, CLEAR_NONE)
    low, high = first
    true_diff = _mean(CLEAR_MIXED) - _mean(CLEAR_NONE)  # 7.9667
    # every resampled difference lies in [98.0 - 90.3, 98.2 - 90.0] = [7.7, 8.2]
    assert 7.7 <= low < true_diff < high <= 8.2
    # 3 values a side: 27 x 27 equally likely resample pairs, enumerated exactly; the
    # Monte Carlo percentiles sit next to the exact ones
    exact = [_mean(list(x)) - _mean(list(y))
             for x in itertools.product(CLEAR_MIXED, repeat=3)
             for y in itertools.product(CLEAR_NONE, repeat=3)]
    assert np.percentile(exact, 1.0) <= low <= np.percentile(exact, 4.0)
    assert np.percentile(exact, 96.0) <= high <= np.percentile(exact, 99.0)


def test_comparison_values_and_seed_count_rules() -> None:
    clear = compare(CLEAR_MIXED, CLEAR_NONE, "mixed", "none")
    assert clear.significant and clear.n == clear.n_baseline == 3
    assert clear.diff == pytest.approx(98.1 - 270.4 / 3)  # 7.9667
    assert (clear.ci_low, clear.ci_high) == bootstrap_interval(CLEAR_MIXED, CLEAR_NONE)
    one = compare([98.0], CLEAR_NONE, "mixed", "none")  # n < 2: no test, no interval
    assert one.p is None and one.ci_low is None and not one.significant
    assert one.no_test_reason == "n = 1 vs 3" and one.diff == pytest.approx(98.0 - 270.4 / 3)
    missing = compare(CLEAR_MIXED, [], "mixed", "none")
    assert missing.diff is None and missing.no_test_reason == "n = 3 vs 0"
    two = compare([98.0, 98.2], [90.0, 90.3], "mixed", "none")  # p tiny, n too small
    assert two.p < 0.01 and two.too_few_seeds and not two.significant
    flat = compare([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], "mixed", "none")
    assert flat.p is None and flat.no_test_reason == "zero variance on both sides"
    # 10.7 is not exact in binary: numpy's variance of [10.7] * 3 is 3e-30, not 0
    inexact = compare([10.7] * 3, [9.7] * 3, "mixed", "none")
    assert inexact.p is None and not inexact.significant
    none = compare([90.1, 90.0, 90.3], CLEAR_NONE, "mixed", "none")  # same values
    assert none.p == pytest.approx(1.0) and not none.significant and none.diff == 0


@pytest.fixture
def two_mode_table(two_mode_results_dir):
    """``two_mode_table(root, mixed, none, spec)``: the ablation table of two modes' seeds."""
    def table(root: Path, mixed: list[float], none: list[float], spec: TableSpec = SPEC):
        data = load_results_dir(two_mode_results_dir(root / "r", mixed, none))
        return ablation_table(data, spec, seeds_expected=None)
    return table


def test_table_marks_a_clear_effect(tmp_path: Path, two_mode_table) -> None:
    table = two_mode_table(tmp_path, CLEAR_MIXED, CLEAR_NONE)
    assert table.cell("mixed", "top1").significant
    assert not table.cell("none", "top1").significant
    (c,) = table.comparisons
    assert (c.mode, c.baseline, c.n, c.n_baseline) == ("mixed", "none", 3, 3)
    assert c.p == pytest.approx(_welch_by_hand(CLEAR_MIXED, CLEAR_NONE)[2], rel=1e-4)
    assert r"98.10 ± 0.10 (n=3)<sup>\*</sup>" in render(table, "md")
    assert r"98.10 $\pm$ 0.10 (n=3)$^{*}$" in render(table, "tex")
    assert '98.10 ± 0.10 (n=3)<sup class="sig">*</sup>' in render(table, "html")
    method = next(n for n in table.notes if n.startswith("Significance"))
    assert "Welch t-test" in method and "distill.mode = none" in method
    assert "α = 0.05" in method and "* marks p < 0.05" in method
    assert any(n.startswith("Difference to none [95% CI]") and "mixed: +7.97 [+" in n
               for n in table.notes)


def test_table_without_an_effect_has_no_mark(tmp_path: Path, two_mode_table) -> None:
    table = two_mode_table(tmp_path, [90.2, 89.9, 90.2], CLEAR_NONE)
    assert not any(c.significant for r in table.rows for c in r)
    assert table.comparisons[0].p > 0.5
    for fmt, mark in (("md", r"<sup>\*</sup>"), ("tex", "$^{*}$"), ("html", 'class="sig"')):
        assert mark not in render(table, fmt)
    assert any(n.startswith("Significance") for n in table.notes)  # the test is still said


def test_table_says_when_seeds_are_too_few(tmp_path: Path, two_mode_table) -> None:
    two = two_mode_table(tmp_path, [98.0, 98.2], [90.0, 90.3])
    assert two.comparisons[0].p < 0.05 and not two.cell("mixed", "top1").significant
    assert ("n too small for a significance claim (under 3 seeds on a side; not marked): "
            "mixed (n = 2 vs 2).") in two.notes
    one = two_mode_table(tmp_path / "one", [98.0], CLEAR_NONE)
    assert "No test possible: mixed (n = 1 vs 3)." in one.notes
    assert not any("Difference to" in n for n in one.notes)


def test_baseline_is_configurable_per_table(tmp_path: Path, two_mode_table) -> None:
    flipped = two_mode_table(tmp_path, CLEAR_MIXED, CLEAR_NONE,
                             SPEC.model_copy(update={"baseline": "mixed"}))
    assert flipped.cell("none", "top1").significant
    assert not flipped.cell("mixed", "top1").significant
    assert flipped.comparisons[0].diff == pytest.approx(-7.966667, abs=1e-5)
    off = two_mode_table(tmp_path / "off", CLEAR_MIXED, CLEAR_NONE,
                         SPEC.model_copy(update={"baseline": None}))
    assert off.comparisons == () and not any("Significance" in n for n in off.notes)
    assert not any(c.significant for r in off.rows for c in r)
    with pytest.raises(ValueError, match="baseline 'nnoe' is not a distill.mode"):
        two_mode_table(tmp_path / "typo", CLEAR_MIXED, CLEAR_NONE,
                       SPEC.model_copy(update={"baseline": "nnoe"}))


def test_fixture_tables_mark_exactly_the_significant_cells(fixture_results: Path) -> None:
    """report_fixtures.TOP1: logit and mixed beat none in both columns with 3 seeds each; bkd
    has 2 completed seeds (p < 0.05 all the same, but no claim)."""
    data = load_results_dir(fixture_results)
    table = ablation_table(data, TableSpec(name="ablation", rows="distill.mode",
                                           cols="student.arch"), seeds_expected=3)
    marked = {(r[0].text, table.header[j]) for r in table.rows
              for j, c in enumerate(r) if c.significant}
    assert marked == {("logit", "snn_a"), ("logit", "snn_b"), ("mixed", "snn_a"),
                      ("mixed", "snn_b")}
    by_cell = {(c.mode, *c.where): c for c in table.comparisons}
    # logit/snn_a vs none/snn_a: 73, 74, 75 vs 70, 71, 72 -> t = 3 / sqrt(2/3), df = 4
    t, df, p = _welch_by_hand([73.0, 74.0, 75.0], [70.0, 71.0, 72.0])
    assert df == pytest.approx(4.0) and by_cell[("logit", "snn_a")].p == pytest.approx(p)
    assert by_cell[("bkd", "snn_a")].too_few_seeds
    main = main_results_table(data, seeds_expected=3)
    assert [r[5].significant for r in main.rows] == [True, True]  # BKDSNN vs baseline
    assert not any(r[4].significant for r in main.rows)
    _, _, p_b = _welch_by_hand([68.0, 69.0, 70.0], [60.0, 62.0, 64.0])
    assert main.comparisons[1].p == pytest.approx(p_b)
    assert main.comparisons[1].diff == pytest.approx(7.0)
    # the footnote lists each tested cell's Holm-adjusted p over the table's tests
    tested = [c for c in table.comparisons if c.p is not None]
    listed = next(n for n in table.notes if n.startswith("Difference to none"))
    for c, adjusted in zip(tested, holm_adjusted([c.p for c in tested])):
        assert f"{p_text(c.p)}, Holm {p_text(adjusted)}" in listed


def test_holm_adjusted_p_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; max(0.06, 1 x 0.04) = 0.06
    assert holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjusted([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm_adjusted([0.02]) == [0.02] and holm_adjusted([]) == []
