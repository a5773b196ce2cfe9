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


def test_v1_only_columns_survive_a_resumed_trial_and_compact(tmp_path, make_study,
                                                             make_record):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bkd_sweep.tracking.schema import SCHEMA_VERSION_KEY

    results_dir = tmp_path / "old"
    results_dir.mkdir()
    meta = {SCHEMA_VERSION_KEY: b"1"}
    trials = pa.table({
        "trial_id": ["t0000"], "trial_number": [0], "study": ["old"], "status": ["completed"],
        "reason": pa.array([None], pa.string()), "seed": [0], "param.distill.mode": ["none"],
        "metric.top1": [91.5], "metric.final_top5": [99.1], "epochs_run": [3],
        "schema_version": pa.array([1], pa.int32())}).replace_schema_metadata(meta)
    pq.write_table(trials, results_dir / "trials.parquet")
    epochs = pa.table({"trial_id": ["t0000"], "epoch": [1], "metric.top1": [91.5],
                       "metric.train_top1": [97.0],
                       "schema_version": pa.array([1], pa.int32())}).replace_schema_metadata(meta)
    pq.write_table(epochs, results_dir / "epochs.parquet")
    store = ResultStore(results_dir)
    # a resumed v1 study records one more trial today (a v2 part)
    store.upsert(make_record(make_study("old"), 1, {"distill.mode": "bkd",
                                                    "student.timesteps": 2}, 0))

    def check() -> None:
        got, got_epochs = store.read()
        assert list(got["trial_id"]) == ["t0000", "t0001"]
        assert got["metric.final_top5"].tolist()[0] == 99.1
        assert got["metric.final_top5"].isna().tolist() == [False, True]
        assert got["metric.test_top1"].tolist()[0] == 91.5
        assert got_epochs["metric.train_top1"].tolist()[0] == 97.0
        assert got_epochs["metric.train_top1"].isna().tolist() == [False, True, True, True]

    check()
    assert store.compact() == (2, 4)
    assert "metric.final_top5" in pq.read_schema(results_dir / "trials.parquet").names
    assert "metric.train_top1" in pq.read_schema(results_dir / "epochs.parquet").names
    check()
    # the compacted snapshot plus a newer part still keeps them
    store.upsert(make_record(make_study("old"), 2, {"distill.mode": "bkd",
                                                    "student.timesteps": 4}, 0))
    assert store.read_trials()["metric.final_top5"].tolist()[0] == 99.1
    assert store.compact() == (3, 7)
    assert store.read_trials()["metric.final_top5"].tolist()[0] == 99.1
