"""Batch mixup/cutmix: timm's Mixup, taught event batches and odd batch sizes."""

from __future__ import annotations

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from torch import Tensor


class BatchMixup(Mixup):
    """timm's Mixup that also takes event batches [B, T, C, H, W] (frames mixed alike) and
    odd batch sizes (the last sample stays unmixed, with a label-smoothed one-hot target)."""

    def __call__(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() == 5:
            b, t, c, h, w = x.shape
            mixed, soft = self(x.reshape(b, t * c, h, w), target)
            return mixed.reshape(b, t, c, h, w), soft
        if len(x) % 2 == 1:
            last = mixup_target(target[-1:], self.num_classes, 1.0, self.label_smoothing)
            if len(x) == 1:
                return x, last
            head, soft = super().__call__(x[:-1].contiguous(), target[:-1])
            return torch.cat([head, x[-1:]]), torch.cat([soft, last])
        return super().__call__(x, target)
