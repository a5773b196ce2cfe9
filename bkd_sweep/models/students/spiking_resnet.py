"""Spiking ResNet-19 for CIFAR (the TDBN / TET benchmark net): 3 stages 128/256/512, 3-3-2 blocks.

Unlike SEW, a spiking block adds before its last neuron: out = SN(BN(conv(...)) + shortcut(x)),
so every stage outputs binary spikes. Feature point: ``layer3``.
"""

from __future__ import annotations

import torch
from torch import nn

from bkd_sweep.models.neurons import NeuronFactory
from bkd_sweep.models.students._common import StudentBase, conv_bn, init_weights
from bkd_sweep.models.students._registry import register_student


class SpikingBasicBlock(nn.Module):
    """conv3x3-BN-SN -> conv3x3-BN, + shortcut (identity or conv1x1-BN), then SN."""

    def __init__(self, c_in: int, c_out: int, stride: int, neuron: NeuronFactory):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c_in, c_out, 3, stride), neuron(),
                                  conv_bn(c_out, c_out, 3, 1))
        self.shortcut = (conv_bn(c_in, c_out, 1, stride, 0)
                         if stride != 1 or c_in != c_out else nn.Identity())
        self.out_neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_neuron(self.body(x) + self.shortcut(x))


class SpikingResNet19(StudentBase):
    """conv3x3(128)-BN-SN, stages (128x3, 256x3 /2, 512x2 /2), head: pool -> FC256 -> SN -> FC."""

    channels_last = True

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int, timesteps: int,
                 neuron: NeuronFactory, stages: tuple[tuple[int, int], ...] = (
                     (128, 3), (256, 3), (512, 2)), hidden: int = 256):
        super().__init__(timesteps=timesteps, num_classes=num_classes,
                         feature_channels=stages[-1][0], feature_point=f"layer{len(stages)}")
        self.stem = nn.Sequential(conv_bn(in_channels, stages[0][0]), neuron())
        c_in = stages[0][0]
        for i, (width, depth) in enumerate(stages):
            blocks = []
            for j in range(depth):
                blocks.append(SpikingBasicBlock(c_in, width, 2 if (i > 0 and j == 0) else 1,
                                                neuron))
                c_in = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(stages)
        self.fc1 = nn.Linear(c_in, hidden)
        self.head_neuron = neuron()
        self.fc2 = nn.Linear(hidden, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.encode(x))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.head_neuron(self.fc1(features.mean(dim=(-2, -1))))  # [T,B,hidden]
        return self.fc2(hidden).mean(0)


@register_student("spiking_resnet19")
def spiking_resnet19(**kw) -> SpikingResNet19:
    return SpikingResNet19(**kw)
