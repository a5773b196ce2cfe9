"""`bkd-sweep results --rebuild`: the Parquet tables again, from what the sweep wrote per trial.

Each finished trial of a sweep has ``trials/<id>/result.json`` (its TrialResult, pruned epoch
and, since #12, trial number, searched params and seed) and ``trials/<id>/epochs.jsonl`` (the
epochs the driver saw), written by ``engine/trial_files.py`` before the trial was recorded.
A rebuild:

1. reads every Parquet file of the folder; a damaged one is moved aside (``<name>.damaged``);
2. records again every trial that has a result.json but no row (or had a damaged file),
   keeping the MLflow run id and time of a row that survives elsewhere (the snapshot);
3. rows without a result.json are kept as they are: nothing recorded elsewhere is lost;
4. writes fresh snapshots (compact).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from bkd_sweep.config import TrialConfig, flatten
from bkd_sweep.records import EpochMetrics, TrialRecord, TrialResult, parse_epoch_log
from bkd_sweep.storage import Location
from bkd_sweep.tracking.parquet_files import (
    DamagedFileError,
    read_checked,
    short_reason,
)
from bkd_sweep.tracking.store import ResultStore, read_study_json
from bkd_sweep.tracking.tables import KINDS, coverage_of, list_parts, read_part

# The per-trial record files of engine/trial_files.py (tracking does not import the engine;
# tests/tracking/test_rebuild.py checks these names stay equal)
TRIALS_DIR = "trials"
RESULT_FILE = "result.json"
EPOCH_LOG_FILE = "epochs.jsonl"
DAMAGED_SUFFIX = ".damaged"
LINKED_PREFIX = "linked."


@dataclass
class RebuildReport:
    study_uri: str
    moved: list[str] = field(default_factory=list)  # one line per damaged file moved aside
    skipped: list[str] = field(default_factory=list)  # one line per unreadable record
    rebuilt: list[str] = field(default_factory=list)  # trial ids recorded again
    trial_rows: int = 0
    epoch_rows: int = 0

    def lines(self) -> list[str]:
        summary = (f"rebuilt {self.study_uri}: {self.trial_rows} trial rows, "
                   f"{self.epoch_rows} epoch rows ({len(self.rebuilt)} trials recorded again "
                   f"from trials/<id>/{RESULT_FILE}); {len(self.moved)} damaged files "
                   "moved aside")
        return [*self.moved, *self.skipped, summary]


def rebuild_tables(location: Location) -> RebuildReport:
    """Rebuild the study folder's Parquet tables (see the module docstring)."""
    report = RebuildReport(location.uri)
    damaged_ids = _move_damaged(location, report)
    study = read_study_json(location)
    store = ResultStore(location, study_name=(study or {}).get("name"))
    trials, epochs = store.read_tables()
    rows = {r["trial_id"]: r for r in trials.select(
        [c for c in ("trial_id", "mlflow_run_id", "finished_at") if c in trials.column_names]
    ).to_pylist()}
    with_epochs = set(epochs["trial_id"].to_pylist())
    for trial_id in location.list_dirs(TRIALS_DIR):
        if not location.exists(TRIALS_DIR, trial_id, RESULT_FILE):
            continue
        try:
            record = record_from_files(location, trial_id, study)
        except (ValueError, KeyError, TypeError) as exc:  # a record that cannot be parsed
            report.skipped.append(f"skipped: {location.child(TRIALS_DIR, trial_id, RESULT_FILE)}"
                                  f" is unreadable ({short_reason(exc)})")
            continue
        missing_epochs = bool(record.result.history) and trial_id not in with_epochs
        if trial_id in rows and trial_id not in damaged_ids and not missing_epochs:
            continue
        kept = rows.get(trial_id, {})
        store.upsert(record, kept.get("mlflow_run_id"), finished_at=kept.get("finished_at"))
        report.rebuilt.append(trial_id)
    report.trial_rows, report.epoch_rows = store.compact()
    return report


# -------------------------------------------------------------------- damaged files


