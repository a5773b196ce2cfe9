"""Spikformer (Zhou et al., ICLR 2023) and CML+Spikingformer (spike-driven residuals + CML).

Both work on token maps ``[T,B,C,h,w]`` (1x1 convs act as per-token linears):
- Spikformer: post-activation, conv-BN-SN everywhere, so blocks add spike tensors; the stem ends
  in a relative position embedding added residually; the head sees the mean spike count.
- Spikingformer: pre-activation: SN -> conv -> BN, the residual stream stays real-valued and
  every conv sees spikes (spike-driven residual); CML puts the max-pool before the neuron. Its
  stem ends in a plain fifth SN-conv-BN stage (no residual) and its head is a linear layer on the
  token-averaged real-valued stream, as in the reference code.
Spiking self-attention: Q, K, V = SN(BN(conv1x1(x))), A = SN_0.5(Q K^T V * 0.125) (the
attention neuron fires at threshold 0.5, as in the paper). The patch-splitting stem picks its
number of 2x down-samplings from the image size (32 px -> 8x8 tokens like patch 4, 224 -> 14x14
like patch 16, 128 -> 8x8, 8 px -> 8x8 with none). Feature point: the last block's output map.

Reference configurations of the registered sizes (MLP ratio 4 for all; "our params" at the
reference input, e.g. ``create_student("spikingformer_4_384", num_classes=10)``):

====== ===== ================ ========= ========== ==============================================
size   heads reference input paper     our params heads from (repository: file)
====== ===== ================ ========= ========== ==============================================
4-384  12    CIFAR-10 32/p4   9.32 M    9,310,906  ZK-Zhou/spikformer: cifar10/cifar10.yml;
                                                   zhouchenlin2096/Spikingformer(-CML):
                                                   cifar10/cifar10.yml; spikingjelly 2.0
                                                   model/spikformer.py: spikformer_cifar10
2-384  12    CIFAR-10 32/p4   5.76 M    5,758,138  Intelligent-Computing-Research-Group/BKDSNN:
                                                   Spikingformer-CML/cifar10/config/mixed/
                                                   vit-st-mixed.yml (brd, wsld alike)
4-256  16    CIFAR-10 32/p4   4.15 M    4,145,962  BKDSNN: .../cifar10/config/mixed/
                                                   vit-ti-300-mixed.yml, baseline/vit-ti.yml
                                                   (its 12-head vit-ti files cannot build:
                                                   256 % 12 != 0)
2-256  16    CIFAR10-DVS 128  2.57 M    2,563,594  ZK-Zhou/spikformer: cifar10dvs/model.py;
                                                   Spikingformer(-CML): cifar10-dvs/model.py
8-384  8     ImageNet 224/p16 16.81 M   16,797,592 BKDSNN: .../imagenet/config/mixed/
                                                   vit-s-mixed.yml
8-512  8     ImageNet 224/p16 29.68 M   29,664,808 ZK-Zhou/spikformer: imagenet/model.py;
                                                   BKDSNN: .../imagenet/config/mixed/vit-m-mixed.yml
8-768  8     ImageNet 224/p16 66.34 M   66,301,768 Spikingformer(-CML): imagenet/imagenet.yml
                                                   (logged num_heads=8); BKDSNN: vit-b-mixed.yml
====== ===== ================ ========= ========== ==============================================

The static ``*_2_256`` nets take the DVS net's 16 heads (no static 2-256 reference exists). The
CIFAR-100 reference files use 8 heads at 384 (``cifar100/cifar100.yml`` of the same repos):
pass ``heads=8`` to ``create_student`` to build that variant. Our counts are the reference code's
counts (its logs: 9,326,266 / 16,828,312 / 29,705,768 / 66,363,208 / 2,568,714) less
parameters that cannot change its output: per block two LayerNorms it builds but never calls
(4*dim), and the biases of convs/linears that feed a BatchNorm (BN removes any per-channel
constant, so their gradient is zero): ours have none.
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
    stages, then a fifth D->D conv3x3: Spikformer adds it residually (its relative position
    embedding, ``x + SN(BN(conv(x)))``); Spikingformer's tokenizer applies it plainly
    (``BN(conv(SN(x)))``, the reference ``proj4``), so its parameters are the same."""

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
        self.rpe_is_residual = not pre_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)
        return x + self.rpe(x) if self.rpe_is_residual else self.rpe(x)


class SpikingTransformer(StudentBase):
    """Spikformer (``pre_activation=False``) or CML+Spikingformer (``pre_activation=True``)."""

    def __init__(self, *, depth: int, dim: int, heads: int, num_classes: int, in_channels: int,
                 image_size: int, timesteps: int, neuron: NeuronFactory, pre_activation: bool,
                 mlp_ratio: float = 4.0):
        super().__init__(timesteps=timesteps, num_classes=num_classes, feature_channels=dim,
                         feature_point=f"blocks.{depth - 1}")
        self.depth, self.dim, self.heads, self.mlp_ratio = depth, dim, heads, mlp_ratio
        self.patch_embed = SpikingPatchSplitting(in_channels, dim, num_downsamples(image_size),
                                                 neuron, pre_activation=pre_activation)
        self.blocks = nn.Sequential(*[
            SpikingTransformerBlock(dim, heads, mlp_ratio, neuron, pre_activation=pre_activation)
            for _ in range(depth)])
        # Both classify the token-averaged stream without a neuron, as the reference code does:
        # mean spike counts for Spikformer, the real-valued residual stream for Spikingformer.
        self.head = nn.Linear(dim, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.patch_embed(self.encode(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        tokens = features.mean(dim=(-2, -1))  # [T,B,C]
        return self.head(tokens).mean(0)


REFERENCE_HEADS = {(8, 384): 8, (8, 512): 8, (8, 768): 8, (4, 384): 12, (2, 384): 12,
                   (4, 256): 16, (2, 256): 16}
"""(depth, dim) -> attention heads of the reference configuration (sources: module docstring)."""
REFERENCE_MLP_RATIO = 4.0


def _register(family: str, depth: int, dim: int, *, pre_activation: bool,
              suffix: str = "") -> None:
    name = f"{family}_{depth}_{dim}{suffix}"

    @register_student(name)
    def build(*, heads: int = REFERENCE_HEADS[depth, dim],
              mlp_ratio: float = REFERENCE_MLP_RATIO, **kw) -> SpikingTransformer:
        return SpikingTransformer(depth=depth, dim=dim, heads=heads, mlp_ratio=mlp_ratio,
                                  pre_activation=pre_activation, **kw)

    build.__doc__ = (f"{family} depth {depth}, dim {dim}{' (DVS)' if suffix else ''}: "
                     f"{REFERENCE_HEADS[depth, dim]} heads unless ``heads`` says otherwise.")


for _depth, _dim in REFERENCE_HEADS:
    _register("spikformer", _depth, _dim, pre_activation=False)
    _register("spikingformer", _depth, _dim, pre_activation=True)
# DVS nets (CIFAR10-DVS, 128x128 or 64x64 event frames -> 8x8 tokens), the same 2-256 net.
_register("spikformer", 2, 256, pre_activation=False, suffix="_dvs")
_register("spikingformer", 2, 256, pre_activation=True, suffix="_dvs")
