"""A trial's state: data, models, optimizer, schedule, AMP and its history, built once and
resumable from the trial's checkpoint."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

import torch
from torch import nn

from bkd_sweep.config import TrialConfig
from bkd_sweep.data import DataBundle, Loaders, build_data, make_loaders, make_mixup
from bkd_sweep.distill import DistillLoss
from bkd_sweep.fileio import save_torch_atomic
from bkd_sweep.models import SpikingStudent, Teacher, create_student
from bkd_sweep.records import CHECKPOINT_FILE, EpochMetrics
from bkd_sweep.trial.environment import (ProcessGroup, process_group, rng_state,
                                         seed_everything, select_device)
from bkd_sweep.trial.model import DistillationModel
from bkd_sweep.trial.optim import UpdateSchedule, make_optimizer, make_scheduler
from bkd_sweep.trial.teacher import TeacherInfo, prepare_teacher

log = logging.getLogger(__name__)

DATA_SPLIT_SEED = 0


@dataclass
class TrialState:
    """Everything one trial's epochs read and update."""

    config: TrialConfig
    device: torch.device
    group: ProcessGroup
    bundle: DataBundle
    loaders: Loaders  # train, val (selection), test (measured once, on the selected weights)
    mixup: Any
    student: SpikingStudent
    teacher_info: TeacherInfo
    model: DistillationModel
    wrapped: nn.Module  # the model, or its DDP wrapper: what the step calls
    optimizer: torch.optim.Optimizer
    scheduler: UpdateSchedule
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # None: no autocast
    steps_per_epoch: int
    history: list[EpochMetrics] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    start_epoch: int = 1
    prior_seconds: float = 0.0  # wall seconds spent before a resume
    best: "SelectedWeights | None" = None  # train.select best: the best val epoch so far

    @property
    def teacher(self) -> Teacher | None:
        return self.teacher_info.teacher

    def autocast(self) -> ContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def uncompile(self, reason: BaseException) -> None:
        """torch.compile failed on this model: warn once and go on eagerly."""
        message = (f"train.compile: torch.compile failed ({type(reason).__name__}: "
                   f"{str(reason).splitlines()[0][:200] if str(reason) else ''}); "
                   "running without compile")
        log.warning(message)
        self.warnings.append(message)
        self.wrapped = getattr(self.wrapped, "_orig_mod", self.model)

    @property
    def compiled(self) -> bool:
        return hasattr(self.wrapped, "_orig_mod")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None = plain fp32. auto: bf16 on a GPU that has it, else fp16; fp32 on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def build_state(config: TrialConfig, *, cache_dir: Path | None = None) -> TrialState:
    """Data, student, teacher, loss, optimizer and schedule, in a fixed order (the order
    draws from the seeded generators, so it is part of reproducibility)."""
    group = process_group()
    device = select_device(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.seed)
    teacher_t = config.teacher.timesteps if config.distill.mode != "none" else None
    frames = max(config.student.timesteps, teacher_t or 0)
    # One split for every trial of a study (the seed varies init and order, not the data),
    # so a cached teacher never saw a later trial's validation images.
    bundle = build_data(config.data, seed=DATA_SPLIT_SEED, timesteps=frames)
    loaders = make_loaders(bundle, config.data, seed=config.seed, distributed=group.enabled)
    mixup = make_mixup(config.data.augment, bundle.num_classes)
    student = create_student(config.student.arch, num_classes=bundle.num_classes,
                             in_channels=bundle.in_channels, image_size=bundle.image_size,
                             timesteps=config.student.timesteps, neuron=config.student.neuron,
                             **config.student.arch_options())
    teacher_info = prepare_teacher(config, bundle, device=device, cache_dir=cache_dir,
                                   load=config.distill.mode != "none")
    if teacher_info.teacher is not None:
        teacher_info.teacher.to(device)
        if device.type == "cuda":  # conv teachers run faster channels-last on GPU
            teacher_info.teacher.to(memory_format=torch.channels_last)
    model = _distillation_model(config, student, teacher_info.teacher).to(device)
    return _with_training_parts(config, device, group, bundle, loaders, mixup, student,
                                teacher_info, model)


