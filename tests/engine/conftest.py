"""One Ray instance for the engine tests (ray.init costs seconds and ~1 GB)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the fakes module (pickled by value)


class FakeTracker:
    """Records the engine's tracking calls; behaves like StudyTracker's store for resume."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.records: dict[str, object] = {}
        self.store = self

    def trial_ids(self) -> set[str]:
        return set(self.records)

    def start_sweep(self, *, resume: bool) -> str:
        self.calls.append(("start", resume))
        return "parent"

    def log_epoch(self, trial_id, params, metrics) -> None:
        self.calls.append(("epoch", trial_id, metrics.epoch))

    def finish_trial(self, record) -> None:
        self.calls.append(("finish", record.trial_id))
        self.records[record.trial_id] = record

    def finish_sweep(self) -> None:
        self.calls.append(("end",))

    def finishes(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "finish"]

    def epochs(self, trial_id: str) -> list[int]:
        return [c[2] for c in self.calls if c[0] == "epoch" and c[1] == trial_id]


@pytest.fixture
def fake_tracker():
    return FakeTracker()
