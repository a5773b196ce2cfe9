"""Every check run before a sweep or a trial starts: one home, one message per problem.

Each check is a pure function: the loaded study in, a list of problems out (StudyError values
with file:line and field, in the order they are reported). ``raise_first`` runs checks in
order and raises the first problem, so a command stops at one line, before anything is
written. The commands combine them:

* ``check_references`` (validate, plan, run, submit): every registry name (dataset, student,
  teacher) exists, a distilling study names its teacher checkpoint, the search can run;
* ``check_runnable`` (run, before Ray starts): variables set, a well-formed search, data roots
  and teacher checkpoints present here, a place for MLflow and a writable results dir, an
  earlier sweep only with resume and only of the same study;
* ``check_trial_runnable`` (train): the same for one resolved trial config.

``NODE_CHECKS`` are the checks whose answer depends on the machine; a cluster runs them on
every node (each returns its problems, so a node can report them instead of raising).
Heavy imports (registries, the search space, the engine's journal) happen inside the checks
that need them: the trial stage imports the teacher rule from here cheaply.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bkd_sweep.config import CategoricalParam, LoadedStudy, Study, StudyError, TrialConfig, names
from bkd_sweep.records import EPOCH_METRIC_MODES

Check = Callable[[LoadedStudy], list[StudyError]]

_REGISTRY_FIELDS = ("data.dataset", "student.arch", "teacher.arch")
_CHECK_GRID_LIMIT = 5000  # a grid this small has each of its trials checked


def raise_first(problems: Iterable[StudyError]) -> None:
    """Raise the first problem, if any (an iterable, so later checks need not run)."""
    for problem in problems:
        raise problem


def run_checks(loaded: LoadedStudy, checks: Iterable[Check]) -> None:
    """Run ``checks`` in order and raise the first problem found."""
    raise_first(itertools.chain.from_iterable(check(loaded) for check in checks))


# --------------------------------------------------------------------------------------
# The teacher rule (one definition; the trial stage asks it too)


def teacher_checkpoint_missing(mode: str, checkpoint: str | None) -> str | None:
    """Distilling needs ``teacher.checkpoint`` (a local weights file or 'train'): the problem,
    or None when ``mode`` is 'none' or a checkpoint is given."""
    if mode == "none" or checkpoint is not None:
        return None
    return (f"required when distill.mode is {mode!r}: a local weights file or 'train' "
            "(train once on the study's data)")


# --------------------------------------------------------------------------------------
# Registry names (validate / plan)


def reference_problems(loaded: LoadedStudy) -> list[StudyError]:
    """Names no registry knows: in the base config, among searched values, in linked bundles."""
    study = loaded.study
    base = study.base_config().flat()
    problems = []
    for field in _REGISTRY_FIELDS:
        values = [(base[field], field)]
        spec = study.search.params.get(field)
        if isinstance(spec, CategoricalParam):
            values += [(v, f"search.params.{field}") for v in spec.values]
        values += [(bundle[field], f"search.linked.{group}.{label}.{field}")
                   for group, bundles in study.search.linked.items()
                   for label, bundle in bundles.items() if field in bundle]
        problems += [p for value, where in values
                     if (p := _name_problem(loaded, field, value, where)) is not None]
    return problems


def teacher_problems(loaded: LoadedStudy) -> list[StudyError]:
    """A study that distils (in its base config, any searched mode or a linked bundle)
    without a checkpoint."""
    study = loaded.study
    modes = {study.distill.mode}
    spec = study.search.params.get("distill.mode")
    if isinstance(spec, CategoricalParam):
        modes = set(spec.values)
    distilling = sorted(modes - {"none"})
    problem = distilling and teacher_checkpoint_missing(distilling[0], study.teacher.checkpoint)
    if problem:
        return [loaded.error(problem, "teacher.checkpoint")]
    for group, bundles in study.search.linked.items():
        for label, bundle in bundles.items():
            mode = bundle.get("distill.mode", "none")
            checkpoint = bundle.get("teacher.checkpoint", study.teacher.checkpoint)
            if problem := teacher_checkpoint_missing(mode, checkpoint):
                return [loaded.error(problem, f"search.linked.{group}.{label}")]
    return []


def _registry(field: str) -> tuple[set[str] | None, str]:
    """(the names a registry field accepts, or None for teachers; the kind of name)."""
    if field == "data.dataset":
        from bkd_sweep.data import list_datasets
        return set(list_datasets()), "dataset"
    if field == "student.arch":
        from bkd_sweep.models import list_students
        return set(list_students()), "student"
    return None, "teacher"


def _is_teacher(name: str) -> bool:
    from bkd_sweep.models import list_students, list_teachers
    if name in list_teachers() or name in list_students():
        return True
    import timm
    return name in timm.list_models()


# the built-in names, known without importing the registries (torch, spikingjelly, timm)
_BUILT_IN = {"data.dataset": names.DATASETS, "student.arch": names.STUDENTS,
             "teacher.arch": names.TEACHERS | names.STUDENTS | names.TIMM_TEACHERS}


def _name_problem(loaded: LoadedStudy, field: str, value: Any, where: str) -> StudyError | None:
    if isinstance(value, str) and value in _BUILT_IN[field]:
        return None
    known, kind = _registry(field)
    if (_is_teacher(value) if known is None else value in known):
        return None
    from bkd_sweep.models import list_teachers
    pool = sorted(known) if known is not None else sorted(list_teachers())
    close = difflib.get_close_matches(str(value), pool, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listing = "" if known is None else f"; valid: {', '.join(pool)}"
    return loaded.error(f"unknown {kind} {value!r}{hint}{listing}", where)


# --------------------------------------------------------------------------------------
# The study as written (run)


def variable_problems(loaded: LoadedStudy) -> list[StudyError]:
    """${VAR}s that are not set, each where it is first used."""
    return [loaded.error(f"environment variable {var} is not set (used as ${{{var}}})",
                         _where_used(loaded.raw, var)) for var in loaded.unresolved]


def search_problems(loaded: LoadedStudy) -> list[StudyError]:
    """A when-cycle, a sampled continuous space without n_trials, an unknown pruned metric."""
    from bkd_sweep import space

    search = loaded.study.search
    problems = []
    try:
        space.param_order(search)
        space.count_trials(search)
    except StudyError as exc:  # the search space knows the field, the study its file:line
        problems.append(loaded.error(exc.message, exc.field))
    metric = search.pruned_metric
    if search.pruner.name != "none" and metric.split(".")[0] not in (*EPOCH_METRIC_MODES,
                                                                    "loss_terms"):
        problems.append(loaded.error(f"unknown per-epoch metric {metric!r}; allowed: "
                                     f"{', '.join(EPOCH_METRIC_MODES)}, loss_terms.<term>",
                                     "search.pruned_metric"))
    return problems


def _where_used(raw: Any, variable: str, prefix: str = "") -> str | None:
    """The dotted path of the first value mentioning ${variable}."""
    if isinstance(raw, dict):
        items: Iterable = raw.items()
    elif isinstance(raw, list):
        items = enumerate(raw)
    else:
        return prefix.rstrip(".") if isinstance(raw, str) and "${" + variable in raw else None
    for key, value in items:
        found = _where_used(value, variable, f"{prefix}{key}.")
        if found:
            return found
    return None


# --------------------------------------------------------------------------------------
# This machine: paths and the results directory (NODE_CHECKS)


def path_problems(loaded: LoadedStudy) -> list[StudyError]:
    """Data roots and teacher checkpoints missing on this machine, over the configurations
    a sweep can reach (see _configs_to_check)."""
    try:
        configs = configs_to_check(loaded.study)
    except StudyError as exc:
        return [exc]
    problems: list[StudyError] = []
    seen: set[tuple] = set()
    for config in configs:
        data = config.data
        if ("data", data.dataset, data.root) not in seen:
            seen.add(("data", data.dataset, data.root))
            problems += _data_root_problems(loaded, data.dataset, data.root)
        key = ("teacher", config.distill.mode != "none", config.teacher.checkpoint)
        if key not in seen and config.distill.mode != "none":
            seen.add(key)
            problems += _teacher_file_problems(loaded, config)
    return problems


def _data_root_problems(loaded: LoadedStudy, dataset: str, root: str | None
                        ) -> list[StudyError]:
    if dataset in names.BUNDLED_DATASETS or (root and Path(root).expanduser().exists()):
        return []  # decided without the data registry, which imports torch
    from bkd_sweep.data import dataset_needs_root

    if not dataset_needs_root(dataset):
        return []
    if not root:
        return [loaded.error(f"dataset {dataset!r} needs data.root (a local copy; nothing is "
                             "downloaded)", "data.root")]
    if not Path(root).expanduser().exists():
        return [loaded.error(f"{dataset}: data root {root} does not exist", "data.root")]
    return []


def _teacher_file_problems(loaded: LoadedStudy, config: TrialConfig) -> list[StudyError]:
    """The teacher rule, then: a checkpoint other than 'train' is an existing file."""
    ckpt = config.teacher.checkpoint
    problem = teacher_checkpoint_missing(config.distill.mode, ckpt)
    if problem:
        return [loaded.error(problem, "teacher.checkpoint")]
    if config.distill.mode != "none" and ckpt != "train" and not Path(ckpt).expanduser().is_file():
        return [loaded.error(f"teacher checkpoint not found: {ckpt}", "teacher.checkpoint")]
    return []


def configs_to_check(study: Study, trials_only: bool = False) -> list[TrialConfig]:
    """Configurations whose paths must exist: every grid trial when the grid is small, else
    the base config plus one per linked bundle and per listed path-like value.
    ``trials_only``: a small grid's trials without the base config, which may be none of them
    (the teachers to prepare: an extra one would cost a task)."""
    from bkd_sweep import space

    search = study.search
    configs = [study.base_config()]
    points = space.grid(search) if space.is_finite(search) else []
    if points and len(points) <= _CHECK_GRID_LIMIT:
        configs = [] if trials_only else configs
        for params in points:
            try:
                configs.append(study.trial_config(params, search.seeds[0]))
            except StudyError:
                continue
        return configs
    for group, bundles in search.linked.items():
        for label in bundles:
            configs.append(study.trial_config({f"linked.{group}": label}, search.seeds[0]))
    for path in ("data.dataset", "data.root", "teacher.checkpoint", "distill.mode"):
        spec = search.params.get(path)
        if isinstance(spec, CategoricalParam):
            for value in spec.values:
                configs.append(study.trial_config({path: value}, search.seeds[0]))
    return configs


def results_dir_problems(loaded: LoadedStudy) -> list[StudyError]:
    """A results directory this machine cannot write (or create). (An object-store root is
    probed by writing to it: engine/nodes.py, before a sweep.)"""
    location = loaded.results_location()
    if not location.is_local:  # an object store: write, read back and delete a probe
        from bkd_sweep.storage import StorageError

        try:
            location.check_writable()
        except StorageError as exc:
            return [loaded.error(str(exc), "storage")]
        return []
    results = loaded.results_dir()
    if writable_dir(results):
        return []
    return [loaded.error(f"results directory {results} is not writable",
                         "tracking.results_dir")]


def writable_dir(path: Path) -> bool:
    """``path``, or the nearest folder above it that exists, is a writable directory."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def machine_problems(loaded: LoadedStudy) -> list[StudyError]:
    """One trial needs more than this machine has (embedded Ray only; a cluster's nodes are
    checked once joined): Ray would start, the tracking store be written, then refused."""
    from bkd_sweep.engine.plan import machine_resources, trials_fitting
    from bkd_sweep.engine.ray_setup import is_embedded

    if not is_embedded():
        return []
    per_trial, here = loaded.study.resources.per_trial, machine_resources()
    # no nvidia-smi and no CUDA_VISIBLE_DEVICES: 0 GPUs is sure only without a driver
    known = (here["gpus"] or "CUDA_VISIBLE_DEVICES" in os.environ
             or shutil.which("nvidia-smi") or not Path("/proc/driver/nvidia").exists())
    gpus = here["gpus"] if known else per_trial.gpu * per_trial.workers
    if trials_fitting(per_trial, here["cpus"], gpus):
        return []
    return [loaded.error(f"one trial needs {per_trial.cpu * per_trial.workers:g} CPUs and "
                         f"{per_trial.gpu * per_trial.workers:g} GPUs; this machine has "
                         f"{here['cpus']} CPUs and {gpus:g} GPUs", "resources.per_trial")]


