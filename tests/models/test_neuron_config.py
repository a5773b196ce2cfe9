"""NeuronConfig -> spikingjelly neurons: every setting lands in the modules and acts as stated."""

from __future__ import annotations

import math

import pytest
import torch
from spikingjelly.activation_based import neuron, surrogate

from bkd_sweep.models import create_student, neuron_factory, reset
from bkd_sweep.config import NeuronConfig


@pytest.mark.parametrize("cfg, cls", [
    (NeuronConfig(type="lif", tau=3.0, v_threshold=0.7, v_reset=None, surrogate="atan",
                  surrogate_alpha=3.0, detach_reset=False), neuron.LIFNode),
    (NeuronConfig(type="if", v_threshold=1.5, surrogate="sigmoid"), neuron.IFNode),
    (NeuronConfig(type="plif", tau=4.0, v_reset=0.0, detach_reset=True), neuron.ParametricLIFNode),
])
def test_settings_land_in_every_neuron(cfg: NeuronConfig, cls: type) -> None:
    model = create_student("spiking_cnn_small", num_classes=3, in_channels=1, image_size=8,
                           timesteps=2, neuron=cfg)
    nodes = [m for m in model.modules() if isinstance(m, neuron.BaseNode)]
    assert len(nodes) == 2
    for node in nodes:
        assert type(node) is cls
        assert node.step_mode == "m"
        assert node.v_threshold == cfg.v_threshold
        assert node.v_reset == cfg.v_reset
        assert node.detach_reset == cfg.detach_reset
        expected = surrogate.ATan if cfg.surrogate == "atan" else surrogate.Sigmoid
        assert type(node.surrogate_function) is expected
        default = 2.0 if cfg.surrogate == "atan" else 4.0
        assert node.surrogate_function.alpha == (cfg.surrogate_alpha or default)
        if cls is neuron.LIFNode:
            assert node.tau == cfg.tau
        if cls is neuron.ParametricLIFNode:  # 1/tau = sigmoid(w)
            assert math.isclose(1.0 / torch.sigmoid(node.w).item(), cfg.tau, rel_tol=1e-5)


def _spikes(cfg: NeuronConfig, value: float, steps: int) -> list[float]:
    node = neuron_factory(cfg)()
    out = node(torch.full((steps, 1), value))
    reset(node)
    return out.flatten().tolist()


def test_dynamics_match_hand_computation() -> None:
    # LIF tau=2, hard reset: H = V + (X - V)/2 -> 0.75, 1.125 (spike, V=0), 0.75, 1.125 (spike)
    assert _spikes(NeuronConfig(type="lif", tau=2.0), 1.5, 4) == [0, 1, 0, 1]
    # IF, input 0.7: soft reset keeps the excess (0.7, 1.4->0.4, 1.1->0.1, 0.8, 1.5)
    assert _spikes(NeuronConfig(type="if", v_reset=None), 0.7, 5) == [0, 1, 1, 0, 1]
    assert _spikes(NeuronConfig(type="if", v_reset=0.0), 0.7, 5) == [0, 1, 0, 1, 0]
    # the threshold counts: at 2.0 the IF neuron needs three steps of 0.7
    assert _spikes(NeuronConfig(type="if", v_threshold=2.0), 0.7, 3) == [0, 0, 1]


@pytest.mark.parametrize("name, alpha, slope_at_threshold", [
    ("sigmoid", None, 1.0),  # alpha/4 with alpha 4
    ("sigmoid", 8.0, 2.0),
    ("atan", None, 1.0),  # alpha/2 with alpha 2
    ("atan", 6.0, 3.0),
])
def test_surrogate_gradient_uses_alpha(name: str, alpha: float | None,
                                       slope_at_threshold: float) -> None:
    cfg = NeuronConfig(type="if", surrogate=name, surrogate_alpha=alpha)
    x = torch.ones(1, 1, requires_grad=True)  # one step, exactly at threshold 1.0
    neuron_factory(cfg)()(x).sum().backward()
    assert math.isclose(x.grad.item(), slope_at_threshold, rel_tol=1e-5)


def test_overrides_and_reset() -> None:
    make = neuron_factory(NeuronConfig(v_threshold=1.0))
    assert make(v_threshold=0.5).v_threshold == 0.5 and make().v_threshold == 1.0
    with pytest.raises(TypeError, match="unknown neuron override"):
        make(threshold=0.5)
    node = make()
    node(torch.ones(3, 2))
    assert isinstance(node.v, torch.Tensor)
    reset(node)
    assert node.v == 0.0 and not isinstance(node.v, torch.Tensor)
