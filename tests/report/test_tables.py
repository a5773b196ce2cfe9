"""Table values vs hand computation on the fixture (see report_fixtures.TOP1 / ENERGY)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bkd_sweep.report.data import ResultsData, load_results_dir
from bkd_sweep.report.render import render, tex_escape
from bkd_sweep.report.tables import (Cell, Table, ablation_table, default_table_specs,
                                     energy_table, fmt, main_results_table, rank)
from bkd_sweep.config import Study, TableSpec
from bkd_sweep.results import retried_failures
from bkd_sweep.tracking.schema import trials_schema
from tests.report.report_fixtures import write_results

SPEC = TableSpec(name="ablation", rows="distill.mode", cols="student.arch", metric="top1")


@pytest.fixture
def data(fixture_results: Path):
    return load_results_dir(fixture_results)


@pytest.fixture
def table(data) -> Table:
    return ablation_table(data, SPEC, seeds_expected=3)


def test_ablation_cells_are_mean_std_n_over_completed_seeds(table: Table) -> None:
    assert table.header == ("distill.mode", "snn_a", "snn_b")
    assert [r[0].text for r in table.rows] == ["none", "logit", "bkd", "mixed"]  # study order
    # 70, 71, 72 -> 71 ± 1; 76, 76.5, 77.5 -> 76.667 ± sqrt(0.58333) = 0.7638
    assert table.cell("none", "snn_a").text == "71.00 ± 1.00 (n=3)"
    assert table.cell("mixed", "snn_a").text == "76.67 ± 0.76 (n=3)"
    assert table.cell("none", "snn_b").text == "62.00 ± 2.00 (n=3)"
    assert table.cell("logit", "snn_b").text == "68.00 ± 1.00 (n=3)"
    # the pruned trial (top1 50) and the failed one are not averaged: 74, 75 -> ± sqrt(0.5)
    assert table.cell("bkd", "snn_a").text == "74.50 ± 0.71 (n=2)"
    assert table.cell("bkd", "snn_b").text == "66.50 ± 0.71 (n=2)"


def test_missing_seed_marker_and_footnotes(table: Table, data) -> None:
    markers = {(r[0].text, table.header[j]) for r in table.rows
               for j, c in enumerate(r) if c.marker}
    assert markers == {("bkd", "snn_a"), ("bkd", "snn_b")}
    assert "† fewer than 3 completed seeds." in table.notes
    assert "1 pruned, 1 failed trials excluded." in table.notes
    relaxed = ablation_table(data, SPEC, seeds_expected=2)
    assert not any(c.marker for r in relaxed.rows for c in r)
    assert not any("fewer than" in n for n in relaxed.notes)


def test_best_bold_second_underlined_per_column(table: Table, data) -> None:
    emph = {(r[0].text, table.header[j]): c.emphasis for r in table.rows
            for j, c in enumerate(r) if j}
    assert emph == {("none", "snn_a"): None, ("logit", "snn_a"): None,
                    ("bkd", "snn_a"): "underline", ("mixed", "snn_a"): "bold",
                    ("none", "snn_b"): None, ("logit", "snn_b"): "underline",
                    ("bkd", "snn_b"): None, ("mixed", "snn_b"): "bold"}
    low = ablation_table(data, SPEC.model_copy(update={"mode": "min"}), 3)
    assert low.cell("none", "snn_a").emphasis == "bold"
    assert low.cell("logit", "snn_a").emphasis == "underline"


def test_markdown_emphasis_and_marker(table: Table) -> None:
    md = render(table, "md")  # significant against none: logit and mixed (test_stats.py)
    assert r"**76.67 ± 0.76 (n=3)<sup>\*</sup>**" in md
    assert r"**69.00 ± 1.00 (n=3)<sup>\*</sup>**" in md
    assert "<u>74.50 ± 0.71 (n=2)†</u>" in md
    assert r"<u>68.00 ± 1.00 (n=3)<sup>\*</sup></u>" in md
    assert "| 66.50 ± 0.71 (n=2)† " in md  # marked, not emphasized
    assert md.count("**") == 2 * 2 + 2  # two bold cells + the bold caption
    assert "1 pruned, 1 failed trials excluded." in md


def test_latex_booktabs_emphasis_and_escaping(table: Table) -> None:
    tex = render(table, "tex")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\textbf{76.67 $\pm$ 0.76 (n=3)$^{*}$}" in tex
    assert r"\textbf{69.00 $\pm$ 1.00 (n=3)$^{*}$}" in tex
    assert r"\underline{74.50 $\pm$ 0.71 (n=2)$^\dagger$}" in tex
    assert r"\underline{68.00 $\pm$ 1.00 (n=3)$^{*}$}" in tex
    assert r"snn\_a" in tex and "snn_a" not in tex.replace(r"snn\_a", "")
    assert r"$^\dagger$ fewer than 3 completed seeds." in tex
    assert all(ord(ch) < 128 for ch in tex)  # pdflatex-safe
    assert tex_escape("a_b & 50% ± †") == r"a\_b \& 50\% $\pm$ $^\dagger$"


def test_html_emphasis_and_marker(table: Table) -> None:
    frag = render(table, "html")
    assert '<strong>76.67 ± 0.76 (n=3)<sup class="sig">*</sup></strong>' in frag
    assert '<u>74.50 ± 0.71 (n=2)<sup class="marker">†</sup></u>' in frag
    assert '<u>68.00 ± 1.00 (n=3)<sup class="sig">*</sup></u>' in frag
    assert frag.count("<strong>") == 2 and frag.count("<u>") == 2
    assert 'data-table="ablation"' in frag and frag.count("<tr>") == 1 + 4


def test_main_results_layout_and_gain(data) -> None:
    t = main_results_table(data, seeds_expected=3)
    assert t.header == ("dataset", "student", "teacher", "T", "baseline", "BKDSNN", "gain")
    rows = {r[1].text: r for r in t.rows}
    a, b = rows["snn_a"], rows["snn_b"]
    assert [c.text for c in a] == ["digits", "snn_a", "cnn_small (90.00)", "4",
                                   "71.00 ± 1.00 (n=3)", "76.67 ± 0.76 (n=3)", "+5.67"]
    assert [c.text for c in b][4:] == ["62.00 ± 2.00 (n=3)", "69.00 ± 1.00 (n=3)", "+7.00"]
    assert a[5].emphasis == "bold" and a[4].emphasis is None  # better of the two, per row
    md = render(t, "md")
    assert "| digits  | snn_a   | cnn_small (90.00) | 4   |" in md


def test_energy_table_values_and_teacher_ratio(data) -> None:
    t = energy_table(data, seeds_expected=3)
    assert t.header[:2] == ("distill.mode", "student.arch")
    rows = {(r[0].text, r[1].text): r for r in t.rows}
    assert len(rows) == 8
    col = {h: j for j, h in enumerate(t.header)}
    mixed_a = rows[("mixed", "snn_a")]
    assert mixed_a[col["energy (mJ)"]].text == "0.05000 ± 0.01000 (n=3)"  # 0.04, 0.05, 0.06
    assert mixed_a[col["teacher (mJ)"]].text == "0.5000"
    assert mixed_a[col["ratio to teacher"]].text == "0.1000"  # 0.05 / 0.5
    assert rows[("none", "snn_b")][col["ratio to teacher"]].text == "0.2400"  # 0.12 / 0.5
    assert rows[("bkd", "snn_a")][col["energy (mJ)"]].marker  # 2 completed seeds of 3
    # SOPs (M): energy * 1e9 / 0.9 / 1e6 = 0.05 mJ -> 55.56 M
    assert mixed_a[col["SOPs (M)"]].text == "55.56"
    # lowest energy bold (tie: bkd/snn_a and mixed/snn_a both 0.05)
    bold = {k for k, r in rows.items() if r[col["energy (mJ)"]].emphasis == "bold"}
    assert bold == {("bkd", "snn_a"), ("mixed", "snn_a")}
    convention = next(n for n in t.notes if n.startswith("Energy convention:"))
    assert convention.startswith("Energy convention: paper (integer spike sums")
    assert convention.endswith("energy tables count).")  # one parenthesis, closed once
    assert convention.count("(") == convention.count(")") == 1


def test_default_table_specs(data) -> None:
    specs = default_table_specs(data)
    assert [(s.name, s.rows, s.cols) for s in specs] == [
        ("ablation", "distill.mode", "student.arch")]


def test_rank_ties_and_formatting() -> None:
    cells = [Cell("a", 1.0), Cell("b", 1.0), Cell("c", 0.5), Cell("—"), Cell("d", 0.1)]
    assert [c.emphasis for c in rank(cells, "max")] == ["bold", "bold", "underline", None,
                                                         None]
    assert [c.emphasis for c in rank(cells, "min")] == [None, None, "underline", None, "bold"]
    assert [c.emphasis for c in rank(cells[:1], "max")] == [None]  # nothing to compare
    assert fmt(-0.001, 2) == "0.00" and fmt(-0.001, 2, signed=True) == "+0.00"
    assert fmt(1.005, 1, signed=True) == "+1.0" and fmt(-2.5, 2) == "-2.50"


def test_main_results_teacher_falls_back_to_declared_accuracy(data) -> None:
    trials = data.trials.copy()
    trials["metric.teacher_test_top1"] = float("nan")
    trials["param.teacher.accuracy"] = 82.22
    t = main_results_table(ResultsData(data.study, trials, data.epochs), seeds_expected=3)
    assert {r[2].text for r in t.rows} == {"cnn_small (82.22)"}
    trials["param.teacher.accuracy"] = None
    t = main_results_table(ResultsData(data.study, trials, data.epochs), seeds_expected=3)
    assert {r[2].text for r in t.rows} == {"cnn_small"}


def test_value_order_declared_first_then_sorted_bool_is_not_int(data) -> None:
    # declared order (none, logit, bkd, mixed) for values present; an undeclared value after
    assert data.order("distill.mode", ["mixed", "none", "mixed", None, "extra"]) == [
        "none", "mixed", "extra", None]
    # undeclared parameter: sorted with booleans first, then numbers (4 == 4.0), missing last
    values = [4, 2.0, True, float("nan"), 1, 4.0, None, "b", False]
    assert data.order("student.timesteps", values) == [False, True, 1, 2.0, 4, "b", None]
    key = data.config_order(["distill.mode", "student.arch"])
    configs = [("mixed", "a"), ("none", "b"), ("none", "a"), ("unseen", "a")]
    order = data.order("student.arch", data.trials["param.student.arch"].tolist())
    ranked = sorted(configs, key=key)
    assert [c[0] for c in ranked] == ["none", "none", "mixed", "unseen"]
    none_rows = [c for c in ranked if c[0] == "none"]
    assert none_rows == sorted(none_rows, key=lambda c: order.index(c[1]) if c[1] in order
                               else len(order))


def _set_energy(results: Path, values: dict[tuple[str, str, int], float]) -> None:
    """Overwrite metric.energy_mj of the fixture's (mode, arch, seed) trials."""
    t = pd.read_parquet(results / "trials.parquet")
    for (mode, arch, seed), value in values.items():
        row = ((t["param.distill.mode"] == mode) & (t["param.student.arch"] == arch)
               & (t["seed"] == seed))
        t.loc[row, "metric.energy_mj"] = value
    pq.write_table(pa.Table.from_pandas(t, schema=trials_schema(), preserve_index=False),
                   results / "trials.parquet")


