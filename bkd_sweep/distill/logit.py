"""Logit distillation: WSLD (the BKDSNN reference's choice) and classic Hinton KL.

Both are unweighted (the combiner applies alpha) and never send a gradient to the teacher.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from bkd_sweep.registry import Registry

LogitKind = Literal["wsld", "kl"]
LogitLossFn = Callable[..., Tensor]

LOGIT_LOSSES: Registry[Tensor] = Registry("logit loss")


def hard_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample cross-entropy [N] for class indices [N] or soft targets [N, K] (mixup)."""
    if targets.dim() == logits.dim():
        return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    return F.cross_entropy(logits, targets, reduction="none")


@LOGIT_LOSSES.register("wsld")
def wsld_loss(*, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None,
              temperature: float, eps: float = 1e-7) -> Tensor:
    """Weighted soft labels (Zhou et al., ICLR 2021): tau^2 * mean_n(w_n * soft_ce_n).

    soft_ce_n = -sum_k softmax(z_t/tau)_k * log_softmax(z_s/tau)_k;
    w_n = 1 - exp(-max(CE_s,n / (CE_t,n + eps), 0)) from detached hard-label CEs at tau = 1
    (eps, as in the reference code, keeps a perfectly confident teacher from dividing by 0).
    """
    if targets is None:
        raise ValueError("wsld needs targets (class indices or soft targets) for its weights")
    teacher = teacher_logits.detach()
    tau = float(temperature)
    soft_ce = -(F.softmax(teacher / tau, dim=-1)
                * F.log_softmax(student_logits / tau, dim=-1)).sum(dim=-1)
    with torch.no_grad():
        ce_s = hard_cross_entropy(student_logits.detach(), targets)
        ce_t = hard_cross_entropy(teacher, targets)
        weight = 1.0 - torch.exp(-torch.clamp(ce_s / (ce_t + eps), min=0.0))
    return tau ** 2 * (weight * soft_ce).mean()


@LOGIT_LOSSES.register("kl")
def kl_loss(*, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None = None,
            temperature: float) -> Tensor:
    """Hinton KD: tau^2 * KL(softmax(z_t/tau) || softmax(z_s/tau)), summed over classes and
    averaged over the batch (``targets`` is unused)."""
    tau = float(temperature)
    log_p_s = F.log_softmax(student_logits / tau, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach() / tau, dim=-1)
    return tau ** 2 * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def logit_kd_loss(*, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None,
                  temperature: float, kind: LogitKind = "wsld") -> Tensor:
    """The unweighted logit distillation loss of ``kind`` (a name in ``LOGIT_LOSSES``)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logit shapes differ: student {tuple(student_logits.shape)}, "
                         f"teacher {tuple(teacher_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return LOGIT_LOSSES.create(kind, student_logits=student_logits,
                               teacher_logits=teacher_logits, targets=targets,
                               temperature=temperature)
