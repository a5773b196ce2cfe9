"""The student registry: ``@register_student("name")`` builders, ``create_student(name, ...)``."""

from __future__ import annotations

from typing import Any, Callable

from bkd_sweep.models.base import SpikingStudent
from bkd_sweep.models.neurons import neuron_factory
from bkd_sweep.registry import Registry
from bkd_sweep.config import NeuronConfig

STUDENTS: Registry[SpikingStudent] = Registry("student")

StudentBuilder = Callable[..., SpikingStudent]
"""builder(*, num_classes, in_channels, image_size, timesteps, neuron: NeuronFactory)."""


def register_student(name: str) -> Callable[[StudentBuilder], StudentBuilder]:
    """Decorator: add a student builder under ``name`` (duplicates raise)."""
    return STUDENTS.register(name)


def create_student(arch: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32,
                   timesteps: int = 4, neuron: NeuronConfig | None = None,
                   **arch_kwargs: Any) -> SpikingStudent:
    """Build a registered spiking student; an unknown ``arch`` lists the valid names.
    ``arch_kwargs`` override the builder's defaults (``heads=8`` for a Spikformer); one the
    builder does not take raises TypeError."""
    builder = STUDENTS.get(arch)
    if timesteps < 1 or num_classes < 1 or in_channels < 1 or image_size < 1:
        raise ValueError(f"student {arch!r}: timesteps, num_classes, in_channels and image_size "
                         f"must be >= 1 (got {timesteps}, {num_classes}, {in_channels}, "
                         f"{image_size})")
    model = builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                    timesteps=timesteps, neuron=neuron_factory(neuron), **arch_kwargs)
    model.arch = arch
    return model


def list_students() -> list[str]:
    """Registered student names, sorted."""
    return STUDENTS.names()
