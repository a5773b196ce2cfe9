"""A trial's state: data, models, optimizer, schedule, AMP and its history, built once and
resumable from the trial's checkpoint.

A trial's checkpoint folder (a storage Location: local, shared or an object store) holds
what resume and selection need and nothing else: ``last.pt`` (everything, overwritten each
epoch) and, with ``train.select: best``, ``best.pt`` (weights) only while the best epoch is
an earlier one than last.pt's; while the newest epoch is the best, last.pt holds its
weights and says so, and no second copy is written.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

import torch
from torch import nn

from bkd_sweep.config import TrialConfig
from bkd_sweep.data import DataBundle, Loaders, make_loaders, make_mixup
from bkd_sweep.distill import DistillLoss
from bkd_sweep.fileio import load_torch, save_torch
from bkd_sweep.models import SpikingStudent, Teacher, create_student, training_layout
from bkd_sweep.records import CHECKPOINT_FILE, EpochMetrics
from bkd_sweep.trial.environment import (ProcessGroup, preserved_rng, process_group,
                                         rng_state, seed_everything, select_device)
from bkd_sweep.trial.model import DistillationModel
from bkd_sweep.trial.optim import (UpdateSchedule, load_optimizer_state, make_optimizer,
                                   make_scheduler)
from bkd_sweep.storage import Location
from bkd_sweep.trial.teacher import TeacherInfo, prepare_teacher, study_data
from bkd_sweep.trial.teacher_cache import CacheWhere, TeacherCache

log = logging.getLogger(__name__)


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
    best_file_epoch: int | None = None  # the epoch whose weights best.pt holds (None: none)

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


def build_state(config: TrialConfig, *,
                cache_dir: TeacherCache | CacheWhere | None = None) -> TrialState:
    """Data, student, teacher, loss, optimizer and schedule, in a fixed order (the order
    draws from the seeded generators, so it is part of reproducibility)."""
    group = process_group()
    device = select_device(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.seed)
    bundle = study_data(config, teacher_frames=config.distill.mode != "none")
    loaders = make_loaders(bundle, config.data, seed=config.seed, distributed=group.enabled)
    mixup = make_mixup(config.data.augment, bundle.num_classes)
    student = create_student(config.student.arch, num_classes=bundle.num_classes,
                             in_channels=bundle.in_channels, image_size=bundle.image_size,
                             timesteps=config.student.timesteps, neuron=config.student.neuron,
                             **config.student.arch_options())
    # what the teacher draws depends on the cache (a miss trains, or iterates evaluation
    # loaders): fork, so the loss modules below start alike however warm the cache is
    with preserved_rng(device):
        teacher_info = prepare_teacher(config, bundle, device=device, cache_dir=cache_dir,
                                       load=config.distill.mode != "none")
    if teacher_info.teacher is not None:
        teacher_info.teacher.to(device)
        if device.type == "cuda":  # conv teachers run faster channels-last on GPU
            teacher_info.teacher.to(memory_format=torch.channels_last)
    model = training_layout(_distillation_model(config, student, teacher_info.teacher),
                            student).to(device)
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
_LEGACY = "legacy"  # a last.pt from before it named its best epoch (best.pt was kept current)


@dataclass
class SelectedWeights:
    """The weights of the epoch with the best val top-1 so far (first one on ties)."""

    epoch: int
    val_top1: float
    model: dict[str, torch.Tensor]


def _cpu_copy(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}


def track_best(state: TrialState, metrics: EpochMetrics) -> None:
    """Keep the best-on-val weights in memory (save_checkpoint stores them when needed)."""
    if state.config.train.select != "best":
        return
    if state.best is not None and metrics.top1 <= state.best.val_top1:
        return
    state.best = SelectedWeights(metrics.epoch, metrics.top1, _cpu_copy(state.model.state_dict()))


def load_selected(state: TrialState) -> None:
    """Put the selected weights (best on val, or the last) into the model."""
    last_epoch = state.history[-1].epoch if state.history else None
    if state.best is not None and state.best.epoch != last_epoch:
        state.model.load_state_dict(state.best.model)


def load_checkpoint(path: Path | str,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A local checkpoint file (tensors and plain values only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def save_checkpoint(state: TrialState, epoch: int, checkpoints: Location,
                    wall_seconds: float) -> int:
    """Store what a resume after ``epoch`` needs; returns the bytes written.

    Safe against a kill between any two writes: best.pt gets the best weights before last.pt
    stops holding them, and is deleted only once last.pt holds the (newer) best ones.
    """
    written = 0
    best = state.best
    if best is not None and best.epoch != epoch and state.best_file_epoch != best.epoch:
        written += save_torch({"epoch": best.epoch, "val_top1": best.val_top1,
                               "model": best.model, "config_hash": state.config.config_hash()},
                              checkpoints, BEST_FILE)
        state.best_file_epoch = best.epoch
    written += save_torch({
        "epoch": epoch, "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "history": [h.model_dump() for h in state.history], "warnings": state.warnings,
        "config_hash": state.config.config_hash(), "rng": rng_state(),
        "wall_seconds": wall_seconds,
        "best": None if best is None else {"epoch": best.epoch, "val_top1": best.val_top1},
    }, checkpoints, CHECKPOINT_FILE)
    if best is not None and best.epoch == epoch and state.best_file_epoch is not None:
        checkpoints.delete(BEST_FILE)  # last.pt holds the best weights now
        state.best_file_epoch = None
    return written


def resume(state: TrialState, checkpoints: Location) -> None:
    """Continue from ``last.pt`` in ``checkpoints`` when present (same configuration only)."""
    if not checkpoints.exists(CHECKPOINT_FILE):
        return
    saved = load_torch(checkpoints, CHECKPOINT_FILE, map_location=state.device)
    if saved.get("config_hash") != state.config.config_hash():
        raise RuntimeError(f"{checkpoints.child(CHECKPOINT_FILE)} belongs to another "
                           "configuration; refusing to resume from it")
    state.model.load_state_dict(saved["model"])
    load_optimizer_state(state.optimizer, saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    if saved.get("scaler"):
        state.scaler.load_state_dict(saved["scaler"])
    state.history = [EpochMetrics.model_validate(h) for h in saved["history"]]
    state.warnings = list(saved.get("warnings", []))
    state.start_epoch = int(saved["epoch"]) + 1
    state.prior_seconds = float(saved.get("wall_seconds", 0.0))
    state.best = _saved_best(state, checkpoints, saved)
    log.info("resuming %s from epoch %d", checkpoints, state.start_epoch)


def _saved_best(state: TrialState, checkpoints: Location,
                saved: dict[str, Any]) -> SelectedWeights | None:
    """The best-on-val weights a last.pt names: its own weights, or best.pt's."""
    marker = saved.get("best", _LEGACY)
    if marker is None:
        return None
    if marker != _LEGACY and int(marker["epoch"]) == int(saved["epoch"]):
        return SelectedWeights(int(marker["epoch"]), float(marker["val_top1"]),
                               _cpu_copy(saved["model"]))
    if not checkpoints.exists(BEST_FILE):
        if marker == _LEGACY:
            return None
        raise RuntimeError(f"{checkpoints.child(BEST_FILE)} is missing: {CHECKPOINT_FILE} "
                           f"names epoch {marker['epoch']} as the best")
    kept = load_torch(checkpoints, BEST_FILE, map_location="cpu")
    wanted = kept.get("epoch") if marker == _LEGACY else marker["epoch"]
    if kept.get("config_hash") != state.config.config_hash() or kept.get("epoch") != wanted:
        raise RuntimeError(f"{checkpoints.child(BEST_FILE)} is not the best epoch "
                           f"{CHECKPOINT_FILE} names; refusing to resume from it")
    state.best_file_epoch = int(kept["epoch"])
    return SelectedWeights(int(kept["epoch"]), float(kept["val_top1"]), kept["model"])
