"""Blurred knowledge distillation (BKDSNN): blur the student's feature, restore the teacher's.

L_bkd = beta * sum((G(B * align(S)) - F)^2) / N, with S the time-averaged student feature,
B a random 0/1 blur mask (zero with probability lambda, no 1/(1-lambda) rescale), align a 1x1
conv when channel counts differ, G = Conv3x3 -> ReLU -> Conv3x3, F the detached teacher feature.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Granularity = Literal["channel", "pixel"]
GRANULARITIES: tuple[str, ...] = ("channel", "pixel")


def sample_blur_mask(feat: Tensor, *, blur_ratio: float, granularity: Granularity = "channel",
                     generator: torch.Generator | None = None) -> Tensor:
    """A 0/1 mask for ``feat`` [N, C, H, W]: each entry 0 with probability ``blur_ratio``.

    ``channel`` -> shape (N, C, 1, 1) (one draw per sample and channel, the paper's B);
    ``pixel`` -> shape (N, 1, H, W) (one draw per sample and location, an ablation).
    The mask has ``feat``'s dtype and device; ``generator`` makes the draw reproducible.
    """
    if feat.dim() != 4:
        raise ValueError(f"feature must be [N, C, H, W], got shape {tuple(feat.shape)}")
    if not 0.0 <= blur_ratio < 1.0:
        raise ValueError(f"blur_ratio must be in [0, 1), got {blur_ratio}")
    n, c, h, w = feat.shape
    if granularity == "channel":
        shape = (n, c, 1, 1)
    elif granularity == "pixel":
        shape = (n, 1, h, w)
    else:
        raise ValueError(f"unknown granularity {granularity!r}; valid: {', '.join(GRANULARITIES)}")
    # Draw on the generator's device (a CPU generator cannot feed a CUDA rand), then move.
    device = generator.device if generator is not None else feat.device
    uniform = torch.rand(shape, generator=generator, device=device)
    return (uniform >= blur_ratio).to(device=feat.device, dtype=feat.dtype)


def resize_map(feat: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a [N, C, H, W] map to ``size``: adaptive average pooling when it shrinks (or keeps)
    both sides, else bilinear interpolation (align_corners=False).

    Both are linear with weights summing to one, so resizing before the 1x1 align conv gives the
    same result as resizing after it (and is cheaper).
    """
    h, w = feat.shape[-2:]
    if (h, w) == tuple(size):
        return feat
    if h >= size[0] and w >= size[1]:
        return F.adaptive_avg_pool2d(feat, size)
    return F.interpolate(feat, size=size, mode="bilinear", align_corners=False)


class BKDLoss(nn.Module):
    """The BKD term with its trainable parts: ``align`` (1x1 conv or None) and ``restore`` (G).

    Called as ``loss(student_feat=S, teacher_feat=F, mask=None, generator=None)`` with S the
    time-averaged student map [N, C_s, H, W] ([N, C_s] is taken as a 1x1 map) and F either a
    vector [N, C_t] (G's output is then global-average-pooled) or a map [N, C_t, h, w] (S is
    resized to h x w first, see ``resize_map``). ``mask`` overrides the random blur; it must
    broadcast to [N, C_t, H', W'] (the aligned, resized student map). Returns a scalar.
    """

    def __init__(self, student_channels: int, teacher_channels: int, blur_ratio: float,
                 beta: float, granularity: Granularity = "channel"):
        super().__init__()
        if student_channels < 1 or teacher_channels < 1:
            raise ValueError("channel counts must be positive, got "
                             f"student={student_channels}, teacher={teacher_channels}")
        if not 0.0 <= blur_ratio < 1.0:
            raise ValueError(f"blur_ratio must be in [0, 1), got {blur_ratio}")
        if granularity not in GRANULARITIES:
            raise ValueError(f"unknown granularity {granularity!r}; valid: "
                             + ", ".join(GRANULARITIES))
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.blur_ratio = float(blur_ratio)
        self.beta = float(beta)
        self.granularity: Granularity = granularity
        self.align: nn.Conv2d | None = (
            nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=True)
            if student_channels != teacher_channels else None)
        self.restore = nn.Sequential(
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1, bias=True),
            nn.ReLU(inplace=False),
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1, bias=True),
        )

    def extra_repr(self) -> str:
        return (f"blur_ratio={self.blur_ratio}, beta={self.beta}, "
                f"granularity={self.granularity!r}")

    def sample_mask(self, feat: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A fresh blur mask for an aligned feature [N, C_t, H, W] (see ``sample_blur_mask``)."""
        return sample_blur_mask(feat, blur_ratio=self.blur_ratio, granularity=self.granularity,
                                generator=generator)

    def forward(self, *, student_feat: Tensor, teacher_feat: Tensor, mask: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        student = student_feat.unsqueeze(-1).unsqueeze(-1) if student_feat.dim() == 2 \
            else student_feat
        if student.dim() != 4:
            raise ValueError("student_feat must be time-averaged [N, C, H, W] (or [N, C]), got "
                             f"shape {tuple(student_feat.shape)}")
        if student.shape[1] != self.student_channels:
            raise ValueError(f"student_feat has {student.shape[1]} channels, this BKDLoss was "
                             f"built for {self.student_channels}")
        teacher = teacher_feat.detach()  # never a gradient into the teacher
        if teacher.dim() not in (2, 4) or teacher.shape[1] != self.teacher_channels:
            raise ValueError(f"teacher_feat must be [N, {self.teacher_channels}] or "
                             f"[N, {self.teacher_channels}, h, w], got {tuple(teacher.shape)}")
        if teacher.shape[0] != student.shape[0]:
            raise ValueError(f"batch sizes differ: student {student.shape[0]}, "
                             f"teacher {teacher.shape[0]}")

        if teacher.dim() == 4:
            student = resize_map(student, (teacher.shape[2], teacher.shape[3]))
        aligned = self.align(student) if self.align is not None else student
        if mask is None:
            mask = self.sample_mask(aligned, generator=generator)
        else:
            try:
                torch.broadcast_shapes(mask.shape, aligned.shape)
            except RuntimeError:
                raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the "
                                 f"aligned student feature {tuple(aligned.shape)}") from None
            mask = mask.to(device=aligned.device, dtype=aligned.dtype)
        restored = self.restore(aligned * mask)
        if teacher.dim() == 2:
            restored = restored.mean(dim=(2, 3))

        # Sum of squares in at least float32: under AMP a float16 sum can overflow.
        dtype = torch.promote_types(torch.promote_types(restored.dtype, teacher.dtype),
                                    torch.float32)
        sq_err = (restored.to(dtype) - teacher.to(dtype)).pow(2).sum()
        return self.beta * sq_err / student.shape[0]
