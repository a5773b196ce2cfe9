"""Spikformer (Zhou et al., ICLR 2023) and CML+Spikingformer (spike-driven residuals + CML).

Both work on token maps ``[T,B,C,h,w]`` (1x1 convs act as per-token linears):
- Spikformer: post-activation, conv-BN-SN everywhere, so blocks add spike tensors.
- Spikingformer: pre-activation: SN -> conv -> BN, the residual stream stays real-valued and
  every conv sees spikes (spike-driven residual); CML puts the max-pool before the neuron.
Spiking self-attention: Q, K, V = SN(BN(conv1x1(x))), A = SN_0.5(Q K^T V * 0.125) (the
attention neuron fires at threshold 0.5, as in the paper). The patch-splitting stem picks its
number of 2x down-samplings from the image size (32 px -> 8x8 tokens like patch 4, 224 -> 14x14
like patch 16, 128 -> 8x8, 8 px -> 8x8 with none). Feature point: the last block's output map.
"""

from __future__ import annotations

import torch
from torch import nn

from bkd_sweep.models.neurons import NeuronFactory
from bkd_sweep.models.students._common import (StudentBase, conv_bn, init_weights, seq)
from bkd_sweep.models.students._registry import register_student

ATTENTION_SCALE = 0.125
ATTENTION_THRESHOLD = 0.5


