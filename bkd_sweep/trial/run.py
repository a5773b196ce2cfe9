"""run_trial: a trial from its named parts (state, epochs, energy, result)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from bkd_sweep.config import TrialConfig
from bkd_sweep.data import first_samples
from bkd_sweep.energy import measure_with
from bkd_sweep.records import EnergyReport, EpochMetrics, TrialResult, TrialStatus
from bkd_sweep.storage import Location
from bkd_sweep.trial.evaluate import evaluate
from bkd_sweep.trial.state import (TrialState, build_state, load_selected, resume,
                                   save_checkpoint, track_best)
from bkd_sweep.trial.step import NonFiniteLoss, train_epoch
from bkd_sweep.trial.teacher_cache import CacheWhere, TeacherCache

# report(metrics, checkpoint folder): a Path for a local or shared folder, else the Location
ReportFn = Callable[[EpochMetrics, "Path | Location | None"], None]


def run_trial(config: TrialConfig, report: ReportFn | None = None, *,
              checkpoint_dir: Location | str | os.PathLike | None = None,
              cache_dir: TeacherCache | CacheWhere | None = None) -> TrialResult:
    """Train one configuration; returns its TrialResult (completed, or failed with a reason).

    ``checkpoint_dir`` and ``cache_dir`` (the teacher cache) are folders on a local or shared
    path or an object store (a Location, URI or path). Resumes from ``last.pt`` in the
    checkpoint folder when present. Calls ``report(metrics, checkpoint folder)`` after each
    epoch once that epoch's checkpoint is written. Data and configuration faults raise; a
    non-finite loss ends the trial as failed.
    """
    started = time.perf_counter()
    state = build_state(config, cache_dir=cache_dir)
    checkpoints = Location.of(checkpoint_dir) if checkpoint_dir is not None else None
    if checkpoints is not None:
        resume(state, checkpoints)
    reported_dir = None if checkpoints is None else (
        checkpoints.local_path if checkpoints.is_local else checkpoints)

    def wall() -> float:
        return state.prior_seconds + (time.perf_counter() - started)

    for epoch in range(state.start_epoch, config.train.epochs + 1):
        try:
            metrics = train_epoch(state, epoch)
        except NonFiniteLoss as exc:
            return trial_result(state, "failed", wall(), reason=str(exc))
        state.history.append(metrics)
        track_best(state, metrics)
        if checkpoints is not None and state.group.is_main:
            save_checkpoint(state, epoch, checkpoints, wall())
        if state.group.enabled:
            dist.barrier()
        if report is not None:
            report(metrics, reported_dir)
    load_selected(state)
    test_top1, test_top5, _ = evaluate(state.student, state.loaders.test, state.device,
                                       state.group, state.autocast)
    return trial_result(state, "completed", wall(), energy=measure_energy(state),
                        test_top1=test_top1, test_top5=test_top5)


def measure_energy(state: TrialState) -> EnergyReport:
    """Energy per sample of the student's current (selected) weights, on the first val
    samples."""
    inputs = first_samples(state.bundle.val, state.config.energy.samples).to(state.device)
    return measure_with(state.config, state.student, inputs, state.bundle.is_event,
                        timesteps=state.config.student.timesteps)


def trial_result(state: TrialState, status: TrialStatus, wall_seconds: float, *,
                 reason: str | None = None, energy: EnergyReport | None = None,
                 test_top1: float | None = None,
                 test_top5: float | None = None) -> TrialResult:
    devices = state.group.world if state.device.type == "cuda" or state.group.enabled else 1
    config, teacher = state.config, state.teacher_info
    return TrialResult.from_history(
        status, state.history, reason=reason, config=config.model_dump(mode="json"),
        config_hash=config.config_hash(), wall_seconds=wall_seconds, devices=devices,
        device=str(state.device.type), energy=energy, test_top1=test_top1,
        test_top5=test_top5, selection_on_test=state.bundle.selection_on_test,
        split_rule=state.bundle.split_rule, teacher_val_top1=teacher.val_top1,
        teacher_test_top1=teacher.test_top1, teacher_energy_mj=teacher.energy_mj,
        warnings=[*teacher.warnings, *state.warnings])
