"""Spiking neurons from a NeuronConfig (spikingjelly 2.0, multi-step), injected into builders.

Builders never name a neuron class: they receive a factory, so one config switches every
neuron of a network (LIF / IF / PLIF, threshold, reset, surrogate) and spikingjelly's moving
API stays behind this module.
"""

from __future__ import annotations

from typing import Any, Callable

from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn

from bkd_sweep.config import NeuronConfig

NeuronFactory = Callable[..., nn.Module]
"""Called with no arguments for the configured neuron; keyword overrides (``v_threshold=0.5``
for attention) change single settings."""

DEFAULT_SURROGATE_ALPHA = {"atan": 2.0, "sigmoid": 4.0}
_SURROGATES = {"atan": surrogate.ATan, "sigmoid": surrogate.Sigmoid}


def make_surrogate(name: str, alpha: float | None = None) -> nn.Module:
    """spikingjelly surrogate by name; ``alpha=None`` takes the default (atan 2, sigmoid 4)."""
    if name not in _SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; valid: {', '.join(sorted(_SURROGATES))}")
    return _SURROGATES[name](alpha=float(alpha if alpha is not None
                                         else DEFAULT_SURROGATE_ALPHA[name]))


def neuron_factory(cfg: NeuronConfig | None = None) -> NeuronFactory:
    """A factory of multi-step (step_mode='m') neurons configured by ``cfg`` (default LIF)."""
    cfg = cfg if cfg is not None else NeuronConfig()

    def make(**overrides: Any) -> nn.Module:
        settings = {"v_threshold": cfg.v_threshold, "v_reset": cfg.v_reset,
                    "detach_reset": cfg.detach_reset, "tau": cfg.tau}
        unknown = set(overrides) - set(settings)
        if unknown:
            raise TypeError(f"unknown neuron override(s) {sorted(unknown)}; "
                            f"valid: {', '.join(sorted(settings))}")
        settings.update(overrides)
        common = dict(
            v_threshold=float(settings["v_threshold"]),
            v_reset=None if settings["v_reset"] is None else float(settings["v_reset"]),
            surrogate_function=make_surrogate(cfg.surrogate, cfg.surrogate_alpha),
            detach_reset=bool(settings["detach_reset"]),
            step_mode="m",
        )
        if cfg.type == "lif":
            return neuron.LIFNode(tau=float(settings["tau"]), **common)
        if cfg.type == "plif":
            return neuron.ParametricLIFNode(init_tau=float(settings["tau"]), **common)
        if cfg.type == "if":
            return neuron.IFNode(**common)
        raise ValueError(f"unknown neuron type {cfg.type!r}; valid: lif, if, plif")

    make.config = cfg  # type: ignore[attr-defined]
    return make


def reset(model: nn.Module) -> None:
    """Clear every neuron's membrane state (after each forward; before deepcopy or pickle)."""
    functional.reset_net(model)