def _move_damaged(location: Location, report: RebuildReport) -> set[str]:
    """Read every Parquet file; move the damaged ones aside. Returns the trial ids whose
    part was damaged."""
    damaged: set[str] = set()
    for kind in KINDS:
        try:
            found = read_checked(location, kind.snapshot)
            if found is not None:
                coverage_of(found[1], location.child(kind.snapshot).uri, location.uri)
        except DamagedFileError as exc:
            _move_aside(location, (kind.snapshot,), exc.reason, report)

        def check(trial_id: str, kind=kind) -> str | None:
            try:
                read_part(location, kind, trial_id)
            except DamagedFileError as exc:
                return exc.reason
            return None

        ids = [p.trial_id for p in list_parts(location, kind)]
        with ThreadPoolExecutor(8) as pool:
            for trial_id, reason in zip(ids, pool.map(check, ids)):
                if reason is not None:
                    _move_aside(location, kind.part(trial_id), reason, report)
                    damaged.add(trial_id)
    return damaged


def _move_aside(location: Location, parts: tuple[str, ...], reason: str,
                report: RebuildReport) -> None:
    source = location.file(*parts)
    target, n = source + DAMAGED_SUFFIX, 1
    while location.fs.get_file_info(target).type != pafs.FileType.NotFound:
        target, n = f"{source}.{n}{DAMAGED_SUFFIX}", n + 1  # keep an earlier damaged copy
    location.fs.move(source, target)
    where = location.child(*parts).uri
    report.moved.append(f"moved aside: {where} -> {where}{target[len(source):]} ({reason})")


# -------------------------------------------------------------------- per-trial records


def record_from_files(location: Location, trial_id: str,
                      study: dict[str, Any] | None) -> TrialRecord:
    """The TrialRecord of ``trials/<trial_id>/``: result.json, plus the epochs of the epoch
    log that the result's history lacks (as the tracker merges them when recording)."""
    payload = json.loads(location.read_text(TRIALS_DIR, trial_id, RESULT_FILE))
    result = TrialResult.model_validate(payload["result"])
    result = result.model_copy(update={"config": _declaration_order(result.config)})
    log = _epoch_log(location, trial_id)
    history = {m.epoch: m for m in result.history}
    if set(log) - set(history):
        merged = sorted({**log, **history}.values(), key=lambda m: m.epoch)
        result = result.model_copy(update={"history": merged})
    number = payload.get("trial_number")
    if number is None:  # written before #12: the id is t%04d of the Optuna number
        number = int(trial_id.lstrip("t"))
    seed = payload.get("seed")
    if seed is None:
        seed = result.config["seed"]
    params = payload.get("params")
    if params is None:
        params = searched_params(result.config, study)
    return TrialRecord(trial_id=trial_id, trial_number=int(number), params=dict(params),
                       seed=int(seed), result=result, pruned_epoch=payload.get("pruned_epoch"))


def _declaration_order(config: dict[str, Any]) -> dict[str, Any]:
    """The config with its keys in TrialConfig order, as the sweep dumped it (result.json
    sorts keys; config_json keeps the dump's order). Unchanged if it no longer validates."""
    try:
        ordered = TrialConfig.model_validate(config).model_dump(mode="json")
    except ValueError:
        return config
    return ordered if ordered == config else config


def _epoch_log(location: Location, trial_id: str) -> dict[int, EpochMetrics]:
    """The trial's epoch log by epoch (no log: empty)."""
    try:
        return parse_epoch_log(location.read_text(TRIALS_DIR, trial_id, EPOCH_LOG_FILE))
    except FileNotFoundError:
        return {}


def searched_params(config: dict[str, Any], study: dict[str, Any] | None) -> dict[str, Any]:
    """The searched params of a result.json written before it stored them: the study's
    searched paths read from the trial's config, and each linked group's label whose
    overrides the config holds (a label only when exactly one matches)."""
    search = (study or {}).get("search") or {}
    flat = flatten(config)
    params = {path: flat[path] for path in search.get("params", {})
              if path != "seed" and path in flat}
    for group, bundles in (search.get("linked") or {}).items():
        labels = [label for label, overrides in bundles.items()
                  if all(flat.get(path) == value for path, value in overrides.items())]
        if len(labels) == 1:
            params[LINKED_PREFIX + group] = labels[0]
    return params
