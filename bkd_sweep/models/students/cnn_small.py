"""A small spiking CNN for tiny images (8x8 digits, 28x28 MNIST): fast enough for CPU sweeps."""

from __future__ import annotations

import torch
from torch import nn

from bkd_sweep.models.neurons import NeuronFactory
from bkd_sweep.models.students._common import (PooledLinearHead, StudentBase, conv_bn,
                                               init_weights, seq)
from bkd_sweep.models.students._registry import register_student


class SpikingCNNSmall(StudentBase):
    """conv(in->32)-BN-SN -> conv(32->64)-BN-SN, a 2x2 max-pool after a block while the map is
    still >= 16 px (8x8 stays 8x8; 28 -> 14; 32 -> 16 -> 8); head = mean-pool + linear.
    Feature point: ``features`` (the last conv block's spikes)."""

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
        self.head = PooledLinearHead(widths[-1], num_classes)
        init_weights(self)
        self.head.fc.reset_parameters()  # PyTorch's default: a livelier start than std 0.02

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.encode(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


@register_student("spiking_cnn_small")
def spiking_cnn_small(**kw) -> SpikingCNNSmall:
    return SpikingCNNSmall(**kw)
