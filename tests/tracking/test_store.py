"""ResultStore: exactly one row per trial and per (trial, epoch), fixed dtypes, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bkd_sweep.tracking import (
    EPOCHS_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    ResultStore,
    SchemaVersionError,
    trials_schema,
)
from bkd_sweep import storage
from bkd_sweep.tracking.schema import arrow_type_for_annotation, param_types

P = {"distill.mode": "bkd", "student.timesteps": 4}


def test_upsert_is_exactly_once_under_retries_and_resumes(study, results_dir, make_record,
                                                          epoch_top1):
    store = ResultStore(results_dir)
    first = make_record(study, 3, P, 0, status="failed", epochs=2)
    store.upsert(first, mlflow_run_id="run-a")
    other = make_record(study, 1, {"distill.mode": "none", "student.timesteps": 2}, 1)
    store.upsert(other)
    # the retry finishes with 3 epochs and other numbers; a resume reports it once more
    retry = make_record(study, 3, P, 0, epochs=3, offset=1.0)
    store.upsert(retry, mlflow_run_id="run-a")
    store.upsert(retry, mlflow_run_id="run-a")

    trials, epochs = store.read()
    assert list(trials["trial_id"]) == ["t0001", "t0003"]  # sorted by trial number
    row = trials.set_index("trial_id").loc["t0003"]
    assert row["status"] == "completed"
    assert row["metric.val_top1"] == pytest.approx(epoch_top1(3, 3) + 1.0)
    assert row["epochs_run"] == 3 and row["mlflow_run_id"] == "run-a"
    mine = epochs[epochs["trial_id"] == "t0003"]
    assert list(mine["epoch"]) == [1, 2, 3]  # replaced, not 2 + 3 + 3 rows
    assert list(mine["metric.top1"]) == pytest.approx(
        [epoch_top1(3, e) + 1.0 for e in (1, 2, 3)])
    assert len(epochs) == 6 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert store.trial_ids(status="completed") == {"t0001", "t0003"}


def test_row_values_match_the_record(study, results_dir, make_record, epoch_top1):
    store = ResultStore(results_dir)
    rec = make_record(study, 7, P, 1, status="pruned", epochs=2, pruned_epoch=2)
    store.upsert(rec, mlflow_run_id="abc")
    trials, epochs = store.read()
    row = trials.iloc[0]
    assert (row["trial_id"], row["trial_number"], row["study"], row["seed"]) == (
        "t0007", 7, "demo", 1)
    assert (row["status"], row["reason"], row["pruned_epoch"]) == ("pruned", "pruned by test", 2)
    assert row["param.distill.mode"] == "bkd" and row["param.student.timesteps"] == 4
    assert row["param.seed"] == 1 and row["param.train.epochs"] == 3
    assert row["metric.val_top1"] == pytest.approx(epoch_top1(7, 2))
    assert row["metric.energy_mj"] == pytest.approx(0.08)
    assert row["metric.firing_rate"] == pytest.approx(0.12)
    assert row["epochs_planned"] == 3 and row["epochs_run"] == 2
    assert json.loads(row["config_json"]) == rec.result.config
    assert json.loads(row["firing_rates_json"]) == {"lif1": 0.1, "lif2": 0.14}
    assert row["config_hash"] == rec.result.config_hash
    assert store.trial_ids(status="completed") == set()
    # the bkd term is present, the logit term is null (mode bkd has none)
    assert epochs["loss.bkd"].tolist() == pytest.approx([0.5, 0.25])
    assert epochs["loss.logit"].isna().all()


def test_dtypes_match_the_schema_even_for_all_null_columns(study, results_dir,
                                                          make_record):
    store = ResultStore(results_dir)
    # no energy: every metric.energy column is null; data.root is None in every trial
    store.upsert(make_record(study, 0, P, 0, status="failed", energy=False, epochs=0))
    trial_part = results_dir / "tables/trials/t0000.parquet"
    epoch_part = results_dir / "tables/epochs/t0000.parquet"
    assert store.compact() == (1, 0)
    # the trial's own files and the snapshots both carry the explicit schema
    for trials_path, epochs_path in ((trial_part, epoch_part),
                                     (store.trials_path, store.epochs_path)):
        trials_file = pq.read_table(trials_path)
        expected = trials_schema()
        assert trials_file.schema.equals(expected, check_metadata=False)
        assert trials_file.schema.field("param.data.root").type == pa.string()
        assert trials_file.schema.field("param.student.timesteps").type == pa.int64()
        assert trials_file.schema.field("param.distill.blur_ratio").type == pa.float64()
        assert trials_file.schema.field("param.train.compile").type == pa.bool_()
        assert trials_file.schema.field("param.teacher.timesteps").type == pa.int64()
        assert trials_file.schema.field("metric.energy_mj").type == pa.float64()
        assert trials_file.schema.field("finished_at").type == pa.timestamp("us", tz="UTC")
        assert trials_file.schema.field("schema_version").type == pa.int32()
        assert trials_file["schema_version"].to_pylist() == [SCHEMA_VERSION]
        epochs_file = pq.read_table(epochs_path)
        assert epochs_file.num_rows == 0
        assert epochs_file.schema.equals(EPOCHS_SCHEMA, check_metadata=False)
        for path in (trials_path, epochs_path):
            assert pq.read_schema(path).metadata[SCHEMA_VERSION_KEY] == \
                str(SCHEMA_VERSION).encode()
    # every TrialConfig leaf has a column, and pandas dtypes do not depend on nulls
    flat = study.base_config().flat()
    assert set(param_types()) == set(flat)
    trials, _ = store.read()
    assert str(trials["param.teacher.timesteps"].dtype) == "Int64"
    assert str(trials["pruned_epoch"].dtype) == "Int64"
    assert str(trials["metric.energy_mj"].dtype) == "float64"


def test_annotation_types():
    assert arrow_type_for_annotation(int | None) == pa.int64()
    assert arrow_type_for_annotation(int | float) == pa.float64()
    assert arrow_type_for_annotation(bool) == pa.bool_()
    from typing import Literal
    assert arrow_type_for_annotation(Literal["a", "b"]) == pa.string()
    assert arrow_type_for_annotation(int | Literal["auto"]) == pa.string()
    assert arrow_type_for_annotation(list[int]) == pa.string()


def test_crash_between_temp_write_and_replace_leaves_old_file(study, results_dir, monkeypatch,
                                                              grid_records):
    store = ResultStore(results_dir)
    records = grid_records(study)
    for rec in records[:2]:
        store.upsert(rec)
    before_trials, _ = store.read()
    real_replace = os.replace

    def crash_on_trial_row(src, dst):
        if str(dst).endswith("tables/trials/t0002.parquet"):
            raise OSError("simulated crash before rename")
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", crash_on_trial_row)
    with pytest.raises(OSError, match="simulated crash"):
        store.upsert(records[2])
    monkeypatch.undo()
    after_trials, after_epochs = store.read()  # still readable, still the old rows
    assert after_trials.equals(before_trials)
    assert not [p for p in results_dir.rglob("*") if p.name.endswith(".tmp")]
    # epochs are written first; the retried upsert leaves them exactly once
    parts = results_dir / "tables/trials"
    (parts / ".t0002.parquet.dead.tmp").write_bytes(b"partial")  # a killed writer's
    store.upsert(records[2])
    trials, epochs = store.read()
    assert list(trials["trial_id"]) == ["t0000", "t0001", "t0002"]
    assert len(epochs) == 9 and not epochs.duplicated(["trial_id", "epoch"]).any()


def test_other_schema_version_is_refused(study, results_dir, make_record):
    store = ResultStore(results_dir)
    store.upsert(make_record(study, 0, P, 0))
    part = results_dir / "tables/trials/t0000.parquet"
    table = pq.read_table(part)
    pq.write_table(table.replace_schema_metadata({SCHEMA_VERSION_KEY: b"99"}), part)
    with pytest.raises(SchemaVersionError, match="t0000.parquet: schema version 99"):
        store.read()
    with pytest.raises(SchemaVersionError, match="version 99"):
        store.trial_ids()
    # the same in a snapshot (a folder written by a newer bkd-sweep)
    part.unlink()
    pq.write_table(table.replace_schema_metadata({SCHEMA_VERSION_KEY: b"99"}), store.trials_path)
    with pytest.raises(SchemaVersionError, match="trials.parquet: schema version 99"):
        store.read()


def test_unknown_param_leaf_is_kept_with_a_value_type(study, results_dir, make_record):
    store = ResultStore(results_dir)
    store.upsert(make_record(study, 0, P, 0))
    rec = make_record(study, 1, P, 1)
    rec.params["future.knob"] = 3  # a leaf today's TrialConfig does not declare
    store.upsert(rec)
    table, _ = store.read_tables()
    assert table.schema.field("param.future.knob").type == pa.int64()
    assert table["param.future.knob"].to_pylist() == [None, 3]
    store.compact()  # the snapshot keeps it too
    table = pq.read_table(store.trials_path)
    assert table.schema.field("param.future.knob").type == pa.int64()
    assert table["param.future.knob"].to_pylist() == [None, 3]


def test_empty_store_reads_empty_frames_with_columns(tmp_path: Path):
    trials, epochs = ResultStore(tmp_path / "nothing").read()
    assert trials.empty and "metric.test_top1" in trials.columns
    assert epochs.empty and "loss.bkd" in epochs.columns
    assert ResultStore(tmp_path / "nothing").trial_ids(status="completed") == set()
