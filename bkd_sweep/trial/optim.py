"""Optimizer and per-step LR schedule, shared by student trials and teacher training."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from bkd_sweep.config import OptimizerConfig


def lr_schedule(epochs: int, steps_per_epoch: int, warmup_epochs: int, scheduler: str,
                base_lr: float, min_lr: float) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to min_lr (per optimizer step)."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(warmup_epochs * steps_per_epoch, total - 1)
    floor = min_lr / base_lr if base_lr > 0 else 0.0

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if scheduler == "none":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: nn.Module, opt: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters (student, align, restoration block)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum,
                               weight_decay=opt.weight_decay)
    return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int,
                   warmup_epochs: int, scheduler: str, base_lr: float,
                   min_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(
        epochs, steps_per_epoch, warmup_epochs, scheduler, base_lr, min_lr))
