"""One training step and one epoch. ``bench/`` times this same ``train_step``."""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch
import torch.distributed as dist
from torch import nn

from bkd_sweep.models import Teacher, reset
from bkd_sweep.records import EpochMetrics
from bkd_sweep.trial.environment import (ProcessGroup, broadcast_buffers, epoch_seed,
                                         seed_everything)
from bkd_sweep.trial.evaluate import evaluate
from bkd_sweep.trial.state import TrialState

log = logging.getLogger(__name__)

TERM_NAMES = ("task", "logit", "bkd")


class NonFiniteLoss(ArithmeticError):
    """The total loss became NaN or infinite; the trial ends as failed with this reason."""


@dataclass(frozen=True)
class StepLosses:
    """A step's total ("loss") and terms, still on the device: reading them is a host sync,
    so the epoch reads a whole logging interval at once."""

    names: tuple[str, ...]
    values: torch.Tensor  # [len(names)], detached float32


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any, images: torch.Tensor,
               targets: torch.Tensor, *, teacher: Teacher | None = None,
               forward: nn.Module | None = None, scaler: torch.amp.GradScaler | None = None,
               autocast: Callable[[], ContextManager] = nullcontext,
               grad_clip: float | None = None) -> StepLosses:
    """Teacher forward (inference mode), student + losses, backward, optimizer and LR step,
    state reset. ``forward`` is the module to call (DDP wrapper or compiled ``model``).
    Nothing here waits for the device."""
    t_logits = t_feat = None
    if teacher is not None:
        with torch.inference_mode(), autocast():
            out = teacher(images)
        # clone() leaves inference mode: autograd may then save them for the backward pass
        t_logits, t_feat = out.logits.float().clone(), out.feature.float().clone()
    with autocast():
        # ``is None``, not ``or``: a compiled module's truth value raises (it has no len())
        _, terms = (model if forward is None else forward)(images, targets, t_logits, t_feat)
    total = terms.total
    names = tuple(n for n in TERM_NAMES if getattr(terms, n) is not None)
    values = torch.stack([total.detach().float()] + [
        getattr(terms, n).detach().float() for n in names])
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
    return StepLosses(("loss", *names), values)


class LossLog:
    """Batch-weighted sums of the logged terms, read from the device once per interval;
    the read doubles as the finite check (naming the first bad step). Under DDP every rank
    raises when any rank saw a non-finite loss (a lone rank raising would leave the others
    waiting in the next gradient all-reduce)."""

    def __init__(self, epoch: int, every: int, group: ProcessGroup = ProcessGroup()):
        self.epoch, self.every, self.group = epoch, every, group
        self.sums: dict[str, float] = {}
        self.seen = 0
        self._pending: list[tuple[int, int, StepLosses]] = []

    def add(self, step: int, batch: int, losses: StepLosses) -> None:
        self._pending.append((step, batch, losses))
        if len(self._pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        stacked = torch.stack([losses.values for _, _, losses in self._pending])
        rows = stacked.tolist()
        elsewhere = self._any_rank_non_finite(stacked)
        for (step, batch, losses), row in zip(self._pending, rows):
            if not math.isfinite(row[0]):
                raise NonFiniteLoss(f"non-finite loss ({row[0]}) at epoch {self.epoch} "
                                    f"step {step + 1}")
            self.seen += batch
            for name, value in zip(losses.names, row):
                self.sums[name] = self.sums.get(name, 0.0) + value * batch
        if elsewhere:
            first, last = self._pending[0][0] + 1, self._pending[-1][0] + 1
            raise NonFiniteLoss(f"non-finite loss on another rank at epoch {self.epoch} "
                                f"steps {first}-{last}")
        self._pending.clear()

    def _any_rank_non_finite(self, stacked: torch.Tensor) -> bool:
        """Whether any rank's pending totals include a non-finite one (one all-reduce per
        flush, only under DDP: a single process pays nothing)."""
        if not self.group.enabled:
            return False
        flag = (~torch.isfinite(stacked[:, 0])).any().float().reshape(1)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def means(self) -> dict[str, float]:
        self.flush()
        return {k: v / max(1, self.seen) for k, v in self.sums.items()}


def _start_epoch(state: TrialState, epoch: int) -> bool:
    """Reseed (a resumed trial draws the same shuffles, masks and mixes), set train mode;
    returns whether mixup/cutmix is on this epoch."""
    seed = epoch_seed(state.config.seed, epoch, state.group.rank)
    seed_everything(seed)
    loader = state.loaders.train
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
    log_ = LossLog(epoch, state.config.train.log_every_steps, state.group)
    for step, (images, targets) in enumerate(state.loaders.train):
        if step >= state.steps_per_epoch:
            break
        images = images.to(state.device, non_blocking=True)
        targets = targets.to(state.device, non_blocking=True)
        if mixing:
            images, targets = state.mixup(images, targets)
        log_.add(step, images.shape[0], _step(state, images, targets))
    means = log_.means()
    broadcast_buffers(state.model, state.group)  # evaluate (and save) rank 0's statistics
    top1, top5, val_loss = evaluate(state.student, state.loaders.val, state.device, state.group,
                                    state.autocast)
    seconds = time.perf_counter() - started
    terms = {k: v for k, v in means.items() if k != "loss"}
    if epoch == 1:
        _warn_on_imbalance(state, terms)
    return EpochMetrics(epoch=epoch, top1=top1, top5=top5, val_loss=val_loss,
                        loss=means.get("loss", float("nan")), loss_terms=terms,
                        lr=state.optimizer.param_groups[0]["lr"], wall_seconds=seconds,
                        samples_per_second=log_.seen * state.group.world / max(seconds, 1e-9))


def _step(state: TrialState, images: torch.Tensor, targets: torch.Tensor) -> StepLosses:
    def run() -> StepLosses:
        return train_step(state.model, state.optimizer, state.scheduler, images, targets,
                          teacher=state.teacher, forward=state.wrapped, scaler=state.scaler,
                          autocast=state.autocast, grad_clip=state.config.train.grad_clip)

    if not state.compiled:
        return run()
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say so once
        reset(state.model)  # the failed call may have left membrane state behind
        state.uncompile(exc)
        return run()


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
