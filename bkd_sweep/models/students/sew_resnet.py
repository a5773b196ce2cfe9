"""SEW-ResNet (Fang et al., NeurIPS 2021) with ADD connections, and the SEW CIFAR10-DVS net.

A SEW block adds its spiking output to the (spiking) identity: out = SN(..conv-BN..) + id, so
the residual stream carries spike counts and gradients reach early layers through identities.
Feature point: ``layer4`` (its output map before pooling), as BKDSNN distils it.

Reference sizes: SEW-ResNet-18/34/50 with the ImageNet stem have torchvision's ResNet
parameters exactly (11,689,512 / 21,797,672 / 25,557,032 at 1000 classes; paper 11.69 /
21.79 / 25.56 M), as fangwei123456/Spike-Element-Wise-ResNet ``imagenet/sew_resnet.py`` does.
The CIFAR10-DVS net follows that repository's ``cifar10dvs/smodels.py`` (``SEWResNet``, copied
into BKDSNN's ``Spike-Element-Wise-ResNet/cifar10dvs/smodels.py``): 1,192,202 parameters at 10
classes, plus one per neuron (16) with PLIF neurons as there.
"""

from __future__ import annotations

import torch
from torch import nn

from bkd_sweep.models.neurons import NeuronFactory
from bkd_sweep.models.students._common import (PooledLinearHead, StudentBase, conv_bn,
                                               init_weights, seq)
from bkd_sweep.models.students._registry import register_student


class SEWBasicBlock(nn.Module):
    """conv3x3-BN-SN -> conv3x3-BN-SN, ADD the identity (conv1x1-BN-SN when the shape changes)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int, neuron: NeuronFactory):
        super().__init__()
        c_out = width * self.expansion
        self.body = nn.Sequential(conv_bn(c_in, width, 3, stride), neuron(),
                                  conv_bn(width, c_out, 3, 1), neuron())
        self.downsample = (nn.Sequential(conv_bn(c_in, c_out, 1, stride, 0), neuron())
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.body(x) + identity


class SEWBottleneck(SEWBasicBlock):
    """conv1x1-BN-SN -> conv3x3(stride)-BN-SN -> conv1x1(x4)-BN-SN, ADD the identity."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int, neuron: NeuronFactory):
        nn.Module.__init__(self)
        c_out = width * self.expansion
        self.body = nn.Sequential(conv_bn(c_in, width, 1, 1, 0), neuron(),
                                  conv_bn(width, width, 3, stride), neuron(),
                                  conv_bn(width, c_out, 1, 1, 0), neuron())
        self.downsample = (nn.Sequential(conv_bn(c_in, c_out, 1, stride, 0), neuron())
                           if stride != 1 or c_in != c_out else None)


class SEWResNet(StudentBase):
    """SEW-ResNet with an ImageNet stem (7x7/2 + max-pool) or a CIFAR stem (3x3/1, no pool)."""

    channels_last = True

    def __init__(self, block: type[SEWBasicBlock], layers: tuple[int, int, int, int], *,
                 num_classes: int, in_channels: int, image_size: int, timesteps: int,
                 neuron: NeuronFactory, stem: str = "imagenet",
                 widths: tuple[int, int, int, int] = (64, 128, 256, 512)):
        super().__init__(timesteps=timesteps, num_classes=num_classes,
                         feature_channels=widths[-1] * block.expansion, feature_point="layer4")
        if stem == "imagenet":
            self.stem = nn.Sequential(conv_bn(in_channels, widths[0], 7, 2, 3), neuron(),
                                      seq(nn.MaxPool2d(3, 2, 1)))
        elif stem == "cifar":
            self.stem = nn.Sequential(conv_bn(in_channels, widths[0], 3, 1, 1), neuron())
        else:
            raise ValueError(f"unknown stem {stem!r}; valid: imagenet, cifar")
        c_in = widths[0]
        stages = []
        for i, (width, depth) in enumerate(zip(widths, layers)):
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(c_in, width, stride, neuron))
                c_in = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.head = PooledLinearHead(c_in, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.encode(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


_DEPTHS = {18: (SEWBasicBlock, (2, 2, 2, 2)), 34: (SEWBasicBlock, (3, 4, 6, 3)),
           50: (SEWBottleneck, (3, 4, 6, 3))}


def _register_sew(depth: int, stem: str) -> None:
    block, layers = _DEPTHS[depth]
    name = f"sew_resnet{depth}" + ("_cifar" if stem == "cifar" else "")

    @register_student(name)
    def build(**kw) -> SEWResNet:
        return SEWResNet(block, layers, stem=stem, **kw)

    build.__doc__ = f"SEW-ResNet-{depth} (ADD), {stem} stem."


for _depth in _DEPTHS:
    for _stem in ("imagenet", "cifar"):
        _register_sew(_depth, _stem)


class SEWBlockDVS(nn.Module):
    """The SEW DVS block: conv3x3-BN-SN -> conv3x3-BN-SN (same channels), ADD the input."""

    def __init__(self, channels: int, neuron: NeuronFactory):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), neuron(),
                                  conv_bn(channels, channels), neuron())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class SEWResNetDVS(StudentBase):
    """The SEW paper's CIFAR10-DVS net: c64k1-BN-SN, {SEW block(64), MP2}x4, c128k1-BN-SN,
    {SEW block(128), MP2}x3, FC. The channel changes are 1x1 convs, as in the reference code
    (``up_kernel_size: 1``). A 2x2 max-pool is skipped once the map is 1 px, so 64x64 and
    128x128 inputs both work. Feature point: ``features`` (the trunk's output map)."""

    channels_last = True

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int, timesteps: int,
                 neuron: NeuronFactory, stages: tuple[tuple[int, int], ...] = ((64, 4), (128, 3))):
        super().__init__(timesteps=timesteps, num_classes=num_classes,
                         feature_channels=stages[-1][0], feature_point="features")
        trunk: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for channels, blocks in stages:
            trunk += [conv_bn(c_in, channels, 1, 1, 0), neuron()]
            for _ in range(blocks):
                trunk.append(SEWBlockDVS(channels, neuron))
                if size >= 2:
                    trunk.append(seq(nn.MaxPool2d(2, 2)))
                    size //= 2
            c_in = channels
        self.features = nn.Sequential(*trunk)
        self.head = PooledLinearHead(c_in, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.encode(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


@register_student("sew_resnet_dvs")
def sew_resnet_dvs(**kw) -> SEWResNetDVS:
    return SEWResNetDVS(**kw)
