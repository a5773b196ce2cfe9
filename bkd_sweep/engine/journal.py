"""The Optuna study of a sweep: its journal file, and the fingerprint that ties it to a study.

The journal (``results/<study>/optuna.journal``) is the sweep's source of truth; a resumed
sweep must be the same study, so the journal keeps a fingerprint of what defines the trials.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from bkd_sweep import space
from bkd_sweep.config import Study

JOURNAL_FILE = "optuna.journal"
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


def journal_storage(results_dir: Path) -> JournalStorage:
    """The multi-process-safe Optuna journal under results/<study>/."""
    path = Path(results_dir) / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return JournalStorage(JournalFileBackend(str(path)))


def stored_fingerprint(study: Study, results_dir: Path) -> str | None:
    """The fingerprint a sweep in ``results_dir`` was started with (None: no sweep there)."""
    attrs = _stored_attrs(study, results_dir)
    return attrs if attrs in (None, "?") else attrs.get(STUDY_HASH_ATTR)


def stored_world_size(study: Study, results_dir: Path) -> int | None:
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


def _stored_attrs(study: Study, results_dir: Path):
    if not (Path(results_dir) / JOURNAL_FILE).exists():
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
