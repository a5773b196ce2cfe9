"""Teachers before the trials that need them: each distinct teacher of a sweep is trained
(``checkpoint: train``) or evaluated once, as a Tune trial of its own, handed out before any
trial.

Otherwise the first trials that need a teacher would train it under a lock while every other
trial holding a GPU waits. Trials that need no teacher (``distill.mode: none``) run beside
it meanwhile; the searcher holds the others back until every teacher is ready. The teacher's
trial holds one trial's resources and its actor is reused by the next trial (a Ray task's
process would not be: that slot would wait for a fresh process and its imports); what it
spent is recorded (sweep.json, the summary, the report) as teacher device-hours. A teacher
the cache already holds, evaluated on this data, needs no job: the driver reads its report
(no torch), and the trials start at once.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from bkd_sweep.config import Study, TrialConfig


def weights_identity(config: TrialConfig) -> str:
    """What names a teacher's weights before they exist: its training key, or its file."""
    from bkd_sweep.trial.teacher_cache import teacher_cache_key

    if config.teacher.checkpoint == "train":
        return f"train:{teacher_cache_key(config)}"
    return f"file:{config.teacher.checkpoint}"


def distinct_teachers(study: Study) -> list[TrialConfig]:
    """One config per teacher evaluation the sweep's distilling trials read: per weights and
    evaluation key (a teacher on two data variants is evaluated twice; with one task per
    weights only, each trial of the second variant would evaluate it itself)."""
    from bkd_sweep.preflight import configs_to_check
    from bkd_sweep.trial.teacher_cache import evaluation_key

    seen: set[str] = set()
    chosen: list[TrialConfig] = []
    for config in configs_to_check(study, trials_only=True):
        if not needs_teacher(config):
            continue
        # the weights' name stands for their content: equal within one identity, so these
        # keys split the configs exactly as the real evaluation keys will
        identity = weights_identity(config)
        key = f"{identity}/{evaluation_key(identity.encode(), config)}"
        if key not in seen:
            seen.add(key)
            chosen.append(config)
    return chosen


def trained_first(configs: list[TrialConfig]) -> list[int | None]:
    """For each config, the index of the earlier one training the same teacher, or None:
    its task waits for that one, so a teacher is trained once (an object store has no lock
    to make a second training wait), then only evaluated on the other data."""
    first: dict[str, int] = {}
    after: list[int | None] = []
    for index, config in enumerate(configs):
        identity = weights_identity(config)
        trains = config.teacher.checkpoint == "train"
        after.append(first.get(identity) if trains else None)
        first.setdefault(identity, index)
    return after


class TeacherFailed(RuntimeError):
    """A teacher could not be prepared: the trials that need it never start."""


@dataclass
class TeacherJob:
    """One teacher to prepare: its config, the job whose training it waits for (then it only
    evaluates), the Tune trial running it once handed out, and its report when done."""

    config: TrialConfig
    after: int | None = None
    trial_id: str | None = None
    report: dict[str, Any] | None = None


class PendingTeachers:
    """The teachers of a sweep being prepared, each as a Tune trial of its own on one trial's
    resources, handed out before any trial (``next_job``): its actor is then reused by the
    trials after it, torch imported and the device up (a Ray task's worker is never reused for
    a trial's actor; the slot would wait for a new process). Trials that need no teacher run
    meanwhile. ``ready()`` polls; once all are done ``on_ready`` gets one report per teacher
    (with its device-seconds). A teacher's failure is raised by ``ready()`` / ``wait()``."""

    def __init__(self, jobs: list[TeacherJob], gpus: float,
                 on_ready: Callable[[list[dict]], None], cached: list[dict[str, Any]] = ()):
        self.jobs = jobs
        self._gpus = gpus
        self._on_ready = on_ready
        self._cached = list(cached)  # reports read from the cache, no job needed
        self.error: TeacherFailed | None = None
        self.reports: list[dict[str, Any]] | None = None

    def configs_json(self) -> list[str]:
        """What the trainable needs to run job i (the Tune config carries only i)."""
        return [job.config.model_dump_json() for job in self.jobs]

    def next_job(self, trial_id: str) -> int | None:
        """The next job to run as Tune trial ``trial_id`` (one waiting for another's training
        only once that is done), or None."""
        for index, job in enumerate(self.jobs):
            waits = job.after is not None and self.jobs[job.after].report is None
            if job.trial_id is None and not waits and self.error is None:
                job.trial_id = trial_id
                return index
        return None

    def owns(self, trial_id: str) -> bool:
        return any(job.trial_id == trial_id for job in self.jobs)

    def in_flight(self) -> int:
        return sum(job.trial_id is not None and job.report is None for job in self.jobs)

    def finished(self, trial_id: str, report: dict[str, Any] | None, reason: str = "") -> None:
        """Job ``trial_id`` ended: with its report, or failed (``reason``)."""
        job = next(job for job in self.jobs if job.trial_id == trial_id)
        if report is None:
            self.error = self.error or TeacherFailed(
                f"teacher {job.config.teacher.arch} could not be prepared: "
                f"{reason or 'its trial ended without a report'}")
            return
        report["device_seconds"] = report["seconds"] * (self._gpus or 1.0)  # CPU: one device
        job.report = report

    def ready(self) -> bool:
        if self.error is not None:
            raise self.error
        if self.reports is None and all(job.report is not None for job in self.jobs):
            self.wait()
        return self.reports is not None

    def wait(self) -> list[dict[str, Any]]:
        """The reports (at the sweep's end: of the jobs that ran, should it have stopped
        early); a teacher's failure raised."""
        if self.error is not None:
            raise self.error
        if self.reports is None:
            self.reports = self._cached + [job.report for job in self.jobs
                                           if job.report is not None]
            self._on_ready(self.reports)
        return self.reports


