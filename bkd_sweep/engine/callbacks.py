"""The driver's Tune callback: tracking (MLflow + Parquet) and the live progress line.

All tracking calls happen here, in the driver process, so the stores see one writer:
on_trial_result -> ``log_epoch``; on_trial_complete / on_trial_error -> ``finish_trial`` with
the TrialRecord the SweepBook recorded (the searcher or scheduler has already told Optuna).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

from ray.tune import Callback
from ray.tune.stopper import Stopper

from bkd_sweep.engine.book import SweepBook
from bkd_sweep.engine.driver_only import DriverOnly
from bkd_sweep.engine.scheduler import epoch_metrics
from bkd_sweep.engine.worker import TEACHER_KEY
from bkd_sweep.records import EpochMetrics, TrialRecord, trial_id_of


class RecordedTrials(Protocol):
    def trial_ids(self) -> set[str]: ...


class Tracker(Protocol):
    """What the engine needs of tracking (bkd_sweep.tracking.StudyTracker)."""

    store: RecordedTrials  # the trials tracking already holds (resume records the others)

    def start_sweep(self, *, resume: bool) -> str: ...
    def log_epoch(self, trial_id: str, params: dict[str, Any], metrics: EpochMetrics) -> None: ...
    def finish_trial(self, record: TrialRecord, finished_at: Any = None) -> Any: ...
    def finish_sweep(self) -> None: ...


def error_reason(trial) -> str:
    """The last line of a failed trial's exception (Ray writes the traceback to a file)."""
    path = getattr(trial, "error_file", None)
    text = ""
    if path and Path(path).exists():
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "failed (no error message)"


class Progress:
    """One line per change of a trial's state, with the sweep's totals and the best so far."""

    def __init__(self, book: SweepBook, stream: TextIO | None = None, enabled: bool = True):
        self.book = book
        self.stream = stream  # None: sys.stdout at print time (Tune pickles callbacks)
        self.enabled = enabled
        self.running: set[str] = set()

    def best_text(self) -> str:
        best = self.book.best()
        if not best:
            return "best: -"
        objectives = self.book.search.objectives
        if len(objectives) > 1:
            return f"pareto front: {len(best)} trial(s)"
        trial = best[0]
        return f"best {trial_id_of(trial.number)} {objectives[0].metric}={trial.value:.4g}"

    def line(self, trial_id: str, event: str, detail: str = "") -> None:
        if not self.enabled:
            return
        counts = self.book.counts()
        done = counts["completed"] + counts["pruned"] + counts["failed"]
        text = (f"[{time.strftime('%H:%M:%S')}] {trial_id} {event}"
                f"{(' ' + detail) if detail else ''} | {done}/{self.book.planned} done "
                f"({counts['completed']} completed, {counts['pruned']} pruned, "
                f"{counts['failed']} failed), {len(self.running)} running | {self.best_text()}")
        print(text, file=self.stream or sys.stdout, flush=True)


def record_detail(record: TrialRecord) -> str:
    result = record.result
    if result.status == "completed":
        top1 = (f"val_top1={result.val_top1:.2f} test_top1={result.test_top1:.2f}"
                if result.val_top1 is not None and result.test_top1 is not None else
                f"val_top1={result.val_top1:.2f}" if result.val_top1 is not None else "")
        energy = f" energy={result.energy_mj:.4g}mJ" if result.energy_mj is not None else ""
        return top1 + energy
    return result.reason or ""


class SweepCallback(DriverOnly, Callback):
    """Tracking + progress for one sweep; holds no decision logic."""

    def __init__(self, book: SweepBook, tracker: Tracker | None, progress: Progress,
                 teachers: Any = None):
        self.book = book
        self.tracker = tracker
        self.progress = progress
        self.teachers = teachers  # teachers_first.PendingTeachers: their jobs' trials end here
        self.finished: list[str] = []  # trial ids recorded this session, in order

    def _spec(self, trial):
        number = self.book.live.number_for(trial.trial_id)
        return None if number is None else self.book.live.spec(number)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        spec = self._spec(trial)
        if spec is None:
            return
        self.progress.running.add(spec.trial_id)
        params = " ".join(f"{k}={v}" for k, v in spec.params.items())
        note = "resumed" if spec.rerun else "running"
        self.progress.line(spec.trial_id, note, f"seed={spec.seed} {params}".strip())

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        spec = self._spec(trial)
        if spec is not None:
            self.progress.line(spec.trial_id, "retrying", error_reason(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        metrics = epoch_metrics(result)
        spec = self._spec(trial)
        if metrics is None or spec is None or self.tracker is None:
            return
        self.tracker.log_epoch(spec.trial_id, spec.params, metrics)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if self._teacher_ended(trial, ""):
            return
        self._record(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if self._teacher_ended(trial, error_reason(trial) or "its trial failed"):
            return
        number = self.book.live.number_for(trial.trial_id)
        if number is not None:
            self.book.fail(number, error_reason(trial))
        self._record(trial)

    def _teacher_ended(self, trial, reason: str) -> bool:
        """A teacher job's trial ended: its report (or failure) goes to the teachers."""
        if self.teachers is None or not self.teachers.owns(trial.trial_id):
            return False
        result = trial.last_result or {}
        report = json.loads(result[TEACHER_KEY]) if TEACHER_KEY in result else None
        self.teachers.finished(trial.trial_id, None if reason else report, reason)
        return True

    def _record(self, trial) -> None:
        number = self.book.live.number_for(trial.trial_id)
        if number is None:
            return
        spec = self.book.live.spec(number)
        self.progress.running.discard(spec.trial_id)
        record = self.book.record(number)
        if record is None:  # stopped by the driver's shutdown: left for --resume
            self.progress.line(spec.trial_id, "interrupted", "left for --resume")
            return
        if self.tracker is not None:
            self.tracker.finish_trial(record)
        self.finished.append(spec.trial_id)
        self.progress.line(spec.trial_id, record.result.status, record_detail(record))


class LeaseStopper(DriverOnly, Stopper):
    """Ends the whole sweep once another driver has taken the study's lease: from then on
    this driver must not ask, tell or record anything (two writers on one journal)."""

    def __init__(self, lease: Any):
        self.lease: Any = lease

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.lease is not None and self.lease.lost is not None

