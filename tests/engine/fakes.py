"""Fast stand-ins for run_trial (same signature): synthetic learning curves, real checkpoints.

Registered for pickling by value so Ray workers need not import this test module.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import ray.cloudpickle as cloudpickle

from bkd_sweep.records import EnergyReport, EpochMetrics, TrialResult
from bkd_sweep.study import TrialConfig

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MODE_QUALITY = {"none": 60.0, "logit": 70.0, "bkd": 75.0, "mixed": 80.0}


def top1_at(config: TrialConfig, epoch: int) -> float:
    """A deterministic curve: the plateau depends on distill.mode and the seed."""
    plateau = MODE_QUALITY[config.distill.mode] + config.seed * 0.5 - 40 * config.distill.blur_ratio
    return plateau * (1 - math.exp(-epoch / 2))


def curve_trial(config: TrialConfig, report=None, *, checkpoint_dir=None, cache_dir=None,
                epoch_seconds: float | None = None) -> TrialResult:
    """Reports one synthetic epoch at a time; resumes from checkpoint_dir/last.pt (JSON)."""
    delay = float(os.environ.get("BKD_FAKE_EPOCH_SECONDS", "0.02")) if epoch_seconds is None \
        else epoch_seconds
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    history: list[EpochMetrics] = []
    start = 1
    if ckpt is not None and ckpt.exists():
        state = json.loads(ckpt.read_text())
        history = [EpochMetrics.model_validate(h) for h in state["history"]]
        start = state["epoch"] + 1
        starts = ckpt.parent / "starts.txt"
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        with open(ckpt.parent / "starts.txt", "a") as handle:  # one line per (re)start
            handle.write(f"{start}\n")
    for epoch in range(start, config.train.epochs + 1):
        time.sleep(delay)
        top1 = top1_at(config, epoch)
        metrics = EpochMetrics(epoch=epoch, top1=top1, top5=min(100.0, top1 + 10), val_loss=1 / epoch,
                               loss=1 / epoch, lr=0.1, wall_seconds=delay)
        history.append(metrics)
        if ckpt is not None:
            tmp = ckpt.with_suffix(".tmp")
            tmp.write_text(json.dumps({"epoch": epoch,
                                       "history": [h.model_dump() for h in history]}))
            os.replace(tmp, ckpt)
        if report is not None:
            report(metrics, checkpoint_dir)
    energy = EnergyReport(energy_mj=0.1 * config.student.timesteps, sops=1e6, macs=1e5,
                          mean_firing_rate=0.1, timesteps=config.student.timesteps,
                          e_mac_pj=4.6, e_ac_pj=0.9, first_layer_once=False)
    top1s = [h.top1 for h in history]
    return TrialResult(status="completed", best_top1=max(top1s), final_top1=top1s[-1],
                       best_top5=max(h.top5 for h in history), final_top5=history[-1].top5,
                       energy=energy, epochs_run=len(history),
                       wall_seconds=sum(h.wall_seconds for h in history),
                       config=config.model_dump(mode="json"), config_hash=config.config_hash(),
                       code_version="test", history=history)