NODE_CHECKS: tuple[Check, ...] = (variable_problems, path_problems, results_dir_problems)


# --------------------------------------------------------------------------------------
# An earlier sweep in the results directory (the driver only)


def _has_trials(study, results) -> bool:
    """Whether the journal holds any trial: a start that failed before its first trial
    leaves a journal without trials, which must not block the next start."""
    from bkd_sweep.engine.journal import journal_exists, journal_storage

    if not journal_exists(results):
        return False
    import optuna

    storage = journal_storage(results, read_only=True)
    return any(trial.state != optuna.trial.TrialState.WAITING  # queued, never started
               for name in optuna.get_all_study_names(storage)
               for trial in optuna.load_study(study_name=name, storage=storage).trials)


def sweep_state_problems(loaded: LoadedStudy, resume: bool = False) -> list[StudyError]:
    """An earlier sweep without ``resume``, or, with it, one of a different study version.
    (The engine's journal is read here, so this imports the engine lazily.)"""
    from bkd_sweep.engine.journal import (journal_exists, stored_fingerprint, stored_world_size,
                                          study_fingerprint, world_size_change)
    from bkd_sweep.tracking.store import ResultStore

    study = loaded.study
    results = loaded.results_location()
    if not resume and (_has_trials(study, results) or ResultStore(results).has_tables()):
        return [loaded.error(f"{results} already holds a sweep of {study.name!r}; use --resume "
                             "to finish it (or remove that directory to start over)")]
    if resume and journal_exists(results):
        changed = world_size_change(study, stored_world_size(study, results))
        if changed:
            return [loaded.error(changed, "resources.per_trial.workers")]
        stored = stored_fingerprint(study, results)
        if stored is not None and stored != study_fingerprint(study):
            return [loaded.error(f"{results} holds a sweep of a different version of this "
                                 "study (search or base config changed since it started); "
                                 "restore the study file or use a new results directory")]
    return []