def _distillation_model(config: TrialConfig, student: SpikingStudent,
                        teacher: Teacher | None) -> DistillationModel:
    loss_fn = DistillLoss.from_config(
        config.distill, student_channels=student.feature_channels,
        teacher_channels=teacher.feature_channels if teacher is not None else None,
        label_smoothing=config.data.augment.label_smoothing)
    return DistillationModel(student, loss_fn)


def _with_training_parts(config, device, group, bundle, loaders: Loaders, mixup, student,
                         teacher_info, model) -> TrialState:
    optimizer = make_optimizer(model, config.train.optimizer)
    steps_per_epoch = len(loaders.train)
    if config.train.max_batches_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.train.max_batches_per_epoch)
    train = config.train
    scheduler = make_scheduler(optimizer, train, steps_per_epoch, train.optimizer.lr)
    amp_dtype = autocast_dtype(train.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    wrapped: nn.Module = model
    if group.enabled:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if train.compile:
        wrapped = torch.compile(wrapped)
    return TrialState(config=config, device=device, group=group, bundle=bundle,
                      loaders=loaders, mixup=mixup,
                      student=student, teacher_info=teacher_info, model=model, wrapped=wrapped,
                      optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                      amp_dtype=amp_dtype, steps_per_epoch=steps_per_epoch)


BEST_FILE = "best.pt"  # the best-on-val weights (train.select: best), beside last.pt


@dataclass
class SelectedWeights:
    """The weights of the epoch with the best val top-1 so far (first one on ties)."""

    epoch: int
    val_top1: float
    model: dict[str, torch.Tensor]


def track_best(state: TrialState, metrics: EpochMetrics, checkpoint_dir: Path | None) -> None:
    """Keep the best-on-val weights (in memory, and as best.pt beside the checkpoint)."""
    if state.config.train.select != "best":
        return
    if state.best is not None and metrics.top1 <= state.best.val_top1:
        return
    weights = {k: v.detach().to("cpu", copy=True) for k, v in state.model.state_dict().items()}
    state.best = SelectedWeights(metrics.epoch, metrics.top1, weights)
    if checkpoint_dir and state.group.is_main:
        save_torch_atomic({"epoch": metrics.epoch, "val_top1": metrics.top1, "model": weights,
                           "config_hash": state.config.config_hash()},
                          checkpoint_dir / BEST_FILE)


def load_selected(state: TrialState) -> None:
    """Put the selected weights (best on val, or the last) into the model."""
    last_epoch = state.history[-1].epoch if state.history else None
    if state.best is not None and state.best.epoch != last_epoch:
        state.model.load_state_dict(state.best.model)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def resume(state: TrialState, checkpoint_dir: Path) -> None:
    """Continue from ``checkpoint_dir/last.pt`` when present (same configuration only)."""
    path = checkpoint_dir / CHECKPOINT_FILE
    if not path.exists():
        return
    saved = load_checkpoint(path, map_location=state.device)
    if saved.get("config_hash") != state.config.config_hash():
        raise RuntimeError(f"{path} belongs to another configuration; refusing to resume from it")
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    if saved.get("scaler"):
        state.scaler.load_state_dict(saved["scaler"])
    state.history = [EpochMetrics.model_validate(h) for h in saved["history"]]
    state.warnings = list(saved.get("warnings", []))
    state.start_epoch = int(saved["epoch"]) + 1
    state.prior_seconds = float(saved.get("wall_seconds", 0.0))
    best = checkpoint_dir / BEST_FILE
    if best.exists():
        kept = load_checkpoint(best, map_location="cpu")
        if kept.get("config_hash") == state.config.config_hash():
            state.best = SelectedWeights(int(kept["epoch"]), float(kept["val_top1"]),
                                         kept["model"])
    log.info("resuming %s from epoch %d", checkpoint_dir, state.start_epoch)


def save_checkpoint(state: TrialState, epoch: int, checkpoint_dir: Path,
                    wall_seconds: float) -> None:
    save_torch_atomic({
        "epoch": epoch, "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "history": [h.model_dump() for h in state.history], "warnings": state.warnings,
        "config_hash": state.config.config_hash(), "rng": rng_state(),
        "wall_seconds": wall_seconds,
    }, checkpoint_dir / CHECKPOINT_FILE)
