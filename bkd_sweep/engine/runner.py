"""``run_study``: run a study's sweep on Ray Tune, embedded or on a cluster.

Design note: resume and exactly-once
------------------------------------
The Optuna journal (``results/<study>/optuna.journal``) is the sweep's source of truth; Ray's
experiment state is not used for resuming (each session gets a fresh Tuner under
``results/<study>/ray/session-NNN``; Ray checkpoints only serve retries within a session).

* A trial is one Optuna trial; its id ``t%04d`` is the Optuna number and never changes.
  Its files live in ``trials/<id>/``: ``ckpt/last.pt`` (written by run_trial each epoch),
  ``epochs.jsonl`` (epochs the driver saw) and ``result.json`` (its outcome).
* Finishing a trial is three steps in the driver, always in this order:
  (1) write result.json, (2) tell Optuna (COMPLETE / PRUNED / FAIL), (3) hand the record to
  tracking, which upserts its Parquet rows and MLflow child run by trial id.
* ``--resume`` opens the journal and, before running anything: RUNNING trials that have a
  result.json (killed between 1 and 2) are told now; finished trials missing from the Parquet
  store (killed between 2 and 3) are recorded now from result.json; the other RUNNING trials
  were interrupted and run again under their own number, params and seed, resuming from
  ``ckpt/last.pt`` (their Optuna trial is reused, not re-asked). Then new trials are asked
  until the study's trial count is reached. COMPLETE, PRUNED and FAIL trials never rerun.
* Tracking upserts by trial id, so whatever crash happened, each trial ends with exactly one
  row in trials.parquet and one MLflow child run.
* A resumed sweep must be the same study: the journal keeps a fingerprint of the search and
  base config (not of paths or resources), and a mismatch is refused before anything runs.

Engines: embedded Ray (``ray.init(address="local")``, this machine's CPUs/GPUs, a capped
object store), or the cluster at RAY_ADDRESS (e.g. inside a Ray job). On a multi-node
cluster results/<study>/ must be on storage every node sees: Ray's storage_path and the
trials' checkpoints live there.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bkd_sweep import space
from bkd_sweep.engine.book import EPOCH_METRIC_MODES, JOURNAL_FILE, trial_id_of
from bkd_sweep.engine.plan import trials_fitting
from bkd_sweep.config import (
    CategoricalParam,
    LoadedStudy,
    Study,
    StudyError,
    TrialConfig,
    load_study,
)

log = logging.getLogger(__name__)

RESULTS_ENV = "BKD_RESULTS_DIR"  # results root override (set by `submit` for cluster jobs)
BUNDLED_DATASETS = ("digits", "synthetic")  # need no data.root
DEFAULT_OBJECT_STORE_MB = 384
_CHECK_GRID_LIMIT = 5000


@dataclass
class SweepSummary:
    """The end of a sweep session: outcome counts over the whole sweep and the best trials."""

    study: str
    results_dir: Path
    total: int
    counts: dict[str, int]  # completed / pruned / failed / running / waiting
    best: list[dict[str, Any]]  # the best trial, or the Pareto set (multi-objective)
    wall_seconds: float
    resumed: bool
    ran: list[str] = field(default_factory=list)  # trial ids finished in this session

    @property
    def done(self) -> int:
        return self.counts["completed"] + self.counts["pruned"] + self.counts["failed"]

    @property
    def ok(self) -> bool:
        """Every trial finished (completed, pruned or failed)."""
        return self.done >= self.total

    def render(self) -> str:
        c = self.counts
        lines = [f"study {self.study}: {self.done}/{self.total} trials done "
                 f"({c['completed']} completed, {c['pruned']} pruned, {c['failed']} failed) "
                 f"in {self.wall_seconds:.1f}s; results in {self.results_dir}"]
        if not self.ok:
            lines.append(f"unfinished: {self.total - self.done} trial(s); "
                         "run again with --resume to finish")
        for entry in self.best:
            values = ", ".join(f"{k}={v:.4g}" for k, v in entry["values"].items())
            params = " ".join(f"{k}={v}" for k, v in entry["params"].items())
            config = " ".join([f"seed={entry['seed']}"] + ([params] if params else []))
            lines.append(f"best {entry['trial_id']}: {values} ({config})")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Checks before anything starts


def results_dir_for(loaded: LoadedStudy) -> Path:
    """results/<name>, or $BKD_RESULTS_DIR/<name> when set (absolute, for cluster jobs)."""
    return loaded.results_dir()


def _where_used(raw: Any, variable: str, prefix: str = "") -> str | None:
    """The dotted path of the first value mentioning ${variable}."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            found = _where_used(value, variable, f"{prefix}{key}.")
            if found:
                return found
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            found = _where_used(value, variable, f"{prefix}{index}.")
            if found:
                return found
    elif isinstance(raw, str) and ("${" + variable) in raw:
        return prefix.rstrip(".")
    return None


