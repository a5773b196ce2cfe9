"""The distillation mode combiner: one module owns every trainable loss part (align, G).

| mode  | total                                |
|-------|--------------------------------------|
| none  | L_task                               |
| logit | L_task + alpha * L_logit             |
| bkd   | L_task + L_bkd   (beta inside L_bkd) |
| mixed | L_task + alpha * L_logit + L_bkd     |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bkd_sweep.distill.bkd import BKDLoss, Granularity
from bkd_sweep.distill.logit import LogitKind, logit_kd_loss

if TYPE_CHECKING:
    from bkd_sweep.config import DistillConfig

Mode = Literal["none", "logit", "bkd", "mixed"]
MODES: tuple[str, ...] = ("none", "logit", "bkd", "mixed")
_LOGIT_MODES = ("logit", "mixed")
_BKD_MODES = ("bkd", "mixed")


@dataclass
class LossTerms:
    """The total (with grad) and each weighted term: ``logit`` = alpha * L_logit, ``bkd`` =
    L_bkd (beta included); a term the mode lacks is None."""

    total: Tensor
    task: Tensor
    logit: Tensor | None = None
    bkd: Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        """{'task': ..., 'logit': ..., 'bkd': ...} for the terms present, for logging."""
        out = {"task": float(self.task.detach())}
        if self.logit is not None:
            out["logit"] = float(self.logit.detach())
        if self.bkd is not None:
            out["bkd"] = float(self.bkd.detach())
        return out

    def oversized(self, ratio: float) -> list[str]:
        """Names of distillation terms larger than ``ratio`` x the task term (a mis-set weight)."""
        values = self.as_floats()
        return [k for k in ("logit", "bkd") if k in values and values[k] > ratio * values["task"]]


def task_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy: with label smoothing for class indices [N]; soft-target CE for [N, K]
    targets (mixup targets already carry their smoothing, so none is added)."""
    if targets.dim() == logits.dim():
        return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


class DistillLoss(nn.Module):
    """Task loss plus the mode's distillation terms; holds BKD's align and G only for bkd/mixed.

    ``forward(student_logits=, targets=, student_feat=, teacher_logits=, teacher_feat=,
    generator=)`` takes keyword arguments only, so student and teacher cannot be swapped by
    position. ``student_feat`` is time-averaged [N, C, H, W], or [T, N, C, H, W] (averaged
    over T here, before blurring).
    """

    def __init__(self, *, mode: Mode = "mixed", logit_loss: LogitKind = "wsld",
                 temperature: float = 2.0, alpha: float = 1.0, beta: float = 2e-3,
                 blur_ratio: float = 0.15, granularity: Granularity = "channel",
                 student_channels: int | None = None, teacher_channels: int | None = None,
                 label_smoothing: float = 0.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown distillation mode {mode!r}; valid: {', '.join(MODES)}")
        self.mode: Mode = mode
        self.logit_loss: LogitKind = logit_loss
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.label_smoothing = float(label_smoothing)
        self.bkd: BKDLoss | None = None
        if mode in _BKD_MODES:
            if student_channels is None or teacher_channels is None:
                raise ValueError(f"mode {mode!r} needs student_channels and teacher_channels "
                                 f"(got {student_channels}, {teacher_channels})")
            self.bkd = BKDLoss(student_channels, teacher_channels, blur_ratio, beta, granularity)

    @classmethod
    def from_config(cls, cfg: DistillConfig, *, student_channels: int,
                    teacher_channels: int | None, label_smoothing: float = 0.0) -> DistillLoss:
        """Build from a trial's ``distill`` section and the two feature widths."""
        return cls(mode=cfg.mode, logit_loss=cfg.logit_loss, temperature=cfg.temperature,
                   alpha=cfg.alpha, beta=cfg.beta, blur_ratio=cfg.blur_ratio,
                   granularity=cfg.granularity, student_channels=student_channels,
                   teacher_channels=teacher_channels, label_smoothing=label_smoothing)

    @property
    def needs_teacher_logits(self) -> bool:
        return self.mode in _LOGIT_MODES

    @property
    def needs_features(self) -> bool:
        return self.mode in _BKD_MODES

    @property
    def needs_teacher(self) -> bool:
        return self.needs_teacher_logits or self.needs_features

    def extra_repr(self) -> str:
        return (f"mode={self.mode!r}, logit_loss={self.logit_loss!r}, "
                f"temperature={self.temperature}, alpha={self.alpha}, "
                f"label_smoothing={self.label_smoothing}")

    def forward(self, *, student_logits: Tensor, targets: Tensor,
                student_feat: Tensor | None = None, teacher_logits: Tensor | None = None,
                teacher_feat: Tensor | None = None,
                generator: torch.Generator | None = None) -> LossTerms:
        if self.needs_teacher_logits and teacher_logits is None:
            raise ValueError(f"distillation mode {self.mode!r} needs teacher_logits")
        if self.needs_features and (student_feat is None or teacher_feat is None):
            missing = [n for n, v in (("student_feat", student_feat),
                                      ("teacher_feat", teacher_feat)) if v is None]
            raise ValueError(f"distillation mode {self.mode!r} needs {' and '.join(missing)}")

        task = task_loss(student_logits, targets, self.label_smoothing)
        total = task
        logit = bkd = None
        if self.needs_teacher_logits:
            logit = self.alpha * logit_kd_loss(
                student_logits=student_logits, teacher_logits=teacher_logits, targets=targets,
                temperature=self.temperature, kind=self.logit_loss)
            total = total + logit
        if self.bkd is not None:
            feat = student_feat.mean(dim=0) if student_feat.dim() == 5 else student_feat
            bkd = self.bkd(student_feat=feat, teacher_feat=teacher_feat, generator=generator)
            total = total + bkd
        return LossTerms(total=total, task=task, logit=logit, bkd=bkd)
