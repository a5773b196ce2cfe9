"""load_results_dir on a storage Location (bkd_sweep.storage): a local folder read through one
gives what its path gives, with the same one-line errors; `bkd-sweep report` turns bad input
(no study.json, an unreachable object store, --storage with a directory) into one `error:`
line and exit 2. The object-store side runs for real in tests/engine/test_s3_sweep.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bkd_sweep.cli import main
from bkd_sweep.report.data import load_results_dir
from bkd_sweep.storage import Location

QUICKSTART = Path(__file__).resolve().parents[2] / "studies" / "quickstart.yaml"
STUDY_JSON_MISSING = "study.json: missing (the report takes its table specs and seeds from it)"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_a_local_location_reads_what_its_path_reads(fixture_results) -> None:
    by_path = load_results_dir(fixture_results)
    by_location = load_results_dir(Location.of(fixture_results))
    assert by_location.study == by_path.study
    pd.testing.assert_frame_equal(by_location.trials, by_path.trials)
    pd.testing.assert_frame_equal(by_location.epochs, by_path.epochs)
    assert len(by_location.trials) == len(by_path.trials) > 0
    assert (by_location.stopped_by, by_location.teacher_device_hours) == (
        by_path.stopped_by, by_path.teacher_device_hours)


def test_a_missing_study_json_is_the_same_one_line_error(fixture_results) -> None:
    (fixture_results / "study.json").unlink()
    messages = []
    for where in (fixture_results, Location.of(fixture_results)):
        with pytest.raises(FileNotFoundError) as caught:
            load_results_dir(where)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] == f"{fixture_results}/{STUDY_JSON_MISSING}"
    gone = fixture_results.parent / "gone"
    for where in (gone, Location.of(gone)):
        with pytest.raises(FileNotFoundError, match=f"^{gone}: no such results directory$"):
            load_results_dir(where)


def test_report_cli_bad_input_is_one_error_line(fixture_results, tmp_path, capsys,
                                                monkeypatch) -> None:
    (fixture_results / "study.json").unlink()
    assert main(["report", str(fixture_results), "--no-mlflow", "--out",
                 str(tmp_path / "out")]) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"error: {fixture_results}/{STUDY_JSON_MISSING}"]

    assert main(["report", str(fixture_results), "--storage", str(tmp_path)]) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: report: --storage goes with a study file or a study name")

    # an object store nobody answers at (a closed port): one line, no traceback, exit 2
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    assert main(["report", "s3://nowhere/prefix/study", "--no-mlflow"]) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: storage s3://nowhere/prefix/study: cannot be read (")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["results", "status", "report"])
def test_every_reader_of_an_unreachable_store_says_one_line(command, tmp_path, capsys,
                                                             monkeypatch) -> None:
    study = tmp_path / "tiny.yaml"
    study.write_text("name: tiny\ndata: {dataset: digits}\n")
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert main([command, str(study), "--storage", "s3://nowhere/prefix"]) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: storage s3://nowhere/prefix/tiny: cannot be read (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # nothing written


def test_submit_without_the_clusters_token_says_where_it_goes(tmp_path) -> None:
    # a fresh process: Ray's token loader keeps what it found once per process
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env.update(HOME=str(tmp_path), RAY_AUTH_MODE="token")  # no ~/.ray/auth_token
    done = subprocess.run([sys.executable, "-m", "bkd_sweep.cli", "submit", str(QUICKSTART),
                           "--address", f"http://127.0.0.1:{_closed_port()}", "--storage",
                           str(tmp_path / "shared")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = _error_lines(done.stderr)
    assert line.startswith("error: RAY_AUTH_MODE=token but no Ray token here: copy the "
                           "cluster's ~/.ray/auth_token")
    assert not (tmp_path / "shared").exists()


@pytest.mark.parametrize("chosen,expected", [(None, "system"), ("jemalloc", "jemalloc")])
def test_commands_use_the_system_allocator_unless_the_user_chose_one(chosen, expected):
    """bkd-sweep's commands read Parquet with Arrow's system allocator (the wheels' mimalloc
    made `report` on 10,000 trials spend seconds in the kernel); ARROW_DEFAULT_MEMORY_POOL
    still wins."""
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if chosen:
        env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    code = ("import pyarrow as pa; from bkd_sweep.cli import use_system_allocator; "
            "use_system_allocator(); print(pa.default_memory_pool().backend_name)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == expected