def _configs_to_check(study: Study) -> list[TrialConfig]:
    """Configurations whose paths must exist: every grid trial when the grid is small, else
    the base config plus one per linked bundle and per listed path-like value."""
    search = study.search
    configs = [study.base_config()]
    points = space.grid(search) if space.is_finite(search) else []
    if points and len(points) <= _CHECK_GRID_LIMIT:
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


def _writable(path: Path) -> bool:
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def check_runnable(loaded: LoadedStudy, resume: bool = False) -> None:
    """Refuse (StudyError, one line) before anything starts or is written when the sweep
    cannot run here: an unset ${VAR}, a missing data root or teacher checkpoint, an
    unwritable results dir, or an earlier sweep in results/<name>/ without ``resume``."""
    study = loaded.study
    if loaded.unresolved:
        var = loaded.unresolved[0]
        raise loaded.error(f"environment variable {var} is not set (used as ${{{var}}})",
                           _where_used(loaded.raw, var))
    search = study.search
    space.param_order(search)  # a when-cycle is an error
    space.count_trials(search)  # a sampled continuous space needs n_trials
    metric = search.pruned_metric
    if search.pruner.name != "none" and metric.split(".")[0] not in (*EPOCH_METRIC_MODES,
                                                                    "loss_terms"):
        raise loaded.error(f"unknown per-epoch metric {metric!r}; allowed: "
                           f"{', '.join(EPOCH_METRIC_MODES)}, loss_terms.<term>",
                           "search.pruned_metric")
    seen: set[tuple] = set()
    for config in _configs_to_check(study):
        data = config.data
        key = ("data", data.dataset, data.root)
        if key not in seen:
            seen.add(key)
            if data.dataset not in BUNDLED_DATASETS:
                if not data.root:
                    raise loaded.error(f"dataset {data.dataset!r} needs data.root (a local "
                                       "copy; nothing is downloaded)", "data.root")
                if not Path(data.root).expanduser().exists():
                    raise loaded.error(f"{data.dataset}: data root {data.root} does not exist",
                                       "data.root")
        ckpt = config.teacher.checkpoint
        key = ("teacher", config.distill.mode != "none", ckpt)
        if key in seen or config.distill.mode == "none":
            continue
        seen.add(key)
        if ckpt is None:
            raise loaded.error(f"required when distill.mode is {config.distill.mode!r}: a "
                               "local weights file or 'train'", "teacher.checkpoint")
        if ckpt != "train" and not Path(ckpt).expanduser().is_file():
            raise loaded.error(f"teacher checkpoint not found: {ckpt}", "teacher.checkpoint")
    results = results_dir_for(loaded)
    if not _writable(results):
        raise loaded.error(f"results directory {results} is not writable",
                           "tracking.results_dir")
    journal = results / JOURNAL_FILE
    if not resume and (journal.exists() or (results / "trials.parquet").exists()):
        raise loaded.error(f"{results} already holds a sweep of {study.name!r}; use --resume "
                           "to finish it (or remove that directory to start over)")
    if resume and journal.exists():
        from bkd_sweep.engine.book import stored_fingerprint, study_fingerprint

        stored = stored_fingerprint(study, results)
        if stored is not None and stored != study_fingerprint(study):
            raise loaded.error(f"{results} holds a sweep of a different version of this "
                               "study (search or base config changed since it started); "
                               "restore the study file or use a new results directory")


