"""`bkd-sweep results --rebuild`: the tables again from trials/<id>/result.json (+ epochs.jsonl),
damaged files moved aside, nothing recorded elsewhere lost."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bkd_sweep.cli import main
from bkd_sweep.engine import trial_files
from bkd_sweep.engine.trial_files import TrialFiles
from bkd_sweep.fileio import write_json_atomic
from bkd_sweep.results import rebuild
from bkd_sweep.tracking import ResultStore
from bkd_sweep.tracking import rebuild as rebuild_module

# what a rebuilt row cannot know exactly: when it was written, and an MLflow run id whose
# only copy was in the damaged file
UNKNOWABLE = ["finished_at", "mlflow_run_id"]


def _sweep(study, results_dir, grid_records, record_like_a_sweep, n: int = 4):
    store = ResultStore(results_dir)
    for rec in grid_records(study)[:n]:
        record_like_a_sweep(results_dir, store, rec, run_id=f"run-{rec.trial_number}")
    write_json_atomic(study.model_dump(mode="json"), results_dir / "study.json")
    return store


def _same_rows(store, expected_trials, expected_epochs) -> None:
    trials, epochs = store.read()
    pd.testing.assert_frame_equal(trials.drop(columns=UNKNOWABLE),
                                  expected_trials.drop(columns=UNKNOWABLE))
    pd.testing.assert_frame_equal(epochs, expected_epochs)


def test_record_file_names_are_the_engines():
    assert (rebuild_module.TRIALS_DIR, rebuild_module.RESULT_FILE,
            rebuild_module.EPOCH_LOG_FILE) == (trial_files.TRIALS_DIR, trial_files.RESULT_FILE,
                                               trial_files.EPOCH_LOG_FILE)


def test_result_json_stores_number_params_and_seed_and_old_files_still_read(
        tmp_path, study, make_record):
    files = TrialFiles(tmp_path)
    rec = make_record(study, 12, {"distill.mode": "bkd", "student.timesteps": 2}, 1,
                      status="pruned", epochs=2, pruned_epoch=2)
    files.write_result(12, rec.result, 2, params=rec.params, seed=rec.seed)
    payload = json.loads((tmp_path / "trials/t0012/result.json").read_text())
    assert (payload["trial_number"], payload["params"], payload["seed"],
            payload["pruned_epoch"]) == (12, rec.params, 1, 2)
    assert files.read_result(12) == (rec.result, 2)
    old = {"result": rec.result.model_dump(mode="json"), "pruned_epoch": 2}  # before #12
    (tmp_path / "trials/t0012/result.json").write_text(json.dumps(old))
    assert files.read_result(12) == (rec.result, 2)


def test_rebuild_recovers_deleted_and_truncated_parts(study, results_dir, grid_records,
                                                      record_like_a_sweep, capsys):
    store = _sweep(study, results_dir, grid_records, record_like_a_sweep)
    expected = store.read()
    parts = results_dir / "tables"
    (parts / "trials/t0001.parquet").unlink()
    (parts / "epochs/t0001.parquet").unlink()
    trial_part = parts / "trials/t0002.parquet"
    truncated = trial_part.read_bytes()[:200]
    trial_part.write_bytes(truncated)
    epochs_part = parts / "epochs/t0003.parquet"
    epochs_part.write_bytes(b"not parquet at all")
    assert main(["results", "--rebuild", str(results_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"moved aside: {epochs_part} -> {epochs_part}.damaged (Parquet magic bytes not found "
        "in footer)",
        f"moved aside: {trial_part} -> {trial_part}.damaged (Parquet magic bytes not found "
        "in footer)",
        f"rebuilt {results_dir}: 4 trial rows, 12 epoch rows (3 trials recorded again from "
        "trials/<id>/result.json); 2 damaged files moved aside",
    ]
    assert (parts / "trials/t0002.parquet.damaged").read_bytes() == truncated  # kept aside
    _same_rows(store, *expected)
    # t0003's epochs part was damaged, its trial row was not: its run id survives
    run_ids = store.read_tables()[0]["mlflow_run_id"].to_pylist()
    assert run_ids == ["run-0", None, None, "run-3"]
    assert main(["results", str(results_dir)]) == 0  # readable again


def test_rebuild_keeps_run_ids_and_times_from_the_snapshot(study, results_dir, grid_records,
                                                           record_like_a_sweep):
    store = _sweep(study, results_dir, grid_records, record_like_a_sweep)
    store.compact()
    expected_trials, expected_epochs = store.read()
    for kind in ("trials", "epochs"):
        (results_dir / f"tables/{kind}/t0002.parquet").write_bytes(b"PAR1")
    report = rebuild(results_dir)
    assert report.rebuilt == ["t0002"] and len(report.moved) == 2
    trials, epochs = store.read()
    pd.testing.assert_frame_equal(trials, expected_trials)  # run ids and times included
    pd.testing.assert_frame_equal(epochs, expected_epochs)


def test_rebuild_from_records_alone_and_rows_without_records_kept(
        study, results_dir, grid_records, record_like_a_sweep, make_record):
    store = _sweep(study, results_dir, grid_records, record_like_a_sweep)
    outcome_lost = make_record(study, 9, {"distill.mode": "none", "student.timesteps": 2}, 0,
                               status="failed", epochs=0, energy=False)
    store.upsert(outcome_lost, mlflow_run_id="run-9")  # a row with no result.json
    store.compact()
    expected = store.read()
    for part in (results_dir / "tables").rglob("t000[0-3].parquet"):
        part.unlink()
    (results_dir / "trials.parquet").write_bytes(b"garbage" * 10)
    report = rebuild(results_dir)
    assert report.moved == [f"moved aside: {results_dir / 'trials.parquet'} -> "
                            f"{results_dir / 'trials.parquet'}.damaged (Parquet magic bytes "
                            "not found in footer)"]
    assert report.rebuilt == ["t0000", "t0001", "t0002", "t0003"]
    assert (report.trial_rows, report.epoch_rows) == (5, 12)
    _same_rows(store, *expected)
    assert store.read()[0].set_index("trial_id").loc["t0009", "mlflow_run_id"] == "run-9"
    # a second rebuild has nothing to do
    again = rebuild(results_dir)
    assert (again.moved, again.rebuilt, again.trial_rows) == ([], [], 5)


def test_old_result_json_rebuilds_linked_and_searched_params(tmp_path, make_study,
                                                             make_record):
    linked = {"small": {"student.timesteps": 2, "train.epochs": 3},
              "large": {"student.timesteps": 4, "train.epochs": 3}}
    study = make_study("linked", search={"params": {"distill.mode": ["none", "bkd"]},
                                         "linked": {"size": linked}, "seeds": [0, 1]})
    results_dir = tmp_path / "results" / "linked"
    store = ResultStore(results_dir)
    files = TrialFiles(results_dir)
    params = {"distill.mode": "bkd", "linked.size": "large"}
    rec = make_record(study, 3, params, 1)
    store.upsert(rec)
    old = {"result": rec.result.model_dump(mode="json"), "pruned_epoch": None}  # before #12
    files.trial_dir(3).local_path.mkdir(parents=True)
    (files.trial_dir(3).local_path / "result.json").write_text(json.dumps(old))
    write_json_atomic(study.model_dump(mode="json"), results_dir / "study.json")
    expected = store.read()
    for part in (results_dir / "tables").rglob("*.parquet"):
        part.unlink()
    report = rebuild(results_dir)
    assert report.rebuilt == ["t0003"]
    trials, epochs = store.read()
    assert trials.loc[0, "param.linked.size"] == "large"
    assert (trials.loc[0, "trial_number"], trials.loc[0, "seed"]) == (3, 1)
    _same_rows(store, *expected)


def test_an_unreadable_record_is_reported_and_skipped(study, results_dir, grid_records,
                                                      record_like_a_sweep):
    _sweep(study, results_dir, grid_records, record_like_a_sweep, n=2)
    (results_dir / "trials/t0001/result.json").write_text("{cut")
    for part in (results_dir / "tables").rglob("t0001.parquet"):
        part.unlink()
    report = rebuild(results_dir)
    record = results_dir / "trials/t0001/result.json"
    assert report.skipped[0].startswith(f"skipped: {record} is unreadable (")
    assert report.lines()[-1] == (f"rebuilt {results_dir}: 1 trial rows, 3 epoch rows (0 trials "
                                  "recorded again from trials/<id>/result.json); 0 damaged "
                                  "files moved aside")


@pytest.mark.parametrize("missing", ["study.json", None])
def test_rebuild_of_a_folder_with_records_only(study, results_dir, grid_records,
                                               record_like_a_sweep, missing):
    store = _sweep(study, results_dir, grid_records, record_like_a_sweep, n=2)
    expected = store.read()
    for part in (results_dir / "tables").rglob("*.parquet"):
        part.unlink()
    if missing:
        (results_dir / missing).unlink()
    assert rebuild(results_dir).rebuilt == ["t0000", "t0001"]
    _same_rows(store, *expected)
