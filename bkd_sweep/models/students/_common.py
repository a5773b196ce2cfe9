"""Pieces shared by the student families: input encoding, [T*B]-flattened conv/BN, the head."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer
from torch import nn

from bkd_sweep.models.base import SpikingStudent


def to_time_major(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """``[B,C,H,W]`` -> ``[T,B,C,H,W]`` (direct encoding, the image repeated T times), or event
    frames ``[B,T',C,H,W]`` -> ``[T,B,C,H,W]`` summing each group of T'/T consecutive frames."""
    if x.dim() == 4:
        return x.unsqueeze(0).expand(timesteps, *x.shape).contiguous()
    if x.dim() == 5:
        b, frames = x.shape[:2]
        if frames % timesteps:
            raise ValueError(f"event input has {frames} frames, not a multiple of "
                             f"timesteps={timesteps}")
        x = x.reshape(b, timesteps, frames // timesteps, *x.shape[2:]).sum(2)
        return x.transpose(0, 1).contiguous()
    raise ValueError(f"expected [B,C,H,W] or [B,T',C,H,W] input, got shape {tuple(x.shape)}")


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1,
            padding: int | None = None, *, bias: bool = False) -> layer.SeqToANNContainer:
    """Conv2d + BatchNorm2d applied to ``[T,B,...]`` as one ``[T*B,...]`` batch."""
    pad = kernel // 2 if padding is None else padding
    return layer.SeqToANNContainer(
        nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=bias), nn.BatchNorm2d(c_out))


def seq(*modules: nn.Module) -> layer.SeqToANNContainer:
    """Stateless modules applied to ``[T,B,...]`` flattened to ``[T*B,...]``."""
    return layer.SeqToANNContainer(*modules)


def init_weights(model: nn.Module) -> None:
    """Kaiming for convs, unit/zero BN, small normal for linears (the usual ResNet recipe)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PooledLinearHead(nn.Module):
    """``[T,B,C,H,W]`` -> spatial mean -> (optional neuron) -> Linear per step -> mean over T."""

    def __init__(self, channels: int, num_classes: int, neuron: nn.Module | None = None):
        super().__init__()
        self.neuron = neuron
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(-2, -1))  # [T,B,C]
        if self.neuron is not None:
            pooled = self.neuron(pooled)
        return self.fc(pooled).mean(0)


class StudentBase(SpikingStudent):
    """Holds the common attributes and turns any accepted input into ``[T,B,C,H,W]``."""

    def __init__(self, *, timesteps: int, num_classes: int, feature_channels: int,
                 feature_point: str):
        super().__init__()
        self.timesteps = timesteps
        self.num_classes = num_classes
        self.feature_channels = feature_channels
        self.feature_point = feature_point

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return to_time_major(x, self.timesteps)
