"""Results written before three splits (schema v1) still load, in today's names, marked as
selected on test; the report labels them so."""

from __future__ import annotations

from bkd_sweep.report.data import load_results_dir
from bkd_sweep.tracking import ResultStore
from bkd_sweep.tracking.schema import V1_SPLIT_RULE


def test_a_v1_results_folder_loads_as_best_on_test(tmp_path, make_study, write_v1):
    results_dir = tmp_path / "results" / "old"
    write_v1(results_dir)
    trials, epochs = ResultStore(results_dir).read()
    assert list(trials["metric.test_top1"]) == [91.5, 92.5]
    assert list(trials["metric.teacher_test_top1"]) == [95.0, 95.0]
    assert "metric.top1" not in trials.columns and list(epochs["metric.top1"]) == [91.5]
    assert trials["selection_on_test"].tolist() == [True, True]
    assert set(trials["split_rule"]) == {V1_SPLIT_RULE}
    data = load_results_dir(results_dir)
    assert data.metric_col("top1") == "metric.test_top1"
    assert data.selection_note().startswith("Selected on the test split (the papers' practice")
