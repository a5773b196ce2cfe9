"""The whole store against a real S3-compatible server process (moto): parts, snapshots,
damaged files and --rebuild at s3://bkd-results/<prefix>/demo, reached through the standard
AWS_* variables only."""

from __future__ import annotations

import pytest

from bkd_sweep.cli import EXIT_BAD_INPUT, main
from bkd_sweep.results import load, rebuild
from bkd_sweep.storage import Location
from bkd_sweep.tracking import ResultStore
from bkd_sweep.tracking.parquet_files import DamagedFileError

pytestmark = pytest.mark.server  # starts a moto S3 server process

P = {"distill.mode": "bkd", "student.timesteps": 4}


def _keys(client, uri: str) -> list[str]:
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"].removeprefix(prefix + "/") for o in listing.get("Contents", []))


def _put(client, uri: str, key: str, body: bytes) -> None:
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)


def _get(client, uri: str, key: str) -> bytes:
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    return client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()


def test_upsert_read_compact_on_s3(s3, study, make_record, epoch_top1):
    client, uri = s3
    store = ResultStore(uri)
    for n in range(3):
        store.upsert(make_record(study, n, P, n % 2), mlflow_run_id=f"run-{n}")
    store.upsert(make_record(study, 1, P, 1, epochs=2, offset=4.0), mlflow_run_id="run-1")
    assert _keys(client, uri) == [f"tables/{kind}/t000{n}.parquet"
                                  for kind in ("epochs", "trials") for n in range(3)]
    trials, epochs = store.read()
    assert list(trials["trial_id"]) == ["t0000", "t0001", "t0002"]
    assert trials.set_index("trial_id").loc["t0001", "metric.val_top1"] == pytest.approx(
        epoch_top1(1, 2) + 4.0)
    assert list(trials["mlflow_run_id"]) == ["run-0", "run-1", "run-2"]
    assert len(epochs) == 8 and store.trial_ids(status="completed") == {"t0000", "t0001",
                                                                        "t0002"}
    before = store.read_tables()
    assert store.compact() == (3, 8)
    assert {"trials.parquet", "epochs.parquet"} <= set(_keys(client, uri))
    assert not [k for k in _keys(client, uri) if ".clock-" in k]  # the clock probe is gone
    for old, new in zip(before, store.read_tables()):
        assert new.equals(old)
    store.upsert(make_record(study, 5, P, 0), mlflow_run_id="run-5")  # after the snapshot
    assert list(store.read()[0]["trial_id"]) == ["t0000", "t0001", "t0002", "t0005"]
    results = load(uri)
    assert results.directory == uri and results.name == "demo" and len(results.trials) == 4


def test_damaged_part_and_rebuild_on_s3(s3, study, results_dir, grid_records,
                                        record_like_a_sweep, capsys):
    client, uri = s3
    # a sweep's folder, written locally by the real writers, then uploaded as it is
    local = ResultStore(results_dir)
    for rec in grid_records(study)[:3]:
        record_like_a_sweep(results_dir, local, rec, run_id=f"run-{rec.trial_number}")
    location = Location.of(uri)
    for path in sorted(p for p in results_dir.rglob("*") if p.is_file()):
        location.write_bytes(path.read_bytes(), *path.relative_to(results_dir).parts)
    store = ResultStore(uri)
    expected_trials, expected_epochs = store.read()
    part = "tables/trials/t0001.parquet"
    truncated = _get(client, uri, part)[:64]
    _put(client, uri, part, truncated)  # truncated in place
    with pytest.raises(DamagedFileError):
        store.read()
    assert main(["results", uri]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (
        f"error: {uri}/{part}: damaged Parquet file (Parquet magic bytes not found in footer);"
        f" rebuild with: bkd-sweep results --rebuild {uri}\n")
    assert main(["results", "--rebuild", uri]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"moved aside: {uri}/{part} -> {uri}/{part}.damaged (Parquet magic bytes not found in "
        "footer)",
        f"rebuilt {uri}: 3 trial rows, 9 epoch rows (1 trials recorded again from "
        "trials/<id>/result.json); 1 damaged files moved aside"]
    assert _get(client, uri, part + ".damaged") == truncated  # kept aside, not deleted
    trials, epochs = store.read()
    assert list(trials["trial_id"]) == ["t0000", "t0001", "t0002"]
    cols = [c for c in trials.columns if c not in ("finished_at", "mlflow_run_id")]
    assert trials[cols].equals(expected_trials[cols]) and epochs.equals(expected_epochs)
    assert list(trials["mlflow_run_id"].fillna("-")) == ["run-0", "-", "run-2"]
    assert rebuild(uri).rebuilt == []  # nothing left to do
