"""A sweep's per-trial files under ``results/<study>/trials/<id>/``.

* ``epochs.jsonl``, the epoch log: one EpochMetrics JSON line per epoch the driver saw, so a
  resumed driver still has the epochs of a trial it must record as pruned or failed;
* ``result.json``: the trial's outcome (with its number, and its searched params and seed
  when the caller gives them), written (atomically) *before* Optuna is told, so a driver
  killed in between finishes the bookkeeping on ``--resume`` without rerunning it, and the
  Parquet rows can be rebuilt from it (``bkd-sweep results --rebuild``).

(``ckpt/`` beside them is the trial's own checkpoint folder, written by run_trial.)

The folder is a storage ``Location``: a local or shared path, or an object store. Object stores
have no append, so there the epoch log is rewritten whole at each epoch (a few KB per trial).
"""

from __future__ import annotations

import json
import os
from typing import Any

from bkd_sweep.records import EpochMetrics, TrialResult, parse_epoch_log, trial_id_of
from bkd_sweep.storage import Location

TRIALS_DIR = "trials"
RESULT_FILE = "result.json"
EPOCH_LOG_FILE = "epochs.jsonl"  # JSON lines, not to be confused with epochs.parquet
CHECKPOINT_DIR = "ckpt"


class TrialFiles:
    """The per-trial files of one sweep (results/<study>)."""

    def __init__(self, results_dir: Location | str | os.PathLike):
        self.location = Location.of(results_dir)

    def trial_dir(self, number: int) -> Location:
        return self.location.child(TRIALS_DIR, trial_id_of(number))

    def append_epoch(self, number: int, metrics: EpochMetrics) -> None:
        """Add one epoch to the trial's epoch log."""
        folder = self.trial_dir(number)
        line = metrics.model_dump_json() + "\n"
        if folder.is_local:
            folder.makedirs()
            _append_line(folder.file(EPOCH_LOG_FILE), line)
            return
        old = folder.read_text(EPOCH_LOG_FILE) if folder.exists(EPOCH_LOG_FILE) else ""
        folder.write_text(old[:old.rfind("\n") + 1] + line, EPOCH_LOG_FILE)

    def read_epochs(self, number: int) -> dict[int, EpochMetrics]:
        """The epoch log by epoch (see read_epoch_log)."""
        return read_epoch_log(self.trial_dir(number))

    def write_result(self, number: int, result: TrialResult, pruned_epoch: int | None, *,
                     params: dict[str, Any] | None = None, seed: int | None = None) -> None:
        """Write result.json. The trial number, and the searched ``params`` and ``seed`` when
        given, are stored too, so the trial's Parquet rows can be rebuilt from this file alone
        (``bkd-sweep results --rebuild``): a ``linked.<group>`` label is not in the config."""
        payload: dict[str, Any] = {"result": result.model_dump(mode="json"),
                                   "pruned_epoch": pruned_epoch, "trial_number": number}
        if params is not None:
            payload["params"] = params
        if seed is not None:
            payload["seed"] = seed
        self.trial_dir(number).write_text(json.dumps(payload), RESULT_FILE)

    def read_result(self, number: int) -> tuple[TrialResult, int | None] | None:
        """(result, pruned epoch) from result.json, or None when the trial has none."""
        try:
            payload = json.loads(self.trial_dir(number).read_text(RESULT_FILE))
        except FileNotFoundError:
            return None
        return TrialResult.model_validate(payload["result"]), payload.get("pruned_epoch")



def _append_line(path: str, line: str) -> None:
    """Append ``line`` to a local file, first dropping a last line a kill cut short: glued
    onto it, this line would be unreadable too (the log skips unparsable lines)."""
    with open(path, "ab+") as handle:  # appends always land at the end, after any cut
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                handle.seek(0)
                handle.truncate(handle.read().rfind(b"\n") + 1)
        handle.write(line.encode("utf-8"))


def read_epoch_log(trial_dir: Location) -> dict[int, EpochMetrics]:
    """A trial folder's epoch log by epoch (no log: empty)."""
    try:
        return parse_epoch_log(trial_dir.read_text(EPOCH_LOG_FILE))
    except FileNotFoundError:
        return {}
