"""Teachers before trials: each distinct teacher of a sweep is trained (``checkpoint: train``)
or evaluated once, as its own Ray task, before any trial starts.

Otherwise the first trials that need a teacher would train it under a lock while every other
trial holding a GPU waits. The task asks for one trial's resources; what it spent is recorded
(sweep.json, the summary, the report) as teacher device-hours.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bkd_sweep.config import Study, TrialConfig


def distinct_teachers(study: Study) -> list[TrialConfig]:
    """One config per distinct teacher the sweep's distilling trials can use."""
    from bkd_sweep.preflight import configs_to_check
    from bkd_sweep.trial.teacher_cache import teacher_cache_key

    seen: set[str] = set()
    chosen: list[TrialConfig] = []
    for config in configs_to_check(study):
        if config.distill.mode == "none":
            continue
        key = (teacher_cache_key(config) if config.teacher.checkpoint == "train"
               else f"file:{config.teacher.checkpoint}")
        if key not in seen:
            seen.add(key)
            chosen.append(config)
    return chosen


def prepare_teachers(study: Study, cache_uri: str) -> list[dict[str, Any]]:
    """Run ensure_teacher for every distinct teacher as Ray tasks (one trial's resources
    each); returns one record per teacher with its device-seconds."""
    import ray

    per_trial = study.resources.per_trial
    gpus = min(1.0, per_trial.gpu) if per_trial.gpu else 0.0
    cpus = per_trial.cpu

    @ray.remote(max_retries=1)
    def prepare(config_json: str) -> dict[str, Any]:
        from bkd_sweep.trial.teacher import ensure_teacher

        config = TrialConfig.model_validate_json(config_json)
        device = "cuda" if gpus > 0 else "cpu"
        return asdict(ensure_teacher(config, cache_uri, device))

    task = prepare.options(num_cpus=cpus, num_gpus=gpus)
    refs = [task.remote(c.model_dump_json()) for c in distinct_teachers(study)]
    reports = ray.get(refs)
    for report in reports:
        report["device_seconds"] = report["seconds"] * (gpus or 1.0)  # a CPU task: one device
    return reports


def describe(report: dict[str, Any]) -> str:
    what = "trained" if report["trained"] else "ready"
    return (f"teacher {report['arch']} {what} in {report['seconds']:.1f}s "
            f"(val {report['val_top1']:.2f}, test {report['test_top1']:.2f})")
