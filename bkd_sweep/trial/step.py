"""One training step and one epoch. ``bench/`` times this same ``train_step``."""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from bkd_sweep.models import Teacher, reset
from bkd_sweep.records import EpochMetrics
from bkd_sweep.trial.environment import epoch_seed, seed_everything
from bkd_sweep.trial.evaluate import evaluate
from bkd_sweep.trial.state import TrialState

log = logging.getLogger(__name__)

TERM_NAMES = ("task", "logit", "bkd")


class NonFiniteLoss(ArithmeticError):
    """The total loss became NaN or infinite; the trial ends as failed with this reason."""


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any, images: torch.Tensor,
               targets: torch.Tensor, *, teacher: Teacher | None = None,
               forward: nn.Module | None = None, scaler: torch.amp.GradScaler | None = None,
               autocast: Callable[[], ContextManager] = nullcontext,
               grad_clip: float | None = None) -> dict[str, float]:
    """Teacher forward (no grad), student + losses, backward, optimizer and LR step, state
    reset. ``forward`` is the module to call (the DDP wrapper of ``model`` when distributed).
    Returns the total ("loss") and each term as floats: one device-to-host transfer per step,
    which also serves the finite check."""
    t_logits = t_feat = None
    if teacher is not None:
        with torch.no_grad(), autocast():
            out = teacher(images)
        t_logits, t_feat = out.logits.float(), out.feature.float()
    with autocast():
        _, terms = (forward or model)(images, targets, t_logits, t_feat)
    total = terms.total
    names = [n for n in TERM_NAMES if getattr(terms, n) is not None]
    values = torch.stack([total.detach().float()] + [
        getattr(terms, n).detach().float() for n in names]).tolist()
    if not math.isfinite(values[0]):
        reset(model)
        raise NonFiniteLoss(f"non-finite loss ({values[0]})")
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:  # plain fp32 (the bench, teacher-free callers)
        total.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    else:
        scaler.scale(total).backward()
        if grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()
    reset(model)
    return dict(zip(["loss", *names], values))


def _start_epoch(state: TrialState, epoch: int) -> bool:
    """Reseed (a resumed trial draws the same shuffles, masks and mixes), set train mode;
    returns whether mixup/cutmix is on this epoch."""
    seed = epoch_seed(state.config.seed, epoch)
    seed_everything(seed)
    loader = state.train_loader
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed)
    state.wrapped.train()
    if state.teacher is not None:
        state.teacher.eval()
    off = state.config.data.augment.mixup_off_epoch
    return state.mixup is not None and (off is None or epoch <= off)


def train_epoch(state: TrialState, epoch: int) -> EpochMetrics:
    """One pass over the training data, then validation. Raises NonFiniteLoss naming the
    epoch and step."""
    started = time.perf_counter()
    mixing = _start_epoch(state, epoch)
    sums: dict[str, float] = {}
    seen = 0
    for step, (images, targets) in enumerate(state.train_loader):
        if step >= state.steps_per_epoch:
            break
        images = images.to(state.device, non_blocking=True)
        targets = targets.to(state.device, non_blocking=True)
        if mixing:
            images, targets = state.mixup(images, targets)
        try:
            values = train_step(state.model, state.optimizer, state.scheduler, images, targets,
                                teacher=state.teacher, forward=state.wrapped,
                                scaler=state.scaler, autocast=state.autocast,
                                grad_clip=state.config.train.grad_clip)
        except NonFiniteLoss as exc:
            raise NonFiniteLoss(f"{exc} at epoch {epoch} step {step + 1}") from None
        batch = images.shape[0]
        seen += batch
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value * batch
    top1, top5, val_loss = evaluate(state.student, state.val_loader, state.device, state.group,
                                    state.autocast)
    seconds = time.perf_counter() - started
    means = {k: v / max(1, seen) for k, v in sums.items()}
    terms = {k: v for k, v in means.items() if k != "loss"}
    if epoch == 1:
        _warn_on_imbalance(state, terms)
    return EpochMetrics(epoch=epoch, top1=top1, top5=top5, val_loss=val_loss,
                        loss=means.get("loss", float("nan")), loss_terms=terms,
                        lr=state.optimizer.param_groups[0]["lr"], wall_seconds=seconds,
                        samples_per_second=seen * state.group.world / max(seconds, 1e-9))


def _warn_on_imbalance(state: TrialState, terms: dict[str, float]) -> None:
    """Balance is judged on the first epoch: later the task loss goes toward 0 while a
    soft-target term keeps the teacher's entropy, so late ratios say nothing."""
    task = terms.get("task", 0.0)
    for name in ("logit", "bkd"):
        value = terms.get(name)
        if value is not None and task > 0 and value > state.config.distill.warn_ratio * task:
            message = (f"epoch 1: L_{name} = {value:.4g} is {value / task:.0f}x the "
                       f"task loss ({task:.4g}); consider a smaller "
                       f"{'beta' if name == 'bkd' else 'alpha'}")
            state.warnings.append(message)
            log.warning(message)
