"""Distillation losses: task CE, logit KD (wsld, kl), blurred KD (mask, align, G), and the
mode combiner (none, logit, bkd, mixed)."""

from bkd_sweep.distill.bkd import BKDLoss, resize_map, sample_blur_mask
from bkd_sweep.distill.combined import MODES, DistillLoss, LossTerms, task_loss
from bkd_sweep.distill.logit import LOGIT_LOSSES, logit_kd_loss

__all__ = [
    "BKDLoss",
    "DistillLoss",
    "LOGIT_LOSSES",
    "LossTerms",
    "MODES",
    "logit_kd_loss",
    "resize_map",
    "sample_blur_mask",
    "task_loss",
]
