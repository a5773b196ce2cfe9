"""Evaluation of a student on a split: top-1, top-5 (percent) and mean cross-entropy."""

from __future__ import annotations

from typing import Callable, ContextManager

import torch
import torch.distributed as dist
from torch import nn

from bkd_sweep.models import reset
from bkd_sweep.trial.environment import ProcessGroup


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> int:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return int((top == targets[:, None]).any(dim=1).sum())


@torch.no_grad()
def evaluate(student: nn.Module, loader, device: torch.device, group: ProcessGroup,
             autocast: Callable[[], ContextManager]) -> tuple[float, float, float]:
    """Top-1, top-5 (percent) and mean cross-entropy of the student over ``loader``."""
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
            topk_correct(logits, targets, 1), topk_correct(logits, targets, 5),
            float(nn.functional.cross_entropy(logits, targets, reduction="sum")),
            targets.shape[0]], dtype=torch.float64)
    if group.enabled:
        totals = totals.to(device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    count = max(1.0, float(totals[3]))
    return 100 * float(totals[0]) / count, 100 * float(totals[1]) / count, float(totals[2]) / count
