"""A small spiking CNN for tiny images (8x8 digits, 28x28 MNIST): fast enough for CPU sweeps."""

from __future__ import annotations

import torch
from torch import nn

from bkd_sweep.models.neurons import NeuronFactory
from bkd_sweep.models.students._common import StudentBase, conv_bn, init_weights, seq
from bkd_sweep.models.students._registry import register_student


class FlattenLinearHead(nn.Module):
    """``[T,B,C,H,W]`` -> adaptive avg-pool to ``grid`` x ``grid`` -> flatten -> Linear per step
    -> mean over T."""

    def __init__(self, channels: int, grid: int, num_classes: int):
        super().__init__()
        self.pool = seq(nn.AdaptiveAvgPool2d(grid))
        self.fc = nn.Linear(channels * grid * grid, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(features).flatten(2)).mean(0)


class SpikingCNNSmall(StudentBase):
    """conv(in->32)-BN-SN -> conv(32->64)-BN-SN, a 2x2 max-pool after a block while the map is
    still >= 16 px (8x8 stays 8x8; 28 -> 14; 32 -> 16 -> 8). Feature point: ``features`` (the
    last conv block's spikes). The head keeps position (adaptive-pool to at most 8x8, flatten,
    linear): on 8x8 digits a global-average-pool head learns several times slower, because two
    3x3 convs cannot encode where a stroke is in their channels alone."""

    channels_last = True

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int, timesteps: int,
                 neuron: NeuronFactory, widths: tuple[int, ...] = (32, 64)):
        super().__init__(timesteps=timesteps, num_classes=num_classes,
                         feature_channels=widths[-1], feature_point="features")
        blocks: list[nn.Module] = []
        size, c_in = image_size, in_channels
        for width in widths:
            blocks += [conv_bn(c_in, width), neuron()]
            if size >= 16:
                blocks.append(seq(nn.MaxPool2d(2)))
                size //= 2
            c_in = width
        self.features = nn.Sequential(*blocks)
        self.head = FlattenLinearHead(widths[-1], min(size, 8), num_classes)
        init_weights(self)
        self.head.fc.reset_parameters()  # PyTorch's default uniform(+-1/sqrt(fan_in))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.encode(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


@register_student("spiking_cnn_small")
def spiking_cnn_small(**kw) -> SpikingCNNSmall:
    return SpikingCNNSmall(**kw)
