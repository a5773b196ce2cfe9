"""The store as a dataset: one part per trial, snapshots from compact(), old single-file
folders read as they were."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bkd_sweep.tracking import EPOCHS_SCHEMA, ResultStore, trials_schema
from bkd_sweep.tracking.rows import epoch_rows, trial_row
from bkd_sweep.tracking.schema import SCHEMA_VERSION_KEY, V1_SPLIT_RULE
from bkd_sweep.tracking.tables import COVERAGE_KEY

P = {"distill.mode": "bkd", "student.timesteps": 4}
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _age(results_dir, seconds: float = 30.0) -> None:
    """Make every part look written ``seconds`` ago (a compact then covers it)."""
    for part in (results_dir / "tables").rglob("*.parquet"):
        stamp = part.stat().st_mtime_ns - int(seconds * 1e9)
        os.utime(part, ns=(stamp, stamp))


def test_each_trial_is_its_own_pair_of_files_replaced_on_rerecord(study, results_dir,
                                                                 make_record, epoch_top1):
    store = ResultStore(results_dir)
    for n in range(3):
        store.upsert(make_record(study, n, P, n % 2), mlflow_run_id=f"run-{n}")
    store.upsert(make_record(study, 1, P, 1, epochs=2, offset=5.0), mlflow_run_id="run-1")
    assert _names(results_dir / "tables/trials") == ["t0000.parquet", "t0001.parquet",
                                                     "t0002.parquet"]
    assert _names(results_dir / "tables/epochs") == _names(results_dir / "tables/trials")
    assert not (results_dir / "trials.parquet").exists()  # no table is written per trial
    assert pq.read_table(results_dir / "tables/trials/t0001.parquet").num_rows == 1
    trials, epochs = store.read()
    assert list(trials["trial_id"]) == ["t0000", "t0001", "t0002"]
    row = trials.set_index("trial_id").loc["t0001"]
    assert row["epochs_run"] == 2 and row["metric.val_top1"] == pytest.approx(
        epoch_top1(1, 2) + 5.0)
    assert list(epochs["trial_id"]) == ["t0000"] * 3 + ["t0001"] * 2 + ["t0002"] * 3
    assert store.trial_ids() == {"t0000", "t0001", "t0002"}


def test_recording_a_trial_rewrites_no_other_file(study, results_dir, make_record):
    store = ResultStore(results_dir)
    for n in range(3):
        store.upsert(make_record(study, n, P, 0))
    store.compact()
    files = [p for p in results_dir.rglob("*") if p.is_file()]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    store.upsert(make_record(study, 3, P, 1))
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before
    new = sorted(str(p.relative_to(results_dir)) for p in results_dir.rglob("*")
                 if p.is_file() and p not in before)
    assert new == ["tables/epochs/t0003.parquet", "tables/trials/t0003.parquet"]
    with pytest.raises(ValueError, match="cannot name a file"):
        store.upsert(dataclasses.replace(make_record(study, 4, P, 0), trial_id="../t4"))


def test_compact_writes_snapshots_and_newer_parts_win(study, results_dir, make_record,
                                                      epoch_top1):
    store = ResultStore(results_dir)
    for n in range(4):
        store.upsert(make_record(study, n, P, n % 2), mlflow_run_id=f"run-{n}")
    before = store.read_tables()
    _age(results_dir)
    assert store.compact() == (4, 12)
    snapshot = pq.read_table(store.trials_path)
    assert snapshot["trial_id"].to_pylist() == ["t0000", "t0001", "t0002", "t0003"]
    assert pq.read_table(store.epochs_path).num_rows == 12
    after = store.read_tables()
    for old, new in zip(before, after):
        assert new.equals(old) and new.schema.metadata == {SCHEMA_VERSION_KEY: b"2"}
    # a retry after the snapshot, and a trial the snapshot has not seen: both read
    store.upsert(make_record(study, 2, P, 0, epochs=1, offset=7.0), mlflow_run_id="run-2")
    store.upsert(make_record(study, 5, P, 1), mlflow_run_id="run-5")
    trials, epochs = store.read()
    assert list(trials["trial_id"]) == ["t0000", "t0001", "t0002", "t0003", "t0005"]
    assert trials.set_index("trial_id").loc["t0002", "metric.val_top1"] == pytest.approx(
        epoch_top1(2, 1) + 7.0)
    assert list(epochs[epochs["trial_id"] == "t0002"]["epoch"]) == [1]
    assert len(epochs) == 3 + 3 + 1 + 3 + 3
    assert store.trial_ids(status="completed") == {"t0000", "t0001", "t0002", "t0003",
                                                   "t0005"}
    merged = store.read_tables()
    assert store.compact() == (5, 13)
    for old, new in zip(merged, store.read_tables()):
        assert new.equals(old)


def test_a_snapshot_covers_only_parts_older_than_its_clock_second(study, results_dir,
                                                                  make_record):
    store = ResultStore(results_dir)
    for n in range(3):
        store.upsert(make_record(study, n, P, 0))
    old = results_dir / "tables/trials/t0000.parquet"
    stamp = old.stat().st_mtime_ns - 30 * 10**9
    os.utime(old, ns=(stamp, stamp))
    for n in (1, 2):  # written in the clock's second or later: maybe after compact read them
        late = results_dir / f"tables/trials/t000{n}.parquet"
        later = late.stat().st_mtime_ns + 60 * 10**9
        os.utime(late, ns=(later, later))
    store.compact()
    covered = json.loads(pq.read_schema(store.trials_path).metadata[COVERAGE_KEY])
    assert covered == {"t0000": f"{old.stat().st_size}:{stamp}"}
    # a covered part is not read again: garbage of the same size and mtime goes unseen
    old.write_bytes(b"x" * old.stat().st_size)
    os.utime(old, ns=(stamp, stamp))
    trials, _ = store.read()
    assert list(trials["trial_id"]) == ["t0000", "t0001", "t0002"]


def _write_legacy(results_dir, records, *, run_ids) -> None:
    """A results folder as bkd-sweep wrote it before #12: one trials.parquet (sorted by
    trial number) and one epochs.parquet, schema v2, nothing else."""
    results_dir.mkdir(parents=True)
    schema = trials_schema()
    rows = [trial_row(r, study="demo", mlflow_run_id=run_ids[r.trial_id], finished_at=WHEN)
            for r in sorted(records, key=lambda r: r.trial_number)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), results_dir / "trials.parquet")
    epochs = [e for r in sorted(records, key=lambda r: r.trial_id) for e in epoch_rows(r)]
    pq.write_table(pa.Table.from_pylist(epochs, schema=EPOCHS_SCHEMA),
                   results_dir / "epochs.parquet")


def test_an_old_single_file_folder_reads_exactly_as_parts_do(tmp_path, study, grid_records):
    records = grid_records(study)[:5]
    run_ids = {r.trial_id: f"run-{r.trial_number}" for r in records}
    legacy = tmp_path / "legacy" / "demo"
    _write_legacy(legacy, records, run_ids=run_ids)
    legacy_tables = ResultStore(legacy).read_tables()
    assert legacy_tables[0].equals(pq.read_table(legacy / "trials.parquet"))
    assert legacy_tables[1].equals(pq.read_table(legacy / "epochs.parquet"))
    parts = ResultStore(tmp_path / "parts" / "demo")
    for rec in reversed(records):  # recorded in any order
        parts.upsert(rec, mlflow_run_id=run_ids[rec.trial_id], finished_at=WHEN)
    for old, new in zip(legacy_tables, parts.read_tables()):
        assert new.equals(old) and new.schema.equals(old.schema, check_metadata=True)
    for old, new in zip(ResultStore(legacy).read(), parts.read()):
        pd.testing.assert_frame_equal(new, old)
    assert ResultStore(legacy).trial_ids(status="completed") == set(run_ids)


def test_an_old_folder_takes_new_parts_then_compacts(tmp_path, study, grid_records,
                                                     make_record, epoch_top1):
    records = grid_records(study)[:3]
    legacy = tmp_path / "legacy" / "demo"
    _write_legacy(legacy, records, run_ids={r.trial_id: None for r in records})
    store = ResultStore(legacy)  # a resumed sweep of an old folder records t0001 again
    params = records[1].params
    store.upsert(make_record(study, 1, params, records[1].seed, offset=2.0), "run-1")
    trials, epochs = store.read()
    assert list(trials["trial_id"]) == ["t0000", "t0001", "t0002"]
    assert store.read_tables()[0]["mlflow_run_id"].to_pylist() == [None, "run-1", None]
    assert trials.set_index("trial_id").loc["t0001", "metric.val_top1"] == pytest.approx(
        epoch_top1(1, 3) + 2.0)
    assert len(epochs) == 9 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert store.compact() == (3, 9)
    assert store.read_tables()[0]["mlflow_run_id"].to_pylist() == [None, "run-1", None]


def test_a_v1_folder_with_a_new_part_reads_in_todays_terms(tmp_path, make_study,
                                                           make_record, write_v1):
    results_dir = tmp_path / "results" / "old"
    write_v1(results_dir)
    study = make_study("old")
    ResultStore(results_dir).upsert(make_record(study, 2, {"distill.mode": "none"}, 0))
    trials, epochs = ResultStore(results_dir).read()
    assert list(trials["trial_id"]) == ["t0000", "t0001", "t0002"]
    assert list(trials.columns) == trials_schema().names
    assert trials["metric.test_top1"].tolist()[:2] == [91.5, 92.5]
    assert trials["selection_on_test"].tolist() == [True, True, False]
    assert trials["split_rule"].tolist()[:2] == [V1_SPLIT_RULE] * 2
    assert list(epochs["trial_id"]) == ["t0000", "t0002", "t0002", "t0002"]


def test_has_tables(tmp_path, study, make_record):
    store = ResultStore(tmp_path / "demo")
    assert not store.has_tables() and store.compact() == (0, 0)
    store.upsert(make_record(study, 0, P, 0))
    assert store.has_tables()