def pending_teachers(study: Study, cache_uri: str,
                     on_ready: Callable[[list[dict]], None] = lambda reports: None
                     ) -> PendingTeachers:
    """The jobs for every distinct teacher the cache does not already hold evaluated."""
    per_trial = study.resources.per_trial
    configs = distinct_teachers(study)
    cached, jobs, job_of = [], [], {}
    for index, (config, after) in enumerate(zip(configs, trained_first(configs))):
        report = cached_report(config, cache_uri)
        if report is not None:
            cached.append(report)
            continue
        job_of[index] = len(jobs)
        jobs.append(TeacherJob(config, job_of.get(after) if after is not None else None))
    return PendingTeachers(jobs, per_trial.gpu, on_ready, cached)


def teacher_task(config_json: str, cache_uri: str, cpus: float, gpus: float
                 ) -> dict[str, Any]:
    """A teacher job's body: ensure_teacher on this worker's device, with torch's threads set
    to its CPUs as a trial's are (Ray leaves a user's OMP_NUM_THREADS as it is, and a CPU
    teacher with more threads than its CPUs slows the trials beside it)."""
    from bkd_sweep.engine.worker import set_threads
    from bkd_sweep.trial.teacher import ensure_teacher

    set_threads(cpus)
    config = TrialConfig.model_validate_json(config_json)
    return asdict(ensure_teacher(config, cache_uri, "cuda" if gpus > 0 else "cpu"))


def cached_report(config: TrialConfig, cache_uri: str) -> dict[str, Any] | None:
    """The teacher's report read from the cache when it holds the weights and their
    evaluation on this data (a repeated or resumed sweep): no task, no torch, the trials
    start at once. None when anything is missing (the task prepares it)."""
    from bkd_sweep.trial.teacher_cache import TeacherCache, evaluation_key, teacher_cache_key

    started = time.perf_counter()
    cache = TeacherCache.of(cache_uri)
    checkpoint = config.teacher.checkpoint
    try:
        if checkpoint == "train":
            if not cache.has_trained(config):
                return None
            weights, source = cache.read_trained(config), cache.weights_uri(config)
        elif checkpoint is not None and Path(checkpoint).is_file():
            weights, source = Path(checkpoint).read_bytes(), str(checkpoint)
        else:
            return None  # an object-store checkpoint or a missing file: the task says why
        evaluation = cache.read_evaluation(evaluation_key(weights, config))
    except (OSError, ValueError):  # unreadable here: the task reads it and says why
        return None
    if evaluation is None:
        return None
    return {"arch": config.teacher.arch,
            "cache_key": teacher_cache_key(config) if checkpoint == "train" else None,
            "weights": source, "trained": False, "val_top1": float(evaluation["val_top1"]),
            "test_top1": float(evaluation["test_top1"]),
            "seconds": time.perf_counter() - started, "device_seconds": 0.0}


def needs_teacher(config: TrialConfig) -> bool:
    return config.distill.mode != "none"


def describe(report: dict[str, Any]) -> str:
    what = "trained" if report["trained"] else "ready"
    return (f"teacher {report['arch']} {what} in {report['seconds']:.1f}s "
            f"(val {report['val_top1']:.2f}, test {report['test_top1']:.2f})")
