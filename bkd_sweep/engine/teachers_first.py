"""Teachers before the trials that need them: each distinct teacher of a sweep is trained
(``checkpoint: train``) or evaluated once, as its own Ray task, started before any trial.

Otherwise the first trials that need a teacher would train it under a lock while every other
trial holding a GPU waits. Trials that need no teacher (``distill.mode: none``) run beside
the task meanwhile; the searcher holds the others back until every teacher is ready. The task
asks for one trial's resources; what it spent is recorded (sweep.json, the summary, the
report) as teacher device-hours. A teacher the cache already holds, evaluated on this data,
needs no task: the driver reads its report (no torch), and the trials start at once.
"""

from __future__ import annotations

import time
from dataclasses import asdict
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


class PendingTeachers:
    """The teachers of a sweep being prepared as Ray tasks (one trial's resources each),
    while trials that need no teacher run. ``ready()`` polls; ``wait()`` blocks. Once all
    are done ``on_ready`` gets one report per teacher (with its device-seconds); a
    teacher's failure is raised by ``ready()`` / ``wait()``."""

    def __init__(self, refs: list, gpus: float, on_ready: Callable[[list[dict]], None],
                 cached: list[dict[str, Any]] = ()):
        self._refs = refs
        self._gpus = gpus
        self._on_ready = on_ready
        self._cached = list(cached)  # reports read from the cache, no task needed
        self.reports: list[dict[str, Any]] | None = None

    def ready(self) -> bool:
        if self.reports is None:
            import ray

            if self._refs:
                done, _ = ray.wait(self._refs, num_returns=len(self._refs), timeout=0)
                if len(done) < len(self._refs):
                    return False
            self.wait()
        return True

    def wait(self) -> list[dict[str, Any]]:
        if self.reports is None:
            import ray

            reports = ray.get(self._refs) if self._refs else []
            for report in reports:  # a CPU task counts as one device
                report["device_seconds"] = report["seconds"] * (self._gpus or 1.0)
            reports = self._cached + reports
            self.reports = reports
            self._on_ready(reports)
        return self.reports


def start_teachers(study: Study, cache_uri: str,
                   on_ready: Callable[[list[dict]], None] = lambda reports: None,
                   nodes: list[str] | None = None) -> PendingTeachers:
    """Start ensure_teacher for every distinct teacher as Ray tasks (one trial's resources
    each, so the trials that need no teacher share the cluster with them meanwhile), on
    ``nodes`` (ids) only when given (on a cluster: those that passed preflight)."""
    import ray

    from bkd_sweep.engine.placement import node_selector

    per_trial = study.resources.per_trial
    gpus = min(1.0, per_trial.gpu) if per_trial.gpu else 0.0
    cpus = per_trial.cpu
    where = node_selector(nodes)
    task = ray.remote(max_retries=1)(teacher_task).options(
        num_cpus=cpus, num_gpus=gpus, **({"label_selector": where} if where else {}))
    configs = distinct_teachers(study)
    cached, refs, ref_of = [], [], {}
    for index, (config, after) in enumerate(zip(configs, trained_first(configs))):
        report = cached_report(config, cache_uri)
        if report is not None:
            cached.append(report)
            continue
        # a ref as an argument: Ray starts this task once that one has finished
        wait_for = [ref_of[after]] if after in ref_of else []
        ref_of[index] = task.remote(config.model_dump_json(), cache_uri, cpus, gpus, *wait_for)
        refs.append(ref_of[index])
    return PendingTeachers(refs, gpus, on_ready, cached)


def teacher_task(config_json: str, cache_uri: str, cpus: float, gpus: float,
                 *after: Any) -> dict[str, Any]:
    """The Ray task's body: ensure_teacher on this worker's device, with torch's threads set
    to the task's CPUs as a trial's are (Ray leaves a user's OMP_NUM_THREADS as it is, and a
    CPU teacher with more threads than its CPUs slows the trials beside it). ``after``: the
    reports of the tasks it waited for (unused)."""
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
