"""One trial: the training loop for one (student, teacher, distillation) configuration.

``run_trial(config, report)`` runs without Ray (tests, ``bkd-sweep train``) and under Ray
(the engine passes a ``report`` that forwards to ``ray.tune.report``). It reports once per
epoch after writing that epoch's checkpoint, so a killed trial continues where it was.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from bkd_sweep.data import DataBundle, build_data, make_loaders, make_mixup
from bkd_sweep.distill import DistillLoss
from bkd_sweep.energy import measure
from bkd_sweep.models import SpikingStudent, Teacher, create_student, reset
from bkd_sweep.records import EnergyReport, EpochMetrics, TrialResult
from bkd_sweep.runtime import (code_version, epoch_seed, load_checkpoint, lr_schedule,
                               make_optimizer, save_atomic, seed_everything, select_device)
from bkd_sweep.study import TrialConfig
from bkd_sweep.teacher_cache import prepare_teacher

log = logging.getLogger(__name__)

ReportFn = Callable[[EpochMetrics, "Path | None"], None]
CHECKPOINT_NAME = "last.pt"
DATA_SPLIT_SEED = 0


class DistillationModel(nn.Module):
    """Everything trainable in one module (student, align, restoration block), so the
    optimizer, DDP, ``.to()`` and checkpoints all see it. The frozen teacher lives outside."""

    def __init__(self, student: SpikingStudent, loss: DistillLoss):
        super().__init__()
        self.student = student
        self.loss = loss

    def forward(self, images: torch.Tensor, targets: torch.Tensor,
                teacher_logits: torch.Tensor | None = None,
                teacher_feat: torch.Tensor | None = None):
        features = self.student.forward_features(images)  # [T, B, C, H, W]
        logits = self.student.forward_head(features)
        # time-average before blurring; skipped when no term uses the feature (none, logit)
        student_feat = features.mean(0) if self.loss.needs_features else None
        terms = self.loss(student_logits=logits, targets=targets, student_feat=student_feat,
                          teacher_logits=teacher_logits, teacher_feat=teacher_feat)
        return logits, terms


@dataclass
class _Distributed:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _distributed() -> _Distributed:
    if dist.is_available() and dist.is_initialized():
        return _Distributed(dist.get_rank(), dist.get_world_size())
    return _Distributed()


def _topk_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> int:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return int((top == targets[:, None]).any(dim=1).sum())


@torch.no_grad()
def evaluate(student: nn.Module, loader, device: torch.device, ddp: _Distributed,
             autocast) -> tuple[float, float, float]:
    """Validation top-1, top-5 (percent) and mean cross-entropy of the student."""
    student.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # correct1, correct5, loss sum, count
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast():
            logits = student(images)
        reset(student)
        logits = logits.float()
        totals += torch.tensor([
            _topk_correct(logits, targets, 1), _topk_correct(logits, targets, 5),
            float(nn.functional.cross_entropy(logits, targets, reduction="sum")),
            targets.shape[0]], dtype=torch.float64)
    if ddp.enabled:
        totals = totals.to(device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    count = max(1.0, float(totals[3]))
    return 100 * float(totals[0]) / count, 100 * float(totals[1]) / count, float(totals[2]) / count


def _rng_state() -> dict:
    import random
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _energy_batch(bundle: DataBundle, samples: int) -> torch.Tensor:
    count = min(samples, len(bundle.val))
    return torch.stack([bundle.val[i][0] for i in range(count)])


def run_trial(config: TrialConfig, report: ReportFn | None = None, *,
              checkpoint_dir: Path | None = None, cache_dir: Path | None = None) -> TrialResult:
    """Train one configuration; returns its TrialResult (completed, or failed with a reason).

    Resumes from ``checkpoint_dir/last.pt`` when present. Calls ``report(metrics, ckpt_dir)``
    after each epoch once that epoch's checkpoint is written. Data and configuration faults
    raise; a non-finite loss ends the trial as failed.
    """
    started = time.perf_counter()
    ddp = _distributed()
    device = select_device(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.seed)
    checkpoint_dir = Path(checkpoint_dir).resolve() if checkpoint_dir else None

    teacher_t = config.teacher.timesteps if config.distill.mode != "none" else None
    frames = max(config.student.timesteps, teacher_t or 0)
    # One split for every trial of a study (the seed varies init and order, not the data),
    # so a cached teacher never saw a later trial's validation images.
    bundle = build_data(config.data, seed=DATA_SPLIT_SEED, timesteps=frames)
    loaders = make_loaders(bundle, config.data, seed=config.seed, distributed=ddp.enabled)
    train_loader, val_loader = loaders.train, loaders.val
    mixup = make_mixup(config.data.augment, bundle.num_classes)

    student = create_student(config.student.arch, num_classes=bundle.num_classes,
                             in_channels=bundle.in_channels, image_size=bundle.image_size,
                             timesteps=config.student.timesteps, neuron=config.student.neuron)
    teacher_info = prepare_teacher(config, bundle, device=device, cache_dir=cache_dir,
                                   load=config.distill.mode != "none")
    teacher: Teacher | None = teacher_info.teacher
    if teacher is not None:
        teacher.to(device)
    loss_fn = DistillLoss.from_config(
        config.distill, student_channels=student.feature_channels,
        teacher_channels=teacher.feature_channels if teacher is not None else None,
        label_smoothing=config.data.augment.label_smoothing)
    model = DistillationModel(student, loss_fn).to(device)

    optimizer = make_optimizer(model, config.train.optimizer)
    steps_per_epoch = len(train_loader)
    if config.train.max_batches_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.train.max_batches_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(
        config.train.epochs, steps_per_epoch, config.train.warmup_epochs, config.train.scheduler,
        config.train.optimizer.lr, config.train.min_lr))

    use_amp = config.train.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    def autocast():
        return torch.autocast("cuda", dtype=amp_dtype) if use_amp else nullcontext()

    history: list[EpochMetrics] = []
    warnings: list[str] = []
    start_epoch = 1
    prior_seconds = 0.0
    if checkpoint_dir and (checkpoint_dir / CHECKPOINT_NAME).exists():
        state = load_checkpoint(checkpoint_dir / CHECKPOINT_NAME, map_location=device)
        if state.get("config_hash") != config.config_hash():
            raise RuntimeError(f"{checkpoint_dir / CHECKPOINT_NAME} belongs to another "
                               "configuration; refusing to resume from it")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = [EpochMetrics.model_validate(h) for h in state["history"]]
        warnings = list(state.get("warnings", []))
        start_epoch = int(state["epoch"]) + 1
        prior_seconds = float(state.get("wall_seconds", 0.0))
        log.info("resuming %s from epoch %d", checkpoint_dir, start_epoch)

    trainable: nn.Module = model
    if ddp.enabled:
        trainable = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def finish(status: str, reason: str | None = None,
               energy: EnergyReport | None = None) -> TrialResult:
        wall = prior_seconds + (time.perf_counter() - started)
        devices = ddp.world if device.type == "cuda" or ddp.enabled else 1
        top1s = [h.top1 for h in history]
        top5s = [h.top5 for h in history]
        return TrialResult(
            status=status, reason=reason,
            best_top1=max(top1s) if top1s else None, final_top1=top1s[-1] if top1s else None,
            best_top5=max(top5s) if top5s else None, final_top5=top5s[-1] if top5s else None,
            energy=energy, teacher_top1=teacher_info.top1,
            teacher_energy_mj=teacher_info.energy_mj, epochs_run=len(history),
            wall_seconds=wall, device_seconds=wall * devices, device=str(device.type),
            config=config.model_dump(mode="json"), config_hash=config.config_hash(),
            code_version=code_version(), history=history, warnings=warnings)

    for epoch in range(start_epoch, config.train.epochs + 1):
        epoch_started = time.perf_counter()
        # reseed per epoch: a resumed trial draws the same shuffles, masks and mixes
        seed_everything(epoch_seed(config.seed, epoch))
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        generator = getattr(train_loader, "generator", None)
        if generator is not None:
            generator.manual_seed(epoch_seed(config.seed, epoch))
        mixing = mixup is not None and (config.data.augment.mixup_off_epoch is None
                                        or epoch <= config.data.augment.mixup_off_epoch)
        trainable.train()
        if teacher is not None:
            teacher.eval()
        sums: dict[str, float] = {}
        seen = 0
        for step, (images, targets) in enumerate(train_loader):
            if step >= steps_per_epoch:
                break
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if mixing:
                images, targets = mixup(images, targets)
            t_logits = t_feat = None
            if teacher is not None:
                with torch.no_grad(), autocast():
                    out = teacher(images)
                t_logits, t_feat = out.logits.float(), out.feature.float()
            with autocast():
                _, terms = trainable(images, targets, t_logits, t_feat)
            total = terms.total
            # one device->host transfer per step: the finite check and the logged terms
            names = [n for n in ("task", "logit", "bkd") if getattr(terms, n) is not None]
            values = torch.stack([total.detach().float()] + [
                getattr(terms, n).detach().float() for n in names]).tolist()
            if not math.isfinite(values[0]):
                reset(model)
                return finish("failed", f"non-finite loss ({values[0]}) at epoch {epoch} "
                                        f"step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if config.train.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            reset(model)
            batch = images.shape[0]
            seen += batch
            for name, value in zip(["loss", *names], values):
                sums[name] = sums.get(name, 0.0) + value * batch
        top1, top5, val_loss = evaluate(student, val_loader, device, ddp, autocast)
        seconds = time.perf_counter() - epoch_started
        means = {k: v / max(1, seen) for k, v in sums.items()}
        terms_mean = {k: v for k, v in means.items() if k != "loss"}
        task = terms_mean.get("task", 0.0)
        # Balance is judged on the first epoch: later the task loss goes toward 0 while a
        # soft-target term keeps the teacher's entropy, so late ratios say nothing.
        for name in ("logit", "bkd") if epoch == 1 else ():
            value = terms_mean.get(name)
            if value is not None and task > 0 and value > config.distill.warn_ratio * task:
                message = (f"epoch {epoch}: L_{name} = {value:.4g} is {value / task:.0f}x the "
                           f"task loss ({task:.4g}); consider a smaller "
                           f"{'beta' if name == 'bkd' else 'alpha'}")
                warnings.append(message)
                log.warning(message)
        metrics = EpochMetrics(epoch=epoch, top1=top1, top5=top5, val_loss=val_loss,
                               loss=means.get("loss", float("nan")), loss_terms=terms_mean,
                               lr=optimizer.param_groups[0]["lr"], wall_seconds=seconds,
                               samples_per_second=seen * ddp.world / max(seconds, 1e-9))
        history.append(metrics)
        if checkpoint_dir and ddp.is_main:
            save_atomic({
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "history": [h.model_dump() for h in history], "warnings": warnings,
                "config_hash": config.config_hash(), "rng": _rng_state(),
                "wall_seconds": prior_seconds + time.perf_counter() - started,
            }, checkpoint_dir / CHECKPOINT_NAME)
        if ddp.enabled:
            dist.barrier()
        if report is not None:
            report(metrics, checkpoint_dir)

    energy_inputs = _energy_batch(bundle, config.energy.samples).to(device)
    energy = measure(student, energy_inputs, timesteps=config.student.timesteps,
                     e_mac_pj=config.energy.e_mac_pj, e_ac_pj=config.energy.e_ac_pj,
                     first_layer_once=config.energy.first_layer_once)
    return finish("completed", energy=energy)
