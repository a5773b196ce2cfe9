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

from bkd_sweep.records import EnergyReport, EpochMetrics, TrialRecord, TrialResult
from bkd_sweep.config import TrialConfig
from bkd_sweep.storage import Location

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
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        with open(ckpt.parent / "starts.txt", "a") as handle:  # one line per (re)start
            handle.write(f"{start}\n")
        # the GPUs this trial's process may see (a trial given none must see none)
        (ckpt.parent / "visible_gpus.txt").write_text(
            os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
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
    selected = max(history, key=lambda h: h.top1)
    return TrialResult.from_history(
        "completed", history, config=config.model_dump(mode="json"),
        config_hash=config.config_hash(), wall_seconds=sum(h.wall_seconds for h in history),
        devices=1, device="cpu", energy=energy, test_top1=selected.top1 - 1.0)


def lease_thief(config: TrialConfig, report=None, *, checkpoint_dir=None, cache_dir=None):
    """Another driver takes the study's lease while this trial runs (as one that found this
    driver's heartbeat stale would), then the trial goes on as curve_trial."""
    lease = Path(checkpoint_dir).parents[2] / "driver.lease"  # <results>/trials/tNNNN/ckpt
    held = json.loads(lease.read_text())
    if held["driver_id"] != "thief":
        lease.write_text(json.dumps({**held, "driver_id": "thief", "host": "elsewhere"}))
    return curve_trial(config, report, checkpoint_dir=checkpoint_dir, epoch_seconds=0.3)


def crash_or_fail(config: TrialConfig, report=None, *, checkpoint_dir=None, cache_dir=None):
    """blur_ratio 0.0: raises once after epoch 2 and then resumes; otherwise always raises."""
    marker = Path(checkpoint_dir) / "crashed"
    if config.distill.blur_ratio > 0:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(checkpoint_dir) / "starts.txt", "a") as handle:
            handle.write("1\n")
        raise ValueError(f"bad batch (blur {config.distill.blur_ratio})")

    def crashing_report(metrics, ckpt):
        report(metrics, ckpt)
        if metrics.epoch == 2 and not marker.exists():
            marker.write_text("x")
            raise RuntimeError("simulated worker crash")

    return curve_trial(config, crashing_report, checkpoint_dir=checkpoint_dir, epoch_seconds=0.01)


def ddp_trial(config: TrialConfig, report=None, *, checkpoint_dir=None, cache_dir=None):
    """Needs an initialized torch.distributed group: all-reduces its rank each epoch and
    reports top1 = world size x 10 + the rank sum (rank 0 writes the checkpoint)."""
    import torch
    import torch.distributed as dist

    assert dist.is_initialized(), "run inside a TorchTrainer"
    rank, world = dist.get_rank(), dist.get_world_size()
    # a Path or an object-store Location, written as run_trial writes its own (one write)
    ckpt = Location.of(checkpoint_dir)
    history: list[EpochMetrics] = []
    for epoch in range(1, config.train.epochs + 1):
        total = torch.tensor([float(rank)])
        dist.all_reduce(total)
        top1 = world * 10 + float(total.item())
        metrics = EpochMetrics(epoch=epoch, top1=top1, top5=top1, val_loss=1.0, loss=1.0,
                               lr=0.1, wall_seconds=0.01)
        history.append(metrics)
        if rank == 0:
            ckpt.write_text(json.dumps({"epoch": epoch, "world": world}), "last.pt")
        dist.barrier()
        report(metrics, checkpoint_dir)
    return TrialResult.from_history(
        "completed", history, config=config.model_dump(mode="json"),
        config_hash=config.config_hash(), wall_seconds=0.0, devices=world,
        device=f"gloo x{world}", test_top1=history[-1].top1)


class FakeStore:
    """What the engine reads of StudyTracker.store on resume: the trials already recorded."""

    def __init__(self):
        self.records: dict[str, TrialRecord] = {}

    def trial_ids(self, status: str | None = None) -> set[str]:
        return {tid for tid, record in self.records.items()
                if status is None or record.result.status == status}


class FakeTracker:
    """Records the engine's tracking calls (StudyTracker's interface) in memory."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.store = FakeStore()
        self.unsynced: dict = {}  # trial id -> finished_at: stored, but MLflow missed it
        self.mlflow_down = False  # finish_trial then stores the trial but returns no run id

    @property
    def records(self) -> dict[str, TrialRecord]:
        return self.store.records

    def start_sweep(self, *, resume: bool) -> str:
        self.calls.append(("start", resume))
        return "parent"

    def log_epoch(self, trial_id, params, metrics) -> None:
        self.calls.append(("epoch", trial_id, metrics.epoch))

    def finish_trial(self, record: TrialRecord, finished_at=None) -> str | None:
        self.calls.append(("finish", record.trial_id) + ((finished_at,) if finished_at else ()))
        self.store.records[record.trial_id] = record
        if self.mlflow_down:
            return None
        self.unsynced.pop(record.trial_id, None)
        return f"run-{record.trial_id}"

    def unsynced_trials(self) -> dict:
        return dict(self.unsynced)

    def finish_sweep(self) -> None:
        self.calls.append(("end",))

    def record_stop(self, reason: str) -> None:
        self.calls.append(("stopped", reason))

    def finishes(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "finish"]

    def epochs(self, trial_id: str) -> list[int]:
        return [c[2] for c in self.calls if c[0] == "epoch" and c[1] == trial_id]


def flaky_trial(config: TrialConfig, report=None, *, checkpoint_dir=None, cache_dir=None
                ) -> TrialResult:
    """curve_trial, but a trial of the mode named in <results>/<study>/fail_mode raises (a
    crash). A file, not a variable: Ray workers started earlier do not see a new variable."""
    marker = Path(checkpoint_dir).parents[2] / "fail_mode"
    if marker.exists() and config.distill.mode == marker.read_text().strip():
        raise RuntimeError(f"injected crash for mode {config.distill.mode}")
    return curve_trial(config, report, checkpoint_dir=checkpoint_dir, cache_dir=cache_dir)
