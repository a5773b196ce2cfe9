"""The one interface every student and teacher implements, so losses, energy counting and
the training loop never special-case an architecture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


class SpikingStudent(nn.Module):
    """A multi-step spiking network (spikingjelly activation_based, step_mode='m').

    Input: static images ``[B, C, H, W]`` (direct encoding: the same image at each of the T
    steps) or event frames ``[B, T', C, H, W]`` where T' is a multiple of T (frames are summed
    into T bins). ``forward_features`` returns the pre-classifier feature map ``[T, B, C, H, W]``
    (before time-averaging); ``forward_head`` maps it to logits ``[B, num_classes]`` averaged
    over T. Callers must ``functional.reset_net(model)`` after every forward (see ``reset``).
    """

    timesteps: int
    num_classes: int
    feature_channels: int  # C of forward_features' output
    feature_point: str  # name of the module whose output is the pre-classifier feature
    # Trains faster with channels-last weights (convolutional students: 4-12% a step on CPU,
    # bench/loop_overhead.py; the transformers' patch splitting ran 3% slower); see
    # ``training_layout``.
    channels_last: bool = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@dataclass
class TeacherOutput:
    logits: torch.Tensor  # [B, num_classes]
    feature: torch.Tensor  # [B, C] (vector) or [B, C, h, w] (map)


class Teacher(nn.Module):
    """A frozen teacher (ANN, or an SNN at a larger T) returning logits and its feature.

    ``feature_kind`` says whether the feature is a vector (ViT pre-logits) or a map (ResNet
    layer4); ``feature_channels`` is its C. Inputs are resized to the teacher's input size
    inside ``forward``.
    """

    feature_kind: Literal["vector", "map"]
    feature_channels: int
    num_classes: int

    def forward(self, x: torch.Tensor) -> TeacherOutput:  # type: ignore[override]
        raise NotImplementedError


def training_layout(module: nn.Module, student: SpikingStudent | None = None) -> nn.Module:
    """``module`` (the student, or the student with the loss's align and restoration block:
    ``student`` names the student then) in the memory layout the student trains fastest in:
    channels-last weights for the convolutional ones, whose convolutions then keep
    activations channels-last. The loss's convolutions go with it (one layout in one step:
    the quickstart pair's mixed step took 82 ms with only the student channels-last, 68 ms
    with both, 72 ms with neither). Spikes can differ from the contiguous layout's where a
    membrane potential sits within rounding of the threshold, so a trial always uses this
    layout."""
    if (student if student is not None else module).channels_last:
        module.to(memory_format=torch.channels_last)
    return module