# --------------------------------------------------------------------------------------
# Ray


def _quiet_tune() -> None:
    """Our progress lines replace Tune's tables (the legacy reporter honours verbose=0)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _init_ray(study: Study) -> bool:
    """Connect to RAY_ADDRESS's cluster, or start an embedded Ray. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    address = os.environ.get("RAY_ADDRESS", "")
    if address and not address.startswith(("http://", "https://")):
        ray.init(address="auto", **quiet)
        return True
    mb = study.resources.object_store_mb or DEFAULT_OBJECT_STORE_MB
    # "local": always a fresh embedded instance, never another user's `ray start` cluster
    ray.init(address="local", object_store_memory=mb * 1024 * 1024, include_dashboard=False,
             **quiet)
    return True


def _is_embedded() -> bool:
    address = os.environ.get("RAY_ADDRESS", "")
    return not address or address.startswith(("http://", "https://"))


def concurrency(study: Study, cluster: dict[str, float], remaining: int) -> int:
    """Trials to run at once: resources.max_concurrent, else as many as the cluster fits."""
    per_trial = study.resources.per_trial
    fits = trials_fitting(per_trial, cluster.get("CPU", 0.0), cluster.get("GPU", 0.0))
    if fits == 0 and _is_embedded():
        raise StudyError(
            f"one trial needs {per_trial.cpu * per_trial.workers:g} CPUs and "
            f"{per_trial.gpu * per_trial.workers:g} GPUs; this machine has "
            f"{cluster.get('CPU', 0):g} CPUs and {cluster.get('GPU', 0):g} GPUs",
            field="resources.per_trial")
    wanted = study.resources.max_concurrent or max(fits, 1)
    return max(1, min(wanted, remaining))


def _session_name(ray_dir: Path) -> str:
    existing = list(ray_dir.glob("session-*")) if ray_dir.exists() else []
    return f"session-{len(existing) + 1:03d}"


def _recorded_ids(tracker, results_dir: Path) -> set[str]:
    store = getattr(tracker, "store", None)
    if store is None:
        from bkd_sweep.tracking import ResultStore

        store = ResultStore(results_dir)
    return set(store.trial_ids())


def _record_missing(book, tracker, results_dir: Path) -> list[str]:
    """Hand tracking every finished trial it does not hold yet (a driver killed between
    telling Optuna and recording)."""
    from bkd_sweep.engine.callbacks import to_record

    if tracker is None:
        return []
    recorded = _recorded_ids(tracker, results_dir)
    added = []
    for number in book.finished_numbers():
        if trial_id_of(number) in recorded:
            continue
        outcome = book.outcome(number)
        if outcome is not None:
            tracker.finish_trial(to_record(outcome))
            added.append(trial_id_of(number))
    return added


def _best(book) -> list[dict[str, Any]]:
    entries = []
    for trial in book.best():
        values = {o.metric: v for o, v in zip(book.search.objectives, trial.values)}
        entries.append({"trial_id": trial_id_of(trial.number), "values": values,
                        "params": space.from_optuna_params(trial.params, book.search),
                        "seed": trial.user_attrs.get("seed")})
    return entries