def test_an_infinite_value_is_left_out_as_a_missing_one_is_and_said(fixture_results) -> None:
    _set_energy(fixture_results, {("mixed", "snn_a", 0): math.inf,
                                  ("none", "snn_a", 0): math.nan})
    data = load_results_dir(fixture_results)
    spec = TableSpec(name="e", rows="distill.mode", cols="student.arch", metric="energy_mj")
    table = ablation_table(data, spec, seeds_expected=3)
    # mixed/snn_a: 0.05, 0.06 left of 0.04 -> inf; none/snn_a: 0.06, 0.06 left of NaN, 0.06
    infinite, missing = table.cell("mixed", "snn_a"), table.cell("none", "snn_a")
    assert infinite.text == "0.05500 ± 0.00707 (n=2)" and infinite.marker  # not "inf ± nan"
    assert missing.text == "0.06000 ± 0.00000 (n=2)" and missing.marker
    said = ("Infinite values left out of the means, as missing values are (n counts finite "
            "values only): 1 of energy_mj.")
    assert said in table.notes
    energy = energy_table(data, seeds_expected=3)
    assert said in energy.notes
    assert not any("inf" in c.text or "nan" in c.text for r in energy.rows for c in r)
    assert not any("Infinite" in n for n in ablation_table(data, SPEC, 3).notes)  # top1 finite


