"""One counter: forward hooks on Conv/Linear/neuron modules plus a dispatch mode that sees the
loose matrix products, each call counted by the rule table in ``rules``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from spikingjelly.activation_based import neuron
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bkd_sweep.energy.rules import Call, SpikeCounts, aten_rules, module_rule, weight_test


@dataclass
class LayerTally:
    name: str
    kind: str
    is_module: bool  # a Conv/Linear module (not a functional matmul pseudo-layer)
    dense: float = 0.0
    apps: int = 0
    sops: float = 0.0
    real_dense: float = 0.0
    real_apps: int = 0
    spike_calls: int = 0
    real_calls: int = 0
    nnz: int = 0
    numel: int = 0

    def add(self, c: Call) -> None:
        self.dense += c.dense
        self.apps += c.apps
        if c.sops is None:
            self.real_calls += 1
            self.real_dense += c.dense
            self.real_apps += c.apps
        else:
            self.spike_calls += 1
            self.sops += c.sops
            self.nnz += c.nnz
            self.numel += c.numel



class OpCounter(TorchDispatchMode):
    """Forward hooks on Conv/Linear/neuron modules plus a dispatch mode for loose matmuls."""

    def __init__(self, model: nn.Module, batch: int, timesteps: int,
                 spikes: SpikeCounts) -> None:
        super().__init__()
        self.b, self.t = batch, timesteps
        self.accs: dict[str, LayerTally] = {}  # insertion order = execution order
        self.spikes: dict[str, list[float]] = {}  # neuron name -> [sum, numel]
        self.scope: list[tuple[str, dict[str, int]]] = []  # enclosing modules, ops seen per call
        self.depth = 0  # > 0 inside a counted Conv/Linear: its aten ops are not recounted
        self.busy = False  # our own tensor ops in hooks are not counted
        self.spikes_of = spikes  # the convention: which inputs are spikes, and how many
        self.table = aten_rules(batch, timesteps, spikes, weight_test(model))
        self.handles: list[Any] = []
        for name, m in model.named_modules():
            self.handles.append(m.register_forward_pre_hook(self._push(name)))
            self.handles.append(m.register_forward_hook(self._pop(), always_call=True))
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
                self.handles.append(m.register_forward_pre_hook(self._enter()))
                self.handles.append(
                    m.register_forward_hook(self._layer(name), with_kwargs=True, always_call=True)
                )
            elif isinstance(m, neuron.BaseNode):
                self.handles.append(m.register_forward_hook(self._neuron(name)))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def _push(self, name: str) -> Callable:
        def hook(m: nn.Module, args: Any) -> None:
            self.scope.append((name, {}))

        return hook

    def _pop(self) -> Callable:
        def hook(m: nn.Module, args: Any, out: Any) -> None:
            if self.scope:
                self.scope.pop()

        return hook

    def _enter(self) -> Callable:
        def hook(m: nn.Module, args: Any) -> None:
            self.depth += 1

        return hook

    def _layer(self, name: str) -> Callable:
        def hook(m: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            try:
                x = args[0] if args else kwargs.get("input")
                if self.depth == 1 and torch.is_tensor(x) and torch.is_tensor(out):
                    self.busy = True
                    call = module_rule(m, x, out, self.b, self.t, self.spikes_of)
                    self._acc(name, type(m).__name__, True).add(call)
            finally:
                self.busy = False
                self.depth -= 1

        return hook

    def _neuron(self, name: str) -> Callable:
        def hook(m: nn.Module, args: Any, out: Any) -> None:
            if torch.is_tensor(out):
                self.busy = True
                s = self.spikes.setdefault(name, [0.0, 0.0])
                s[0] += float(out.sum(dtype=torch.float64))
                s[1] += out.numel()
                self.busy = False

        return hook

    def _acc(self, name: str, kind: str, is_module: bool) -> LayerTally:
        if name not in self.accs:
            self.accs[name] = LayerTally(name=name, kind=kind, is_module=is_module)
        return self.accs[name]

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        entry = self.table.get(func.overloadpacket)
        if entry is not None and self.depth == 0 and not self.busy:
            label, count = entry
            scope, seen = self.scope[-1] if self.scope else ("", {})
            idx = seen.get(label, 0)  # k-th such op in this call of the module: q@k^T vs attn@v
            seen[label] = idx + 1
            name = f"{scope}:{label}{idx}" if scope else f"{label}{idx}"
            self._acc(name, label, False).add(count(args, out))
        return out
