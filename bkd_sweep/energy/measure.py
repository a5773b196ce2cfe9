"""The one measuring entry point: ``measure(model, inputs, ...)`` -> EnergyReport."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

from bkd_sweep.config import TrialConfig

from bkd_sweep.energy.counter import LayerTally, OpCounter
from bkd_sweep.energy.rules import CONVENTIONS, SpikeCounts
from bkd_sweep.records import EnergyReport, LayerEnergy


def measure(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    timesteps: int = 1,
    e_mac_pj: float = 4.6,
    e_ac_pj: float = 0.9,
    first_layer_once: bool = False,
    convention: str = "exact",
    ann: bool = False,
) -> EnergyReport:
    """Run one no-grad eval forward on ``inputs`` and return per-sample ops and energy.

    ``timesteps``: the T the model runs internally (1 for an ANN). ``convention``: ``exact``
    (only binary inputs are spikes) or ``paper`` (non-negative integer inputs are spike
    counts, as published SNN energy tables count SEW additions and event frames). ``ann``: the
    model is an ANN, whose layers multiply whatever their input holds, so every op is a MAC
    (summed event frames or a binary image would otherwise count as SOPs). The model is
    reset (``functional.reset_net``) before and after, and every module's train/eval flag is
    restored.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"energy convention {convention!r} unknown; allowed: "
                         + ", ".join(CONVENTIONS))
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if e_mac_pj < 0 or e_ac_pj < 0:
        raise ValueError("energy per operation must be >= 0")
    if inputs.dim() < 1 or inputs.shape[0] < 1:
        raise ValueError(f"inputs need a batch dimension, got shape {tuple(inputs.shape)}")
    batch = inputs.shape[0]
    spike_counts = _no_spikes if ann else CONVENTIONS[convention]
    counter = _count(model, inputs, batch, timesteps, spike_counts)
    layers = _layers(counter, batch, e_mac_pj, e_ac_pj, first_layer_once)
    spikes = [(s, n) for s, n in counter.spikes.values() if n > 0]
    elems_total = sum(n for _, n in counter.spikes.values())
    total_sops = sum(layer.sops for layer in layers)
    total_macs = sum(layer.macs for layer in layers)
    return EnergyReport(
        energy_mj=(e_mac_pj * total_macs + e_ac_pj * total_sops) * 1e-9,
        sops=total_sops,
        macs=total_macs,
        mean_firing_rate=sum(s for s, _ in spikes) / elems_total if elems_total else None,
        timesteps=timesteps,
        e_mac_pj=e_mac_pj,
        e_ac_pj=e_ac_pj,
        first_layer_once=first_layer_once,
        convention=convention,
        layers=layers,
        firing_rates={k: s / n for k, (s, n) in counter.spikes.items() if n > 0},
    )


def _no_spikes(x: torch.Tensor) -> None:
    """An ANN's inputs are never spikes: every op counts dense MACs."""
    return None


def is_spiking(model: nn.Module) -> bool:
    """Whether ``model`` has a spikingjelly neuron (an SNN student or teacher, not an ANN)."""
    return any(isinstance(m, neuron.BaseNode) for m in model.modules())


def _count(model: nn.Module, inputs: torch.Tensor, batch: int, timesteps: int,
           spikes: SpikeCounts) -> OpCounter:
    """One counted eval forward; the model's state and train/eval flags are restored."""
    tensors = list(model.parameters()) + list(model.buffers())
    if tensors:
        inputs = inputs.to(tensors[0].device)
    modes = {m: m.training for m in model.modules()}
    counter = OpCounter(model, batch, timesteps, spikes)
    try:
        model.eval()
        functional.reset_net(model)
        with torch.no_grad(), counter:
            model(inputs)
    finally:
        counter.remove()
        functional.reset_net(model)
        for m, training in modes.items():
            m.training = training
    return counter


def _layers(counter: OpCounter, batch: int, e_mac_pj: float, e_ac_pj: float,
            first_layer_once: bool) -> list[LayerEnergy]:
    layers: list[LayerEnergy] = []
    once_pending = first_layer_once
    for tally in counter.accs.values():
        macs = tally.real_dense / batch
        if once_pending and tally.is_module:
            if tally.real_calls and tally.real_apps:
                macs /= tally.real_apps
            # the first layer only: a later layer's real input (a SEW sum of an event net's
            # spikes) changes every time step, so it is never computed once
            once_pending = False
        layers.append(_layer(tally, batch, macs, e_mac_pj, e_ac_pj))
    return layers


def _layer(tally: LayerTally, batch: int, macs: float, e_mac_pj: float,
           e_ac_pj: float) -> LayerEnergy:
    sops = tally.sops / batch
    return LayerEnergy(
        name=tally.name,
        kind=tally.kind,
        input_is_spike=tally.spike_calls > 0 and tally.real_calls == 0,
        sops=sops,
        macs=macs,
        dense_macs=tally.dense / batch / tally.apps if tally.apps else 0.0,
        firing_rate=tally.nnz / tally.numel if tally.spike_calls and tally.numel else None,
        energy_pj=e_mac_pj * macs + e_ac_pj * sops,
    )


def measure_with(config: TrialConfig, model: nn.Module, inputs: torch.Tensor,
                 event_input: bool, *, timesteps: int) -> EnergyReport:
    """``measure`` with a trial's energy settings (constants, convention, first-layer rule);
    a model without spiking neurons (an ANN teacher) counts MACs only: E = e_mac x MACs."""
    energy = config.energy
    return measure(model, inputs, timesteps=timesteps, e_mac_pj=energy.e_mac_pj,
                   e_ac_pj=energy.e_ac_pj, convention=energy.convention,
                   first_layer_once=energy.first_layer_counted_once(event_input),
                   ann=not is_spiking(model))