def test_a_failed_run_retried_to_completion_is_not_counted_as_excluded(tmp_path) -> None:
    study = Study.model_validate({
        "name": "retry", "search": {"seeds": [0, 1, 2], "params": {"distill.mode": ["none",
                                                                                    "mixed"]}},
        "report": {"tables": [{"name": "ablation", "rows": "distill.mode"}]}})
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    metrics = {"val_top1": 71.0, "test_top1": 70.0, "energy_mj": 0.05}
    trials = [{"params": {"distill.mode": mode}, "seed": seed, "status": "completed",
               "metrics": metrics, "finished_at": start + timedelta(minutes=10 + 2 * seed + j)}
              for seed in (0, 1) for j, mode in enumerate(("none", "mixed"))]
    # mixed seed 1 failed, then --retry-failed completed it (above); none seed 2 never did
    trials += [{"params": {"distill.mode": mode}, "seed": seed, "status": "failed",
                "reason": "RuntimeError: CUDA out of memory", "metrics": {},
                "finished_at": start + timedelta(minutes=seed)}
               for mode, seed in (("mixed", 1), ("none", 2), ("none", 2))]
    data = load_results_dir(write_results(tmp_path / "retry", study, trials, []))
    assert list(retried_failures(data.trials)) == [4]  # the mixed seed 1 failure
    for table in (ablation_table(data, TableSpec(name="ablation", rows="distill.mode"), 3),
                  main_results_table(data, 3), energy_table(data, 3)):
        assert "0 pruned, 2 failed trials excluded." in table.notes, table.name
