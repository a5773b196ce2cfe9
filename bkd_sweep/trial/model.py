"""DistillationModel: everything trainable in one module."""

from __future__ import annotations

import torch
from torch import nn

from bkd_sweep.distill import DistillLoss
from bkd_sweep.models import SpikingStudent


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
