"""Results written before three splits (schema v1) still load, in today's names, marked as
selected on test; the report labels them so."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from bkd_sweep.report.data import load_results_dir
from bkd_sweep.tracking import ResultStore
from bkd_sweep.tracking.schema import SCHEMA_VERSION_KEY, V1_SPLIT_RULE


def write_v1(results_dir, make_study) -> None:
    results_dir.mkdir(parents=True)
    meta = {SCHEMA_VERSION_KEY: b"1"}
    trials = pa.table({
        "trial_id": ["t0000", "t0001"], "trial_number": [0, 1], "study": ["old", "old"],
        "status": ["completed", "completed"], "reason": [None, None], "seed": [0, 1],
        "param.distill.mode": ["none", "none"], "metric.top1": [91.5, 92.5],
        "metric.top5": [99.0, 99.5], "metric.teacher_top1": [95.0, 95.0],
        "metric.energy_mj": [0.01, 0.01], "schema_version": pa.array([1, 1], pa.int32()),
    }).replace_schema_metadata(meta)
    pq.write_table(trials, results_dir / "trials.parquet")
    epochs = pa.table({"trial_id": ["t0000"], "epoch": [1], "metric.top1": [91.5],
                       "schema_version": pa.array([1], pa.int32())}).replace_schema_metadata(meta)
    pq.write_table(epochs, results_dir / "epochs.parquet")
    study = make_study("old").model_dump(mode="json")
    (results_dir / "study.json").write_text(json.dumps(study))


def test_a_v1_results_folder_loads_as_best_on_test(tmp_path, make_study):
    results_dir = tmp_path / "results" / "old"
    write_v1(results_dir, make_study)
    trials, epochs = ResultStore(results_dir).read()
    assert list(trials["metric.test_top1"]) == [91.5, 92.5]
    assert list(trials["metric.teacher_test_top1"]) == [95.0, 95.0]
    assert "metric.top1" not in trials.columns and list(epochs["metric.top1"]) == [91.5]
    assert trials["selection_on_test"].tolist() == [True, True]
    assert set(trials["split_rule"]) == {V1_SPLIT_RULE}
    data = load_results_dir(results_dir)
    assert data.metric_col("top1") == "metric.test_top1"
    assert data.selection_note().startswith("Selected on the test split (the papers' practice")
