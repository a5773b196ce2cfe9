"""Optimizer and LR schedule from timm, shared by student trials and teacher training.

timm's ``create_optimizer_v2`` puts biases and every 1-D parameter (norm weights, learnable
neuron constants) in a group without weight decay (``filter_bias_and_bn``), as the reference
recipes do; timm's schedulers give warm-up, min LR and cool-down as reference configs write
them. The schedule is stepped once per optimizer update.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

from bkd_sweep.config import OptimizerConfig
from bkd_sweep.config.trial import ScheduleConfig

# our name -> timm's (timm's "sgd" is Nesterov; the reference SEW recipe is plain momentum)
_TIMM_OPTIMIZERS = {"sgd": "momentum", "adamw": "adamw", "adam": "adam", "lamb": "lamb"}
_TIMM_SCHEDULERS = {"cosine": "cosine", "step": "step", "none": "step"}


def make_optimizer(model: nn.Module, opt: OptimizerConfig) -> torch.optim.Optimizer:
    """timm optimizer over the trainable parameters (student, align, restoration block)."""
    extra: dict[str, Any] = {"momentum": opt.momentum} if opt.name == "sgd" else {}
    return create_optimizer_v2(model, opt=_TIMM_OPTIMIZERS[opt.name], lr=opt.lr,
                               weight_decay=opt.weight_decay,
                               filter_bias_and_bn=opt.filter_bias_and_bn, **extra)


class UpdateSchedule:
    """A timm scheduler stepped per optimizer update, with torch's ``step()`` /
    ``state_dict()`` interface so the step and the checkpoints need not know timm."""

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.updates = 0

    def step(self) -> None:
        self.updates += 1
        self.scheduler.step_update(self.updates)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.scheduler.step_update(self.updates)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: ScheduleConfig,
                   steps_per_epoch: int, base_lr: float) -> UpdateSchedule:
    """The recipe's schedule over ``recipe.epochs`` (warm-up and cool-down clipped to fit)."""
    warmup = min(recipe.warmup_epochs, recipe.epochs - 1)
    cooldown = min(recipe.cooldown_epochs, recipe.epochs - warmup - 1)
    constant = recipe.scheduler == "none"
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=_TIMM_SCHEDULERS[recipe.scheduler], num_epochs=recipe.epochs - cooldown,
        cooldown_epochs=cooldown, min_lr=recipe.min_lr,
        warmup_lr=recipe.warmup_lr if warmup else base_lr, warmup_epochs=warmup,
        decay_epochs=recipe.epochs if constant else recipe.decay_epochs,
        decay_rate=1.0 if constant else recipe.decay_rate,
        step_on_epochs=False, updates_per_epoch=max(1, steps_per_epoch))
    return UpdateSchedule(scheduler)
