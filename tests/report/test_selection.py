"""Val selects, test reports: a cell showing the best of several configurations picks it by
the study's objective (mean val top-1), never by the test top-1 it displays."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bkd_sweep.config import Study, TableSpec
from bkd_sweep.report.data import load_results_dir
from bkd_sweep.report.tables import ablation_table, main_results_table
from bkd_sweep.tracking.schema import trials_schema
from tests.report.report_fixtures import write_results

# (mode, blur) -> (val, test) per seed. In each mode, blur 0.1 wins on val and blur 0.3 on
# test: selection on val must show blur 0.1's test values.
VAL_TEST = {
    ("none", 0.1): [(80.0, 70.0), (81.0, 71.0), (82.0, 72.0)],
    ("none", 0.3): [(78.0, 75.0), (79.0, 76.0), (80.0, 77.0)],
    ("mixed", 0.1): [(85.0, 74.0), (86.0, 75.0), (87.0, 76.0)],
    ("mixed", 0.3): [(83.0, 79.0), (84.0, 80.0), (85.0, 81.0)],
}


def _study(objective: str = "top1", mode: str = "max") -> Study:
    return Study.model_validate({
        "name": "selection",
        "search": {"seeds": [0, 1, 2],
                   "params": {"distill.mode": ["none", "mixed"],
                              "distill.blur_ratio": [0.1, 0.3]},
                   "objectives": [{"metric": objective, "mode": mode}]},
        "report": {"tables": [{"name": "ablation", "rows": "distill.mode", "metric": "top1"}]},
    })


def _results(tmp_path: Path, study: Study) -> Path:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    trials = []
    for (mode, blur), seeds in VAL_TEST.items():
        for seed, (val, test) in enumerate(seeds):
            trials.append({
                "params": {"distill.mode": mode, "distill.blur_ratio": blur}, "seed": seed,
                "status": "completed", "finished_at": start + timedelta(minutes=len(trials)),
                # blur 0.3 is the cheaper one: an energy objective prefers it
                "metrics": {"val_top1": val, "test_top1": test, "selected_epoch": 3,
                            "energy_mj": 0.05 if blur == 0.3 else 0.08}})
    return write_results(tmp_path / "results" / "selection", study, trials, [])


def _rewrite(results: Path, trials: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(trials, schema=trials_schema(), preserve_index=False)
    pq.write_table(table, results / "trials.parquet")


def test_ablation_cell_is_the_configuration_val_selects(tmp_path) -> None:
    data = load_results_dir(_results(tmp_path, _study()))
    table = ablation_table(data, TableSpec(name="ablation", rows="distill.mode"), 3)
    # blur 0.1 has the higher mean val in both modes (81 > 79, 86 > 84): its test is shown
    assert table.cell("none", "top1").text == "71.00 ± 1.00 (n=3)"
    assert table.cell("mixed", "top1").text == "75.00 ± 1.00 (n=3)"
    assert any("best mean val_top1" in note for note in table.notes)
    # selection by test would have shown 76.00 and 80.00
    assert "76.00" not in table.cell("none", "top1").text


def test_main_results_table_selects_on_val(tmp_path) -> None:
    data = load_results_dir(_results(tmp_path, _study()))
    table = main_results_table(data, 3)
    texts = [c.text for c in table.rows[0]]
    assert "71.00 ± 1.00 (n=3)" in texts and "75.00 ± 1.00 (n=3)" in texts
    assert "+4.00" in texts  # 75 - 71, not 80 - 76


def test_selection_follows_the_study_objective(tmp_path) -> None:
    """An energy objective (min) selects the cheaper configuration, whatever its accuracy."""
    data = load_results_dir(_results(tmp_path, _study("energy_mj", "min")))
    table = ablation_table(data, TableSpec(name="ablation", rows="distill.mode"), 3)
    assert table.cell("none", "top1").text == "76.00 ± 1.00 (n=3)"
    assert any("best mean energy_mj" in note for note in table.notes)


def test_a_seed_run_twice_counts_once(tmp_path) -> None:
    """A completed trial Optuna recorded as FAIL (an objective without a value) and run again
    by --retry-failed leaves two completed rows of one (configuration, seed): the later one
    counts, n stays the number of seeds."""
    study = _study()
    results = _results(tmp_path, study)
    trials = pd.read_parquet(results / "trials.parquet")
    first = trials.iloc[[0]].copy()  # none, blur 0.1, seed 0: val 80, test 70
    first["trial_id"], first["trial_number"] = "t0099", 99
    first["metric.test_top1"], first["metric.val_top1"] = 73.0, 80.0
    first["finished_at"] = trials["finished_at"].max() + pd.Timedelta(minutes=5)
    _rewrite(results, pd.concat([trials, first]))
    data = load_results_dir(results)
    assert len(data.completed) == len(trials)
    table = ablation_table(data, TableSpec(name="ablation", rows="distill.mode"), 3)
    assert table.cell("none", "top1").text == "72.00 ± 1.00 (n=3)"  # 73, 71, 72


def test_selection_note_says_when_some_rows_were_selected_on_test(tmp_path) -> None:
    results = _results(tmp_path, _study())
    trials = pd.read_parquet(results / "trials.parquet")
    trials.loc[trials.index[:3], "selection_on_test"] = True
    _rewrite(results, trials)
    note = load_results_dir(results).selection_note()
    assert "3 of 12" in note and "selected on the test split" in note


def test_an_energy_table_ranks_the_lowest_first_by_default(tmp_path) -> None:
    data = load_results_dir(_results(tmp_path, _study()))
    spec = TableSpec(name="energy_by_mode", rows="distill.mode", metric="energy_mj")
    assert spec.mode == "min"
    table = ablation_table(data, spec, 3)
    assert "lower is better" in table.caption


def test_the_device_hours_curve_follows_val_not_test(tmp_path) -> None:
    from bkd_sweep.report.plots import device_hours_series

    data = load_results_dir(_results(tmp_path, _study()))
    _, best_none = device_hours_series(data)["none"]
    # none's trials finish in VAL_TEST order: val 80, 81, 82, 78, 79, 80 (test peaks at 77)
    assert best_none == [80.0, 81.0, 82.0, 82.0, 82.0, 82.0]


def test_an_objective_the_results_lack_falls_back_to_val_never_test(tmp_path) -> None:
    """A ``loss`` objective (the last epoch's val loss) is no trials column: the cell is
    then picked on mean val top-1 and the note says so, never on the test top-1 shown."""
    data = load_results_dir(_results(tmp_path, _study("loss", "min")))
    assert data.selection() == ("metric.val_top1", "max")
    table = ablation_table(data, TableSpec(name="ablation", rows="distill.mode"), 3)
    assert table.cell("none", "top1").text == "71.00 ± 1.00 (n=3)"  # test would pick 76
    assert table.cell("mixed", "top1").text == "75.00 ± 1.00 (n=3)"  # test would pick 80
    note = next(n for n in table.notes if n.startswith("Each cell"))
    assert "val_top1" in note and "objective loss, which the results lack" in note


def test_a_val_accuracy_table_does_not_claim_to_show_test(tmp_path) -> None:
    """A table of val_top1 shows the split that selected: its notes say so and never call
    it test accuracy measured once."""
    data = load_results_dir(_results(tmp_path, _study()))
    spec = TableSpec(name="val", rows="distill.mode", metric="val_top1")
    notes = ablation_table(data, spec, 3).notes
    assert not any("top-1 is test accuracy" in n for n in notes)
    assert any("val_top1 is measured on the val split" in n for n in notes)
    test_notes = ablation_table(data, TableSpec(name="test", rows="distill.mode"), 3).notes
    assert any("top-1 is test accuracy" in n for n in test_notes)


def test_results_without_val_values_do_not_claim_val_selected(tmp_path) -> None:
    """A val column with no value (results older than three splits) selects nothing: the
    cell is then the best test mean and the note says so instead of naming val_top1."""
    results = _results(tmp_path, _study())
    trials = pd.read_parquet(results / "trials.parquet")
    trials["metric.val_top1"], trials["selection_on_test"] = float("nan"), True
    _rewrite(results, trials)
    data = load_results_dir(results)
    assert data.selection() is None
    table = ablation_table(data, TableSpec(name="ablation", rows="distill.mode"), 3)
    note = next(n for n in table.notes if n.startswith("Each cell"))
    assert "val_top1" not in note and "no val metric to select on" in note