def num_downsamples(image_size: int, min_tokens_side: int = 8, max_downsamples: int = 4) -> int:
    """How many stride-2 pools the stem applies: as many as keep >= 8 tokens a side (max 4)."""
    n, size = 0, image_size
    while n < max_downsamples and -(-size // 2) >= min_tokens_side:
        size = -(-size // 2)
        n += 1
    return n


class SpikingSelfAttention(nn.Module):
    """Spiking self-attention on ``[T,B,C,h,w]``; ``pre_activation`` gives the Spikingformer form
    (SN on the real-valued input, no SN after the output projection)."""

    def __init__(self, dim: int, heads: int, neuron: NeuronFactory, *, pre_activation: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.in_neuron = neuron() if pre_activation else nn.Identity()
        self.qkv = conv_bn(dim, 3 * dim, 1, 1, 0)
        self.qkv_neuron = neuron()
        self.attn_neuron = neuron(v_threshold=ATTENTION_THRESHOLD)
        self.proj = conv_bn(dim, dim, 1, 1, 0)
        self.out_neuron = nn.Identity() if pre_activation else neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, c, h, w = x.shape
        qkv = self.qkv_neuron(self.qkv(self.in_neuron(x)))
        # [T,B,3C,h,w] -> 3 x [T,B,heads,N,dh]
        q, k, v = qkv.reshape(t, b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2) \
                     .unbind(2)
        n, dh = h * w, c // self.heads
        # Same product either way; pick the cheaper association (no softmax in SSA).
        if n > dh:
            out = q @ (k.transpose(-2, -1) @ v)
        else:
            out = (q @ k.transpose(-2, -1)) @ v
        out = (out * ATTENTION_SCALE).transpose(-1, -2).reshape(t, b, c, h, w)
        return self.out_neuron(self.proj(self.attn_neuron(out)))


class SpikingMLP(nn.Module):
    """Two 1x1 conv-BN layers (ratio ``mlp_ratio``) with spiking neurons, pre- or post-activated."""

    def __init__(self, dim: int, hidden: int, neuron: NeuronFactory, *, pre_activation: bool):
        super().__init__()
        if pre_activation:
            self.net = nn.Sequential(neuron(), conv_bn(dim, hidden, 1, 1, 0),
                                     neuron(), conv_bn(hidden, dim, 1, 1, 0))
        else:
            self.net = nn.Sequential(conv_bn(dim, hidden, 1, 1, 0), neuron(),
                                     conv_bn(hidden, dim, 1, 1, 0), neuron())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SpikingTransformerBlock(nn.Module):
    """x = x + SSA(x); x = x + MLP(x)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, neuron: NeuronFactory, *,
                 pre_activation: bool):
        super().__init__()
        self.attn = SpikingSelfAttention(dim, heads, neuron, pre_activation=pre_activation)
        self.mlp = SpikingMLP(dim, int(dim * mlp_ratio), neuron, pre_activation=pre_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class SpikingPatchSplitting(nn.Module):
    """Four conv3x3 stages (D/8, D/4, D/2, D) with ``downsamples`` 3x3/2 max-pools in the last
    stages, then a relative position embedding conv added residually."""

    def __init__(self, in_channels: int, dim: int, downsamples: int, neuron: NeuronFactory, *,
                 pre_activation: bool):
        super().__init__()
        widths = [max(dim // 8, 1), max(dim // 4, 1), max(dim // 2, 1), dim]
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, width in enumerate(widths):
            pool = i >= len(widths) - downsamples
            if pre_activation:  # CML: [SN] conv-BN [MP]; the next stage's SN follows the pool
                if i > 0:
                    layers.append(neuron())
                layers.append(conv_bn(c_in, width))
                if pool:
                    layers.append(seq(nn.MaxPool2d(3, 2, 1)))
            else:  # Spikformer: conv-BN-SN [MP]
                layers += [conv_bn(c_in, width), neuron()]
                if pool:
                    layers.append(seq(nn.MaxPool2d(3, 2, 1)))
            c_in = width
        self.stages = nn.Sequential(*layers)
        if pre_activation:
            self.rpe = nn.Sequential(neuron(), conv_bn(dim, dim))
        else:
            self.rpe = nn.Sequential(conv_bn(dim, dim), neuron())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)
        return x + self.rpe(x)


class SpikingTransformer(StudentBase):
    """Spikformer (``pre_activation=False``) or CML+Spikingformer (``pre_activation=True``)."""

    def __init__(self, *, depth: int, dim: int, num_classes: int, in_channels: int,
                 image_size: int, timesteps: int, neuron: NeuronFactory, pre_activation: bool,
                 heads: int | None = None, mlp_ratio: float = 4.0):
        super().__init__(timesteps=timesteps, num_classes=num_classes, feature_channels=dim,
                         feature_point=f"blocks.{depth - 1}")
        heads = heads or max(dim // 64, 1)
        self.depth, self.dim, self.heads = depth, dim, heads
        self.patch_embed = SpikingPatchSplitting(in_channels, dim, num_downsamples(image_size),
                                                 neuron, pre_activation=pre_activation)
        self.blocks = nn.Sequential(*[
            SpikingTransformerBlock(dim, heads, mlp_ratio, neuron, pre_activation=pre_activation)
            for _ in range(depth)])
        # Spikingformer feeds spikes to the classifier; Spikformer the mean spike count.
        self.head_neuron = neuron() if pre_activation else nn.Identity()
        self.head = nn.Linear(dim, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.patch_embed(self.encode(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        tokens = features.mean(dim=(-2, -1))  # [T,B,C]
        return self.head(self.head_neuron(tokens)).mean(0)


PAPER_SIZES = ((8, 384), (8, 512), (8, 768), (4, 384), (2, 384), (4, 256), (2, 256))


def _register(family: str, depth: int, dim: int, *, pre_activation: bool,
              heads: int | None = None, suffix: str = "") -> None:
    name = f"{family}_{depth}_{dim}{suffix}"

    @register_student(name)
    def build(**kw) -> SpikingTransformer:
        return SpikingTransformer(depth=depth, dim=dim, pre_activation=pre_activation,
                                  heads=heads, **kw)

    build.__doc__ = f"{family} depth {depth}, dim {dim}{' (DVS)' if suffix else ''}."


for _depth, _dim in PAPER_SIZES:
    _register("spikformer", _depth, _dim, pre_activation=False)
    _register("spikingformer", _depth, _dim, pre_activation=True)
# DVS nets (CIFAR10-DVS, 128x128 or 64x64 event frames -> 8x8 tokens): 16 heads of 16 channels.
_register("spikformer", 2, 256, pre_activation=False, heads=16, suffix="_dvs")
_register("spikingformer", 2, 256, pre_activation=True, heads=16, suffix="_dvs")
