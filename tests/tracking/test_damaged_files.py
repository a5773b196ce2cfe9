"""A damaged results file is one clear line naming it and the repair command (exit 2 from the
CLI), never a pyarrow traceback."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from bkd_sweep.cli import EXIT_BAD_INPUT, is_input_error, main
from bkd_sweep.fileio import write_json_atomic
from bkd_sweep.tracking import ResultStore
from bkd_sweep.tracking.parquet_files import DamagedFileError
from bkd_sweep.tracking.schema import SCHEMA_VERSION_KEY

P = {"distill.mode": "bkd", "student.timesteps": 4}


def _stored(study, results_dir, make_record, n: int = 3) -> ResultStore:
    store = ResultStore(results_dir)
    for number in range(n):
        store.upsert(make_record(study, number, P, number % 2))
    write_json_atomic(study.model_dump(mode="json"), results_dir / "study.json")
    return store


def _truncate(path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _message(path, reason: str, results_dir) -> str:
    return (f"{path}: damaged Parquet file ({reason}); rebuild with: "
            f"bkd-sweep results --rebuild {results_dir.resolve()}")


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda p: _truncate(p), "Parquet magic bytes not found in footer"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1"), None),
], ids=["truncated", "empty", "garbage"])
def test_a_damaged_part_names_itself_and_the_repair(study, results_dir, make_record, damage,
                                                   reason):
    store = _stored(study, results_dir, make_record)
    part = results_dir / "tables/trials/t0001.parquet"
    damage(part)
    with pytest.raises(DamagedFileError) as caught:
        store.read()
    text = str(caught.value)
    assert "\n" not in text and caught.value.__cause__ is None
    if reason is not None:
        assert text == _message(part, reason, results_dir)
    else:  # garbage between valid magic bytes: Arrow's own first sentence, still one line
        assert text.startswith(f"{part}: damaged Parquet file (") and text.endswith(
            f"); rebuild with: bkd-sweep results --rebuild {results_dir.resolve()}")
    with pytest.raises(DamagedFileError):
        store.trial_ids()


def test_a_damaged_snapshot_and_a_part_of_another_trial(study, results_dir, make_record):
    store = _stored(study, results_dir, make_record)
    epochs_part = results_dir / "tables/epochs/t0002.parquet"
    epochs_part.write_bytes((results_dir / "tables/epochs/t0000.parquet").read_bytes())
    with pytest.raises(DamagedFileError) as caught:
        store.read()
    assert str(caught.value) == _message(
        epochs_part, "holds 3 rows of ['t0000'], expected trial t0002", results_dir)
    store.upsert(make_record(study, 2, P, 0))  # recording it again repairs it
    store.compact()
    _truncate(store.trials_path)
    with pytest.raises(DamagedFileError) as caught:
        store.read()
    assert str(caught.value) == _message(store.trials_path,
                                         "Parquet magic bytes not found in footer", results_dir)


def test_cli_results_exits_2_with_one_line(study, results_dir, make_record, capsys):
    _stored(study, results_dir, make_record)
    part = results_dir / "tables/trials/t0002.parquet"
    _truncate(part)
    assert main(["results", str(results_dir)]) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: " + _message(part, "Parquet magic bytes not found in footer",
                                       results_dir) + "\n"
    # a study that does not exist: one line and exit 2 as well
    assert main(["results", "nope"]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith("error: no results for 'nope'")
    # every other command (e.g. `report`) maps it to exit 2 as well
    assert is_input_error(DamagedFileError(str(part), "truncated", str(results_dir)))


def test_cli_process_prints_no_traceback(study, results_dir, make_record):
    _stored(study, results_dir, make_record)
    _truncate(results_dir / "tables/trials/t0000.parquet", keep=7)
    proc = subprocess.run([sys.executable, "-m", "bkd_sweep.cli", "results", str(results_dir)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_BAD_INPUT and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {results_dir.resolve()}/tables/trials/t0000.parquet: "
                                  "damaged Parquet file (")


def test_cli_results_refuses_an_unknown_schema_version_in_one_line(study, results_dir,
                                                                  make_record, capsys):
    store = _stored(study, results_dir, make_record, n=1)
    part = results_dir / "tables/trials/t0000.parquet"
    table = pq.read_table(part)
    pq.write_table(table.replace_schema_metadata({SCHEMA_VERSION_KEY: b"99"}), part)
    assert main(["results", str(results_dir)]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (f"error: {part}: schema version 99, this bkd-sweep "
                                       "reads versions 1, 2\n")
    assert store.location.exists("tables", "trials", "t0000.parquet")


def test_a_stray_file_among_the_parts_is_skipped_with_one_warning(study, results_dir,
                                                                   make_record, caplog):
    import logging
    import shutil

    from bkd_sweep.results import load, rebuild

    store = _stored(study, results_dir, make_record, n=2)
    strays = []
    for kind in ("trials", "epochs"):
        part = results_dir / "tables" / kind / "t0001.parquet"
        strays.append(part.with_name("t0001 (conflicted copy).parquet"))
        shutil.copy(part, strays[-1])
    with caplog.at_level(logging.WARNING, logger="bkd_sweep.tracking.tables"):
        for _ in range(2):
            res = load(results_dir)
            assert list(res.trials["trial_id"]) == ["t0000", "t0001"]
            assert len(res.epochs) == 6
        report = rebuild(results_dir)
        assert store.compact() == (2, 6)
    assert report is not None and list(store.read_trials()["trial_id"]) == ["t0000", "t0001"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and "conflicted copy" in r.getMessage()]
    assert sorted(warned) == sorted(f"{s}: ignored (not a trial id's part file); move or "
                                    "delete it" for s in strays)
    assert all(s.exists() for s in strays)  # the user's file: named, never deleted
