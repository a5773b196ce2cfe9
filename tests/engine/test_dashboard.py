"""docs/watching.md's command works: ``optuna-dashboard <results>/<study>/optuna.journal``
serves a real sweep journal (its studies and trials through the dashboard's JSON API)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bkd_sweep.config import load_study_text
from bkd_sweep.engine.book import SweepBook
from bkd_sweep.engine.journal import JOURNAL_FILE
from bkd_sweep.records import EpochMetrics, TrialResult

pytestmark = pytest.mark.server

STUDY = """
name: watched
distill: {mode: none}
train: {epochs: 1}
search:
  sampler: grid
  params:
    distill.blur_ratio: [0.0, 0.2, 0.4]
  objectives: [{metric: top1, mode: max}]
  pruner: {name: none}
"""


def sweep_journal(results: Path) -> Path:
    """A sweep of 3 grid trials, two of them finished (62.5 and 71.0 top-1)."""
    book = SweepBook(load_study_text(STUDY).study, results)
    book.open()
    for top1 in (62.5, 71.0):
        spec = book.next_trial()
        history = [EpochMetrics(epoch=1, top1=top1, top5=top1, val_loss=1.0, loss=1.0,
                                lr=0.1, wall_seconds=1.0)]
        book.complete(spec.number, TrialResult.from_history(
            "completed", history, config=spec.config.model_dump(mode="json"),
            config_hash=spec.config.config_hash(), wall_seconds=1.0, devices=1, device="cpu"))
    return results / JOURNAL_FILE


def get_json(url: str, timeout_s: float) -> dict:
    """GET ``url`` as JSON, retrying while the server starts."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.load(response)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_optuna_dashboard_serves_the_sweep_journal(tmp_path):
    pytest.importorskip("optuna_dashboard")
    command = Path(sys.executable).with_name("optuna-dashboard")
    if not command.exists():
        pytest.skip("optuna-dashboard is not installed next to this Python")
    journal = sweep_journal(tmp_path / "results" / "watched")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(command), str(journal), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/api/studies"
        summaries = get_json(base, timeout_s=60)["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["watched"]
        detail = get_json(f"{base}/{summaries[0]['study_id']}", timeout_s=10)
        trials = sorted(detail["trials"], key=lambda t: t["number"])
        assert [t["state"] for t in trials] == ["Complete", "Complete", "Waiting"]
        assert [t["values"] for t in trials[:2]] == [[62.5], [71.0]]
    finally:
        server.terminate()  # gunicorn's master stops its workers on SIGTERM
        server.wait(timeout=30)
