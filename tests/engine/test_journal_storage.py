"""The journal on the storage root: a local path, or an object store (a real S3-compatible
server process, moto_server, reached through the AWS_* variables as a driver would).

On S3 each append is one new object journal/<sequence>.jsonl that is never rewritten; a
fresh reader finds the same trials, states, values and attributes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bkd_sweep.config import StudyError, load_study_text
from bkd_sweep.engine.book import SweepBook
from bkd_sweep.engine.journal import (journal_exists, journal_storage, stored_fingerprint,
                                      stored_world_size, study_fingerprint)
from bkd_sweep.engine.lease import DriverLease
from bkd_sweep.storage import Location

BUCKET = "bkd-journal"
STUDY = """
name: onstore
distill: {mode: none}
search:
  sampler: random
  n_trials: 4
  params:
    distill.blur_ratio: {low: 0.0, high: 0.6}
  objectives: [{metric: top1, mode: max}]
"""


@pytest.fixture
def moto_endpoint(s3_env):
    """The session's S3 server process (tests/conftest.py), with the bucket."""
    return s3_env(BUCKET)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def s3_results(moto_endpoint, monkeypatch) -> str:
    """A fresh study results folder on the S3 server (the AWS_* variables point at it)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/results/onstore"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.server)])
def results(request, tmp_path) -> str:
    """A study results folder on each kind of storage root."""
    if request.param == "local":
        return str(tmp_path / "results" / "onstore")
    return request.getfixturevalue("s3_results")


def run_trials(storage) -> optuna.Study:
    """Three trials of every ending: complete (with attrs and reports), pruned, failed."""
    study = optuna.create_study(study_name="onstore", storage=storage, direction="maximize")
    study.set_user_attr("bkd_study_hash", "abc123")
    done = study.ask()
    done.suggest_float("x", 0.0, 1.0)
    done.set_user_attr("seed", 7)
    done.report(0.5, step=1)
    study.tell(done, 0.75)
    pruned = study.ask()
    pruned.suggest_float("x", 0.0, 1.0)
    pruned.report(0.1, step=1)
    study.tell(pruned, state=TrialState.PRUNED)
    failed = study.ask()
    failed.set_user_attr("reason", "non-finite loss")
    study.tell(failed, state=TrialState.FAIL)
    return study


def summary(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.value, t.params, t.user_attrs, t.intermediate_values)
            for t in study.trials]


def test_a_fresh_reader_finds_every_trial(results):
    written = run_trials(journal_storage(results))
    reread = optuna.load_study(study_name="onstore", storage=journal_storage(results))
    assert summary(reread) == summary(written)
    assert [t.state for t in reread.trials] == [TrialState.COMPLETE, TrialState.PRUNED,
                                               TrialState.FAIL]
    assert reread.trials[0].user_attrs == {"seed": 7} and reread.trials[0].value == 0.75
    assert reread.user_attrs == {"bkd_study_hash": "abc123"}
    assert journal_exists(results)


@pytest.mark.server
def test_s3_journal_is_new_objects_never_rewritten(s3_results):
    folder = Location.of(s3_results)
    storage = journal_storage(s3_results)
    study = run_trials(storage)
    names = list(folder.list_files("journal"))
    assert names == [f"{n:012d}.jsonl" for n in range(len(names))] and len(names) > 10
    first = {name: folder.read_bytes("journal", name) for name in names}
    study.set_user_attr("later", True)  # one more append: one more object
    after = list(folder.list_files("journal"))
    assert after == names + [f"{len(names):012d}.jsonl"]
    assert {name: folder.read_bytes("journal", name) for name in names} == first
    assert not folder.exists("optuna.journal")


@pytest.mark.server
def test_a_reader_follows_a_writer_as_it_appends(s3_results):
    writer = optuna.create_study(study_name="onstore", storage=journal_storage(s3_results))
    reader = optuna.load_study(study_name="onstore", storage=journal_storage(s3_results))
    assert reader.trials == []
    writer.enqueue_trial({"x": 0.5})
    trial = writer.ask()
    trial.suggest_float("x", 0.0, 1.0)
    writer.tell(trial, 1.5)
    assert [(t.state, t.value, t.params) for t in reader.trials] == [
        (TrialState.COMPLETE, 1.5, {"x": 0.5})]


def test_stored_fingerprint_and_world_size_on_each_root(results, tmp_path):
    study = load_study_text(STUDY).study
    assert not journal_exists(results)
    assert stored_fingerprint(study, results) is None
    # SweepBook keeps its per-trial files locally; its journal goes where ``results`` is
    SweepBook(study, tmp_path / "files", storage=journal_storage(results)).open()
    assert stored_fingerprint(study, results) == study_fingerprint(study)
    assert stored_world_size(study, Location.of(results)) == study.resources.per_trial.workers


@pytest.mark.server
def test_a_damaged_object_is_one_line_naming_it(s3_results):
    run_trials(journal_storage(s3_results))
    folder = Location.of(s3_results)
    folder.write_bytes(b'{"op_code":2,"study_id":0,"user_attr":{"a":1}}\nnot json\n',
                       "journal", f"{len(list(folder.list_files('journal'))):012d}.jsonl")
    with pytest.raises(StudyError) as info:
        optuna.load_study(study_name="onstore", storage=journal_storage(s3_results))
    assert info.value.line == 2 and info.value.file.startswith(f"{s3_results}/journal/")
    assert "\n" not in str(info.value)


@pytest.mark.server
def test_driver_lease_on_s3(s3_results):
    with DriverLease(s3_results, "onstore", settle_s=0.05):
        assert Location.of(s3_results).exists("driver.lease")
        with pytest.raises(StudyError, match=r"^study onstore is being run by another "
                                             rf"driver \(pid {os.getpid()} on host "):
            DriverLease(s3_results, "onstore", settle_s=0.05).acquire()
    assert not Location.of(s3_results).exists("driver.lease")


@pytest.mark.server
def test_a_read_only_journal_refuses_writes(s3_results):
    run_trials(journal_storage(s3_results))
    objects = list(Location.of(s3_results).list_files("journal"))
    watched = optuna.load_study(study_name="onstore",
                                storage=journal_storage(s3_results, read_only=True))
    assert len(watched.trials) == 3
    with pytest.raises(StudyError, match="opened read-only"):
        watched.set_user_attr("note", "from a dashboard")
    assert list(Location.of(s3_results).list_files("journal")) == objects


@pytest.mark.server
def test_optuna_dashboard_serves_an_s3_journal(s3_results):
    """docs/watching.md's command for a journal on an object store."""
    pytest.importorskip("optuna_dashboard")
    run_trials(journal_storage(s3_results))
    port = _free_port()
    code = ("from optuna_dashboard import run_server; "
            "from bkd_sweep.engine.journal import journal_storage; "
            f"run_server(journal_storage('{s3_results}', read_only=True), port={port})")
    repo = Path(__file__).resolve().parents[2]  # bkd_sweep importable in the child too
    server = subprocess.Popen([sys.executable, "-c", code], cwd=repo,
                              env={**os.environ, "PYTHONPATH": str(repo)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/0",
                                            timeout=2) as response:
                    detail = json.load(response)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert detail["name"] == "onstore"
        assert [t["state"] for t in detail["trials"]] == ["Complete", "Pruned", "Fail"]
    finally:
        server.terminate()
        server.wait(timeout=30)