# --------------------------------------------------------------------------------------
# What the commands call


def check_references(loaded: LoadedStudy) -> None:
    """Raise StudyError (file:line: field: ...) for a name no registry knows, a distilling
    study without a teacher checkpoint, a search that cannot run (a when-cycle, no budget, an
    unknown pruned metric), train.device cuda for trials given no GPU: what `validate` can
    say without this machine."""
    from bkd_sweep.config.checks import device_problems

    run_checks(loaded, (reference_problems, teacher_problems, search_problems, device_problems))


def check_runnable(loaded: LoadedStudy, resume: bool = False, tracking: bool = True) -> None:
    """Refuse (StudyError, one line) before anything starts or is written when the sweep
    cannot run here: an unset ${VAR}, a trial larger than this machine (embedded Ray), a
    missing data root or teacher checkpoint, no place for MLflow (``tracking``: the driver
    makes the study's tracker), an unwritable results dir, or an earlier sweep without resume."""
    from bkd_sweep.tracking.mlflow_values import tracking_problems  # the driver's alone

    run_checks(loaded, (variable_problems, search_problems, machine_problems, path_problems,
                        *([tracking_problems] if tracking else []), results_dir_problems,
                        functools.partial(sweep_state_problems, resume=resume)))


def check_trial_runnable(loaded: LoadedStudy, config: TrialConfig) -> None:
    """What `train` needs of one resolved config: known names, variables set, the teacher
    checkpoint present."""
    flat = config.flat()
    raise_first(itertools.chain(
        (p for field in _REGISTRY_FIELDS
         if (p := _name_problem(loaded, field, flat[field], field)) is not None),
        variable_problems(loaded), _teacher_file_problems(loaded, config)))
