"""``run_study``: run a study's sweep on Ray Tune, embedded or on a cluster.

Design note: resume and exactly-once
------------------------------------
The Optuna journal (``results/<study>/optuna.journal``) is the sweep's source of truth; Ray's
experiment state is not used for resuming (each session gets a fresh Tuner under
``results/<study>/ray/session-NNN``; Ray checkpoints only serve retries within a session).

* A trial is one Optuna trial; its id ``t%04d`` is the Optuna number and never changes.
  Its files live in ``trials/<id>/``: ``ckpt/last.pt`` (written by run_trial each epoch),
  the epoch log ``epochs.jsonl`` (epochs the driver saw) and ``result.json`` (its outcome);
  see trial_files.py.
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
trials' checkpoints live there. Every check before a sweep lives in bkd_sweep.preflight.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bkd_sweep import space
from bkd_sweep.config import LoadedStudy, Study, StudyError, load_study
from bkd_sweep.engine.lease import DriverLease
from bkd_sweep.engine.ray_setup import (capacity_now, check_reachable, concurrency, init_ray,
                                        is_embedded, quiet_tune, shutdown_ray,
                                        warn_local_mlflow)
from bkd_sweep.preflight import check_runnable
from bkd_sweep.records import trial_id_of
from bkd_sweep.settings import cache_dir_for, settings
from bkd_sweep.storage import Location

log = logging.getLogger(__name__)


@dataclass
class SweepSummary:
    """The end of a sweep session: outcome counts over the whole sweep and the best trials."""

    study: str
    results_dir: Path | str
    total: int
    counts: dict[str, int]  # completed / pruned / failed / running / waiting
    best: list[dict[str, Any]]  # the best trial, or the Pareto set (multi-objective)
    wall_seconds: float
    resumed: bool
    ran: list[str] = field(default_factory=list)  # trial ids finished in this session
    stopped_by: str | None = None  # the budget limit that ended the sweep early

    @property
    def done(self) -> int:
        return self.counts["completed"] + self.counts["pruned"] + self.counts["failed"]

    @property
    def ok(self) -> bool:
        """Every trial finished (completed, pruned or failed), or the budget ended it."""
        return self.done >= self.total or (self.stopped_by is not None
                                           and self.counts["running"] == 0)

    def render(self) -> str:
        c = self.counts
        again = f", {c['retried']} failed then rerun" if c.get("retried") else ""
        lines = [f"study {self.study}: {self.done}/{self.total} trials done "
                 f"({c['completed']} completed, {c['pruned']} pruned, {c['failed']} failed"
                 f"{again}) "
                 f"in {self.wall_seconds:.1f}s; results in {self.results_dir}"]
        if self.stopped_by:
            lines.append(f"stopped by the budget after {self.done} trials: {self.stopped_by}")
        elif not self.ok:
            lines.append(f"unfinished: {self.total - self.done} trial(s); "
                         "run again with --resume to finish")
        for entry in self.best:
            values = ", ".join(f"{k}={v:.4g}" for k, v in entry["values"].items())
            params = " ".join(f"{k}={v}" for k, v in entry["params"].items())
            seeds = entry.get("seeds", 1)
            which = f"mean of {seeds} seeds" if seeds > 1 else f"seed={entry['seed']}"
            config = " ".join([which] + ([params] if params else []))
            lines.append(f"best {entry['trial_id']}: {values} ({config})")
        return "\n".join(lines)


def _session_name(ray_dir: Location) -> str:
    existing = [name for name in ray_dir.list_dirs() if name.startswith("session-")]
    return f"session-{len(existing) + 1:03d}"


def teacher_cache(results_dir: Location) -> str:
    """The teacher cache: $BKD_CACHE_DIR, else <storage root>/cache (a path or a URI)."""
    if settings().cache_dir:
        return str(cache_dir_for(Path(".")))
    base, mark, query = results_dir.uri.partition("?")  # s3://b/p/study?endpoint_override=..
    root = base.rsplit("/", 1)[0]
    return str(cache_dir_for(Path(root))) if results_dir.is_local else \
        f"{root}/cache{mark}{query}"


def _record_missing(book, tracker) -> list[str]:
    """Hand tracking every finished trial it does not hold yet (a driver killed between
    telling Optuna and recording), and again those MLflow missed (down as they finished)."""
    if tracker is None:
        return []
    recorded = tracker.store.trial_ids()
    unsynced = tracker.unsynced_trials() if hasattr(tracker, "unsynced_trials") else {}
    added = []
    for number in book.finished_numbers():
        trial_id = trial_id_of(number)
        if trial_id in recorded and trial_id not in unsynced:
            continue
        record = book.record(number)
        if record is None:
            continue
        if trial_id in unsynced:
            if tracker.finish_trial(record, finished_at=unsynced[trial_id]) is None:
                log.warning("MLflow still fails: the %d trial(s) it lacks are left for the "
                            "next session", len(unsynced))
                unsynced = {}  # each further try would wait on the same failure
        else:
            tracker.finish_trial(record)
            added.append(trial_id)
    return added


def _best(book) -> list[dict[str, Any]]:
    from bkd_sweep.engine.book import SEED_ATTR

    entries = []
    for trial in book.best():
        values = {o.metric: v for o, v in zip(book.search.objectives, trial.values)}
        entries.append({"trial_id": trial_id_of(trial.number), "values": values,
                        "params": space.from_optuna_params(trial.params, book.search),
                        "seed": trial.user_attrs.get(SEED_ATTR),
                        "seeds": 1 + sum(  # told a mean of its seeds, each seed once
                            any(book.state(n).name == "COMPLETE" for n in numbers)
                            for numbers in book.units.other_seeds(trial.number).values())})
    return entries


def run_study(loaded: LoadedStudy, *, resume: bool = False, retry_failed: bool = False,
              trial_fn: Callable | None = None, progress: bool = True,
              tracker: Any = None) -> SweepSummary:
    """Run (or, with ``resume``, finish) a study's sweep and return its summary.
    ``retry_failed`` (with ``resume``) runs the sweep's failed trials again.

    ``trial_fn`` replaces ``bkd_sweep.trial.run_trial`` (same signature) and ``tracker``
    replaces the StudyTracker built from the study (both for tests and embedding).
    """
    check_runnable(loaded, resume, tracking=tracker is None)  # a given tracker is the caller's
    if not is_embedded():
        check_reachable(settings().ray_address or "")  # before anything is written
    results_dir = loaded.results_location()  # a local/shared path or an object store
    lease = DriverLease(results_dir, loaded.study.name).acquire()  # one driver a study
    from bkd_sweep.engine.journal import repair_journal

    for note in (lease.took_over, repair_journal(results_dir)):
        if note and progress:
            print(f"note: {note}", flush=True)
    started = time.perf_counter()
    quiet_tune()
    import ray

    we_started = False
    early = _tracker_while_ray_starts(loaded, results_dir) if tracker is None else None
    try:
        we_started = init_ray(loaded.study)
        if early is not None:
            tracker = early.result()
        concurrency(loaded.study, ray.cluster_resources(), 1)  # a trial must fit (embedded)
        gate = None  # on a cluster: the nodes that passed preflight (joiners are checked)
        if not is_embedded():
            from bkd_sweep.engine.nodes import preflight_gate

            gate = preflight_gate(loaded, loaded.storage_uri())
            log.info("preflight passed on %d nodes", len(gate.passed))
        session = _Session(loaded, results_dir, trial_fn, progress, lease, gate)
        return session.run(resume, retry_failed, tracker, started)
    finally:
        if early is not None and not early.cancel():
            early.exception()  # waits: nothing is written after the lease is released
        if we_started:
            shutdown_ray()
        lease.release()


def _tracker_while_ray_starts(loaded: LoadedStudy, results_dir: Location) -> Future | None:
    """On one machine (embedded Ray, no preflight) the tracker is made in a thread while Ray
    starts: a new MLflow SQLite store runs its migrations (~2 s), Ray ~2-5 s. A cluster
    driver makes it after every node passed preflight, so a refused start writes nothing."""
    if not is_embedded():
        return None
    pool = ThreadPoolExecutor(1, thread_name_prefix="tracker")
    future = pool.submit(make_tracker, loaded, results_dir)
    pool.shutdown(wait=False)  # the thread ends with its one task
    return future


def make_tracker(loaded: LoadedStudy, results_dir: Location) -> Any:
    from bkd_sweep.tracking import StudyTracker

    return StudyTracker(loaded.study, results_dir=results_dir, study_file=loaded.path)


@dataclass
class _Session:
    """One driver session of a sweep, once Ray is up and every node passed preflight."""

    loaded: LoadedStudy
    results_dir: Location
    trial_fn: Callable | None
    progress: bool
    lease: DriverLease
    gate: Any = None  # nodes.NodeGate on a cluster, None on one machine

    def run(self, resume: bool, retry_failed: bool, tracker: Any, started: float
            ) -> SweepSummary:
        from bkd_sweep.engine.book import SweepBook
        from bkd_sweep.engine.callbacks import Progress, SweepCallback

        study = self.loaded.study
        per_trial = study.resources.per_trial
        book = SweepBook(study, self.results_dir, device="cuda" if per_trial.gpu > 0 else "cpu",
                         devices_per_trial=float(per_trial.workers))
        resumed = resume and not book.is_empty()
        if tracker is None:
            tracker = make_tracker(self.loaded, self.results_dir)
        warn_local_mlflow(tracker, len(self.gate.passed) if self.gate is not None else 1)
        tracker.start_sweep(resume=resumed)
        book.settle_interrupted()
        recovered = _record_missing(book, tracker)
        book.open()
        if retry_failed:
            again = book.retry_failed()
            if again and self.progress:
                print(f"retrying {len(again)} failed trial(s): "
                      + " ".join(trial_id_of(n) for n in again), flush=True)
        remaining = book.remaining()
        teachers = None
        if remaining and self.trial_fn is None:  # stand-in trial functions need no teacher
            teachers = _pending_teachers(study, self.results_dir, tracker, self.progress)
        callback = SweepCallback(book, tracker, Progress(book, enabled=self.progress),
                                 teachers)
        if remaining:
            _fit(study, book, callback, self.trial_fn, self.results_dir, remaining, teachers,
                 self.lease, self.gate)
            self.lease.check()  # taken by another driver: this one writes nothing more
        if teachers is not None:
            _teachers_recorded(teachers)
        recovered += _record_missing(book, tracker)
        summary = SweepSummary(study=study.name, results_dir=book.results_dir,
                               total=book.planned, counts=book.counts(), best=_best(book),
                               wall_seconds=time.perf_counter() - started, resumed=resumed,
                               ran=callback.finished + recovered,
                               stopped_by=book.budget.stopped_by)
        if summary.stopped_by:
            tracker.record_stop(summary.stopped_by)
        if summary.ok:
            tracker.finish_sweep()
        return summary


def _teachers_recorded(teachers) -> None:
    """The teachers' reports recorded by now (on_ready); a teacher that could not be prepared
    is said in one line: the trials that need it never started, so the sweep ends unfinished
    (exit 1) and --resume runs them once the cause is fixed."""
    from bkd_sweep.engine.teachers_first import TeacherFailed
    from bkd_sweep.redact import redact_text

    try:
        teachers.wait()
    except TeacherFailed as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr, flush=True)


def _pending_teachers(study: Study, results_dir: Location, tracker, progress: bool):
    """Each distinct teacher to train or evaluate once, as a Tune trial the searcher hands
    out first; the trials that need one wait for it in the searcher, the others run
    meanwhile."""
    from bkd_sweep.engine.teachers_first import describe, pending_teachers

    def on_ready(reports: list[dict[str, Any]]) -> None:
        for report in reports:
            if progress:
                print(describe(report), flush=True)
        if reports and hasattr(tracker, "record_teachers"):
            tracker.record_teachers(reports)

    return pending_teachers(study, teacher_cache(results_dir), on_ready)


def _fit(study: Study, book, callback, trial_fn, results_dir: Location,
         remaining: int, teachers=None, lease: DriverLease | None = None,
         gate: Any = None) -> None:
    from ray import tune

    from bkd_sweep.engine.callbacks import LeaseStopper
    from bkd_sweep.engine.placement import TrialResources
    from bkd_sweep.engine.scheduler import OptunaPruningScheduler
    from bkd_sweep.engine.searcher import OptunaSearcher
    from bkd_sweep.engine.worker import WorkerSetup, make_tune_function

    per_trial = study.resources.per_trial
    ray_dir = results_dir.child("ray")  # Ray's own state: retries within this session
    setup = WorkerSetup(results_dir=results_dir.uri, cache_dir=teacher_cache(results_dir),
                        cpu=per_trial.cpu, gpu=per_trial.gpu, workers=per_trial.workers,
                        cwd=os.getcwd(), train_storage=ray_dir.child("train").uri,
                        study=study)
    if per_trial.workers > 1:
        # the trial only drives Train workers that hold the CPUs/GPUs; Ray needs a non-empty
        # request, so it asks for a little memory instead (no CPU to starve the workers of)
        resources: dict[str, float] = {"cpu": 0, "memory": 64 * 1024 * 1024}
    else:
        resources = {"cpu": per_trial.cpu, "gpu": per_trial.gpu}
    function = make_tune_function(setup, trial_fn,
                                  teachers.configs_json() if teachers is not None else ())
    remaining += len(teachers.jobs) if teachers is not None else 0  # their trials count too
    cap = study.resources.concurrency_cap
    # auto: Tune may hold every remaining trial; the searcher asks only as many as fit now
    counted = gate.nodes if gate is not None else None  # nodes that passed preflight
    searcher = OptunaSearcher(
        book, capacity=None if cap else capacity_now(study, remaining, nodes=counted),
        teachers=teachers, nodes=gate.allowed if gate is not None else None)

    def trial_name(trial) -> str:
        return str(trial.config.get("trial_id", trial.trial_id))

    def trial_dirname(trial) -> str:
        return f"{trial.config.get('trial_id', 'trial')}_{trial.trial_id}"

    tuner = tune.Tuner(
        tune.with_resources(function, TrialResources(resources)),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=OptunaPruningScheduler(book),
            num_samples=remaining, max_concurrent_trials=min(cap or remaining, remaining),
            reuse_actors=True,
            trial_name_creator=trial_name, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=_session_name(ray_dir), storage_path=ray_dir.path,
            storage_filesystem=ray_dir.fs,
            failure_config=tune.FailureConfig(max_failures=study.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            stop=LeaseStopper(lease) if lease is not None else None,
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