def run_study(loaded: LoadedStudy, *, resume: bool = False,
              trainable: Callable | None = None, progress: bool = True,
              tracker: Any = None) -> SweepSummary:
    """Run (or, with ``resume``, finish) a study's sweep and return its summary.

    ``trainable`` replaces ``bkd_sweep.trial.run_trial`` (same signature) and ``tracker``
    replaces the StudyTracker built from the study (both for tests and embedding).
    """
    check_runnable(loaded, resume)
    started = time.perf_counter()
    study = loaded.study
    results_dir = results_dir_for(loaded)
    _quiet_tune()
    import ray

    from bkd_sweep.engine.book import SweepBook
    from bkd_sweep.engine.callbacks import Progress, SweepCallback

    we_started = _init_ray(study)
    try:
        cluster = ray.cluster_resources()
        concurrency(study, cluster, 1)  # a trial must fit (embedded) before anything is written
        per_trial = study.resources.per_trial
        device = "cuda" if per_trial.gpu > 0 else "cpu"
        book = SweepBook(study, results_dir, device=device,
                         devices_per_trial=float(per_trial.workers))
        resumed = resume and not book.is_empty()
        if tracker is None:
            from bkd_sweep.tracking import StudyTracker

            tracker = StudyTracker(study, results_dir=results_dir, study_file=loaded.path)
        tracker.start_sweep(resume=resumed)
        book.settle_interrupted()
        recovered = _record_missing(book, tracker, results_dir)
        book.open()
        remaining = book.remaining()
        callback = SweepCallback(book, tracker, Progress(book, enabled=progress))
        if remaining:
            _fit(study, book, callback, trainable, results_dir,
                 concurrency(study, cluster, remaining), remaining)
        recovered += _record_missing(book, tracker, results_dir)
        counts = book.counts()
        summary = SweepSummary(study=study.name, results_dir=results_dir, total=book.total,
                               counts=counts, best=_best(book),
                               wall_seconds=time.perf_counter() - started, resumed=resumed,
                               ran=callback.finished + recovered)
        if summary.ok:
            tracker.finish_sweep()
        return summary
    finally:
        if we_started:
            ray.shutdown()


def _fit(study: Study, book, callback, trainable, results_dir: Path, max_concurrent: int,
         remaining: int) -> None:
    from ray import tune

    from bkd_sweep.engine.scheduler import OptunaPruningScheduler
    from bkd_sweep.engine.searcher import OptunaSearcher
    from bkd_sweep.engine.worker import WorkerSetup, make_tune_function

    per_trial = study.resources.per_trial
    ray_dir = results_dir / "ray"
    cache = os.environ.get("BKD_CACHE_DIR") or str(results_dir.parent / "cache")
    setup = WorkerSetup(results_dir=str(results_dir), cache_dir=str(Path(cache).resolve()),
                        cpu=per_trial.cpu, gpu=per_trial.gpu, workers=per_trial.workers,
                        cwd=os.getcwd(), train_storage=str(ray_dir / "train"))
    if per_trial.workers > 1:
        # the trial only drives Train workers that hold the CPUs/GPUs; Ray needs a non-empty
        # request, so it asks for a little memory instead (no CPU to starve the workers of)
        resources: dict[str, float] = {"cpu": 0, "memory": 64 * 1024 * 1024}
    else:
        resources = {"cpu": per_trial.cpu, "gpu": per_trial.gpu}
    function = make_tune_function(setup, trainable)

    def trial_name(trial) -> str:
        return str(trial.config.get("trial_id", trial.trial_id))

    def trial_dirname(trial) -> str:
        return f"{trial.config.get('trial_id', 'trial')}_{trial.trial_id}"

    tuner = tune.Tuner(
        tune.with_resources(function, resources),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearcher(book), scheduler=OptunaPruningScheduler(book),
            num_samples=remaining, max_concurrent_trials=max_concurrent, reuse_actors=True,
            trial_name_creator=trial_name, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=_session_name(ray_dir), storage_path=str(ray_dir),
            failure_config=tune.FailureConfig(max_failures=study.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[callback], verbose=0),
    )
    tuner.fit()


def main(argv: list[str] | None = None) -> int:
    """``python -m bkd_sweep.engine.runner STUDY [--resume]`` (the CLI's ``run`` is the same)."""
    parser = argparse.ArgumentParser(prog="python -m bkd_sweep.engine.runner")
    parser.add_argument("study")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    try:
        summary = run_study(load_study(args.study), resume=args.resume)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.render())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
