"""bkd_sweep.results.summary_table on the report's numbers: seeds are one unit (a seed run
twice counts once) and val selects the "best" line (a tie on val never goes to test)."""

from __future__ import annotations

import pandas as pd

from bkd_sweep.results import load, summary_table
from tests.report.test_selection import _results, _rewrite, _study


def _rows(text: str) -> dict[tuple[str, str], list[str]]:
    lines = text.splitlines()
    return {tuple(line.split()[:2]): line.split() for line in lines[3:-2]}


def test_a_seed_run_twice_counts_once_in_the_summary(tmp_path) -> None:
    """(none, blur 0.1) seed 0 completed twice (test 70, then 73): the summary averages
    73, 71, 72 like the report (72.00 ± 1.00), not four values (71.50 ± 1.29)."""
    results = _results(tmp_path, _study())
    trials = pd.read_parquet(results / "trials.parquet")
    again = trials.iloc[[0]].copy()
    again["trial_id"], again["trial_number"] = "t0099", 99
    again["metric.test_top1"] = 73.0
    again["finished_at"] = trials["finished_at"].max() + pd.Timedelta(minutes=5)
    _rewrite(results, pd.concat([trials, again]))
    row = _rows(summary_table(load(results)))[("none", "0.1")]
    assert " ".join(row[-4:-1]) == "72.00 ± 1.00"


def test_a_seed_run_twice_does_not_hide_a_missing_seed(tmp_path) -> None:
    """Seed 0 twice and seed 2 failed: two distinct seeds of three, so the row is marked."""
    results = _results(tmp_path, _study())
    trials = pd.read_parquet(results / "trials.parquet")
    trials.loc[trials.index[2], "status"] = "failed"  # (none, 0.1) seed 2
    again = trials.iloc[[0]].copy()
    again["trial_id"], again["trial_number"] = "t0099", 99
    again["finished_at"] = trials["finished_at"].max() + pd.Timedelta(minutes=5)
    _rewrite(results, pd.concat([trials, again]))
    text = summary_table(load(results))
    assert _rows(text)[("none", "0.1")][3] == "3*"
    assert "* fewer completed seeds than the study's 3" in text


def test_a_tie_on_val_is_not_broken_by_test(tmp_path) -> None:
    """Every configuration has mean val 80: "best" is the first configuration's test mean
    (mixed, blur 0.1: 75.00), not the highest test mean (mixed, blur 0.3: 80.00)."""
    results = _results(tmp_path, _study())
    trials = pd.read_parquet(results / "trials.parquet")
    trials["metric.val_top1"] = 80.0
    _rewrite(results, trials)
    assert summary_table(load(results)).splitlines()[-1].endswith("best 75.00")
