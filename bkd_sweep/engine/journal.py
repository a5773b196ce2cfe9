"""The Optuna study of a sweep: its journal, and the fingerprint that ties it to a study.

The journal is the sweep's source of truth; a resumed sweep must be the same study, so the
journal keeps a fingerprint of what defines the trials. It lives in the study's results
folder (a ``storage.Location``): ``optuna.journal`` on a local or shared path, numbered
objects under ``journal/`` on an object store (journal_backend.py says why).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend

from bkd_sweep import space
from bkd_sweep.config import Study
from bkd_sweep.engine.journal_backend import (CheckedJournalFileBackend,
                                              ObjectStoreJournalBackend, ReadOnlyJournalBackend,
                                              object_name)
from bkd_sweep.engine.journal_repair import repair_journal_file
from bkd_sweep.storage import Location

Where = Location | str | os.PathLike  # a study's results folder
JOURNAL_FILE = "optuna.journal"  # local and shared paths
JOURNAL_OBJECTS = "journal"  # object stores: journal/<sequence>.jsonl
STUDY_HASH_ATTR = "bkd_study_hash"
WORLD_SIZE_ATTR = "bkd_world_size"  # data-parallel workers per trial: part of the recipe
# Where a sweep may differ between sessions without changing what its trials are.
_MACHINE_FIELDS = {"data": ("root", "num_workers"), "teacher": ("checkpoint",),
                   "train": ("device", "threads")}
_MACHINE_PATHS = ("data.root", "teacher.checkpoint", "data.num_workers")


def study_fingerprint(study: Study) -> str:
    """Hash of what defines a sweep's trials (search + base config), not of where or how it
    runs (paths, resources, tracking, report): a resumed sweep must match it."""
    tree = study.model_dump(mode="json", exclude={"resources", "tracking", "report",
                                                   "description", "search", "storage"})
    # params one by one: dumping the union of param kinds through Study warns in pydantic
    # the budget may be raised between sessions without changing what the trials are
    tree["search"] = {**study.search.model_dump(mode="json", exclude={"params", "budget"}),
                      "params": {path: spec.model_dump(mode="json")
                                 for path, spec in study.search.params.items()}}
    for section, keys in _MACHINE_FIELDS.items():
        for key in keys:
            tree[section].pop(key, None)
    for bundles in tree["search"]["linked"].values():
        for overrides in bundles.values():
            for path in _MACHINE_PATHS:
                overrides.pop(path, None)
    blob = json.dumps(tree, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def journal_storage(where: Where, *, repair: bool = False,
                    read_only: bool = False) -> JournalStorage:
    """The sweep's Optuna journal in the results folder ``where``. ``repair`` (the driver
    holding the lease only): first move a cut last line aside (see repair_journal).
    ``read_only``: for watching (a dashboard); any write raises StudyError."""
    if repair:
        repair_journal(where)
    backend = journal_backend(where)
    if read_only:
        backend = ReadOnlyJournalBackend(backend, str(where))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return JournalStorage(backend)


def journal_backend(where: Where) -> BaseJournalBackend:
    folder = Location.of(where)
    if not folder.is_local:
        return ObjectStoreJournalBackend(folder.child(JOURNAL_OBJECTS))
    folder.makedirs()
    return CheckedJournalFileBackend(folder.file(JOURNAL_FILE))


def journal_exists(where: Where) -> bool:
    """Whether the results folder ``where`` holds a journal (possibly without trials)."""
    folder = Location.of(where)
    if folder.is_local:
        return folder.exists(JOURNAL_FILE)
    return folder.exists(JOURNAL_OBJECTS, object_name(0))  # one HEAD, not a listing


def repair_journal(where: Where) -> str | None:
    """Make a journal whose last write was cut appendable again (journal_repair.py); the
    one-line note to show (also logged as a warning), or None when it was whole. Object
    stores need none: each write is one atomic PUT."""
    folder = Location.of(where)
    return repair_journal_file(folder.file(JOURNAL_FILE)) if folder.is_local else None


def stored_fingerprint(study: Study, results_dir: Where) -> str | None:
    """The fingerprint a sweep in ``results_dir`` was started with (None: no sweep there)."""
    attrs = _stored_attrs(study, results_dir)
    return attrs if attrs in (None, "?") else attrs.get(STUDY_HASH_ATTR)


def stored_world_size(study: Study, results_dir: Where) -> int | None:
    """The workers per trial a sweep in ``results_dir`` was started with (None: unknown)."""
    attrs = _stored_attrs(study, results_dir)
    return None if attrs in (None, "?") else attrs.get(WORLD_SIZE_ATTR)


def world_size_change(study: Study, stored: int | None) -> str | None:
    """Why a resume with other workers per trial is refused (None: same, or not recorded).
    The per-worker batch and the steps per epoch, hence the LR schedule, depend on it."""
    workers = study.resources.per_trial.workers
    if stored is None or stored == workers:
        return None
    return (f"workers is {workers} but the sweep started with {stored}: the per-worker batch "
            "and the LR schedule would change mid-study; resume with workers: "
            f"{stored} (or use a new results directory)")


def _stored_attrs(study: Study, results_dir: Where):
    if not journal_exists(results_dir):
        return None
    storage = journal_storage(results_dir)
    names = optuna.get_all_study_names(storage)
    if study.name not in names:
        return "?" if names else None
    return optuna.load_study(study_name=study.name, storage=storage).user_attrs


def open_study(study: Study, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the sweep's Optuna study in ``storage``, or load it when it exists."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.create_study(
            study_name=study.name, storage=storage,
            directions=space.study_directions(study.search),
            sampler=space.make_sampler(study.search),
            pruner=space.make_pruner(study.search.pruner), load_if_exists=True)
