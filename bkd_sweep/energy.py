"""Per-sample inference energy of a spiking student or an ANN teacher, one code path for both.

E = e_mac_pj * MACs + e_ac_pj * SOPs (pJ per sample; 4.6 / 0.9 pJ at 45 nm, Horowitz 2014).

What is counted (everything summed over all calls, i.e. all T steps, then divided by the batch):

- Conv (1d/2d/3d, also transposed) and Linear modules, torch.nn or spikingjelly ``layer.*``
  (isinstance + forward hooks). A call whose input is binary (every value 0 or 1) is spike-fed:
  SOPs = synaptic operations actually triggered, exact and padding-aware. Conv: for every output
  position and output channel, the nonzero inputs in its receptive field (a conv of the nonzero
  mask with an all-ones kernel, times out_channels/groups; non-zero padding modes pad the mask the
  same way). Linear: nnz(input) x out_features. Any other call counts dense MACs. A multi-step
  layer sees T*B rows, so T steps are covered either way.
- Matrix products outside those modules (aten mm, addmm, bmm, baddbmm, mv, dot, convolution from
  functional calls, fused scaled-dot-product attention), seen by a TorchDispatchMode and recorded
  as pseudo-layers ``"<enclosing module>:<op><k>"`` (the k-th such op in one call of that module,
  e.g. ``blocks.0.attn:bmm0`` = Q K^T). One binary operand: SOPs = nnz(spikes) x fan-out (the
  other operand plays the weight). Two binary operands (spiking Q K^T): SOPs = the
  number of 1 x 1 products. Otherwise dense MACs. Fused attention always counts MACs (softmax).
- Not counted: BatchNorm (folded into the preceding conv at inference), pooling, residual adds,
  other elementwise ops and neuron membrane updates, as in the Spikformer / BKDSNN estimates.
- ``dense_macs``: MACs per sample for one application (time step). Applications per call: conv:
  rows / B; linear and matmul: T when the rows are a multiple of B*T, else 1.
- ``first_layer_once``: the first Conv/Linear (execution order) fed a real-valued input counts
  its real-valued MACs once (divided by its applications: T under direct encoding).
- ``firing_rates``: mean output of every spikingjelly neuron (``BaseNode``) module, over all its
  calls; ``mean_firing_rate`` is weighted by element count (all spikes / all neuron outputs);
  None without neurons (an ANN).

The binary test is on values, so an ANN layer fed an exactly binary tensor (a binarised image)
would count SOPs; ANN activations are practically never all 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Callable

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bkd_sweep.records import EnergyReport, LayerEnergy

__all__ = ["measure"]

aten = torch.ops.aten

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _is_binary(x: torch.Tensor) -> bool:
    if x.dtype == torch.bool:
        return True
    if x.is_complex():
        return False
    return bool(((x == 0) | (x == 1)).all())


def _nnz(x: torch.Tensor) -> int:
    return int(torch.count_nonzero(x))


def _time_apps(rows: int, batch: int, timesteps: int) -> int:
    """Applications of a linear/matmul call: T when its rows hold B*T (times tokens), else 1."""
    return timesteps if timesteps > 1 and rows % (batch * timesteps) == 0 else 1


def _conv_sops(
    x: torch.Tensor,
    w_shape: tuple[int, ...],
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    transposed: bool,
    output_padding: Any,
) -> float:
    """Exact synaptic operations of a conv on binary ``x`` [N, C, *spatial] (padding-aware)."""
    d = len(w_shape) - 2
    mask = (x != 0).to(torch.float32)
    if transposed:  # weight [C_in, C_out/g, *k]: each group's spikes scatter over the kernel
        ones = torch.ones((w_shape[0], 1, *w_shape[2:]), dtype=mask.dtype, device=mask.device)
        y = _CONV_T[d](mask, ones, None, stride, padding, output_padding, groups, dilation)
        fan = w_shape[1]
    else:  # weight [C_out, C_in/g, *k]: count nonzeros per receptive field and group
        ones = torch.ones((groups, *w_shape[1:]), dtype=mask.dtype, device=mask.device)
        y = _CONV[d](mask, ones, None, stride, padding, dilation, groups)
        fan = w_shape[0] // groups
    # round(): fast conv algorithms (Winograd/FFT) may return 8.9999 for an integer count
    return float(y.round().sum(dtype=torch.float64)) * fan


@dataclass
class _Call:
    """One counted operation: dense MACs, SOPs if spike-fed, and its applications."""

    dense: float
    apps: int
    sops: float | None = None  # None: real-valued input -> dense MACs
    nnz: int = 0
    numel: int = 0


@dataclass
class _Acc:
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

    def add(self, c: _Call) -> None:
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


def _module_call(m: nn.Module, x: torch.Tensor, out: torch.Tensor, b: int, t: int) -> _Call:
    """Count one call of a Conv or Linear module on input ``x``."""
    if isinstance(m, nn.Linear):
        rows = x.numel() // m.in_features
        c = _Call(dense=float(x.numel()) * m.out_features, apps=_time_apps(rows, b, t))
        if _is_binary(x):
            c.nnz, c.numel = _nnz(x), x.numel()
            c.sops = float(c.nnz) * m.out_features
        return c
    assert isinstance(m, nn.modules.conv._ConvNd)
    w_shape = tuple(m.weight.shape)
    d = len(w_shape) - 2
    if x.dim() == d + 3:  # multi-step [T, B, C, ...] -> [T*B, C, ...]
        x, out = x.flatten(0, 1), out.flatten(0, 1)
    elif x.dim() == d + 1:  # unbatched
        x, out = x.unsqueeze(0), out.unsqueeze(0)
    rows = x.shape[0]
    apps = rows // b if rows % b == 0 else 1
    ref = x if m.transposed else out
    c = _Call(dense=float(ref.numel()) * prod(w_shape[1:]), apps=apps)
    if _is_binary(x):
        c.nnz, c.numel = _nnz(x), x.numel()
        padding: Any = m.padding
        if not m.transposed and m.padding_mode != "zeros":  # pad the mask like the layer does
            x = F.pad(x.float(), m._reversed_padding_repeated_twice, mode=m.padding_mode)
            padding = 0
        out_pad = m.output_padding if m.transposed else 0
        c.sops = _conv_sops(
            x, w_shape, m.stride, padding, m.dilation, m.groups, m.transposed, out_pad
        )
    return c


def _matmul_call(a: torch.Tensor, bm: torch.Tensor, b: int, t: int) -> _Call:
    """Count a product a @ bm (a [bt, m, k], bm [bt, k, n]) with spike-aware rules."""
    bt, m, k = a.shape
    n = bm.shape[-1]
    c = _Call(dense=float(bt * m * k * n), apps=_time_apps(bt * m, b, t))
    a_bin, b_bin = _is_binary(a), _is_binary(bm)
    if a_bin and b_bin:  # both spikes: only 1 x 1 products accumulate
        col_a = (a != 0).sum(dim=-2)  # [bt, k]
        row_b = (bm != 0).sum(dim=-1)  # [bt, k]
        c.sops = float((col_a * row_b).sum())
        c.nnz, c.numel = _nnz(a) + _nnz(bm), a.numel() + bm.numel()
    elif a_bin:
        c.nnz, c.numel = _nnz(a), a.numel()
        c.sops = float(c.nnz) * n
    elif b_bin:
        c.nnz, c.numel = _nnz(bm), bm.numel()
        c.sops = float(c.nnz) * m
    return c


def _as3(x: torch.Tensor, vec_col: bool) -> torch.Tensor:
    if x.dim() == 1:
        x = x.unsqueeze(1) if vec_col else x.unsqueeze(0)
    return x if x.dim() == 3 else x.unsqueeze(0)


def _sdpa_call(args: tuple, b: int, t: int) -> _Call:
    q, k, v = args[:3]
    batch = prod(q.shape[:-2])
    length, s = q.shape[-2], k.shape[-2]
    dense = float(batch * length * s * (q.shape[-1] + v.shape[-1]))
    return _Call(dense=dense, apps=_time_apps(batch * length, b, t))


def _aten_counters(b: int, t: int) -> dict[Any, tuple[str, Callable[..., _Call]]]:
    """aten op packet -> (op label, counter(args) -> _Call) for ops outside Conv/Linear modules."""

    def conv(args: tuple, out: torch.Tensor) -> _Call:
        x, w, _, stride, padding, dilation, transposed, out_pad, groups = args[:9]
        if x.dim() == w.dim() - 1:  # unbatched
            x, out = x.unsqueeze(0), out.unsqueeze(0)
        dense = float((x if transposed else out).numel()) * prod(w.shape[1:])
        c = _Call(dense=dense, apps=x.shape[0] // b if x.shape[0] % b == 0 else 1)
        if _is_binary(x):
            c.nnz, c.numel = _nnz(x), x.numel()
            c.sops = _conv_sops(
                x, tuple(w.shape), stride, padding, dilation, groups, transposed, out_pad
            )
        return c

    table: dict[Any, tuple[str, Callable[..., _Call]]] = {
        aten.mm: ("mm", lambda a, o: _matmul_call(_as3(a[0], False), _as3(a[1], True), b, t)),
        aten.bmm: ("bmm", lambda a, o: _matmul_call(a[0], a[1], b, t)),
        aten.addmm: ("mm", lambda a, o: _matmul_call(_as3(a[1], False), _as3(a[2], True), b, t)),
        aten.baddbmm: ("bmm", lambda a, o: _matmul_call(a[1], a[2], b, t)),
        aten.mv: ("mv", lambda a, o: _matmul_call(_as3(a[0], False), _as3(a[1], True), b, t)),
        aten.addmv: ("mv", lambda a, o: _matmul_call(_as3(a[1], False), _as3(a[2], True), b, t)),
        aten.dot: ("dot", lambda a, o: _matmul_call(_as3(a[0], False), _as3(a[1], True), b, t)),
        aten.convolution: ("conv", conv),
    }
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
    ):
        if hasattr(aten, name):
            table[getattr(aten, name)] = ("sdpa", lambda a, o: _sdpa_call(a, b, t))
    return table


class _Counter(TorchDispatchMode):
    """Forward hooks on Conv/Linear/neuron modules plus a dispatch mode for loose matmuls."""

    def __init__(self, model: nn.Module, batch: int, timesteps: int) -> None:
        super().__init__()
        self.b, self.t = batch, timesteps
        self.accs: dict[str, _Acc] = {}  # insertion order = execution order
        self.spikes: dict[str, list[float]] = {}  # neuron name -> [sum, numel]
        self.scope: list[tuple[str, dict[str, int]]] = []  # enclosing modules, ops seen per call
        self.depth = 0  # > 0 inside a counted Conv/Linear: its aten ops are not recounted
        self.busy = False  # our own tensor ops in hooks are not counted
        self.table = _aten_counters(batch, timesteps)
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
                    call = _module_call(m, x, out, self.b, self.t)
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

    def _acc(self, name: str, kind: str, is_module: bool) -> _Acc:
        if name not in self.accs:
            self.accs[name] = _Acc(name=name, kind=kind, is_module=is_module)
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


def measure(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    timesteps: int = 1,
    e_mac_pj: float = 4.6,
    e_ac_pj: float = 0.9,
    first_layer_once: bool = False,
) -> EnergyReport:
    """Run one no-grad eval forward on ``inputs`` and return per-sample ops and energy.

    ``timesteps``: the T the model runs internally (1 for an ANN). The model is reset
    (``functional.reset_net``) before and after, and every module's train/eval flag is restored.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if e_mac_pj < 0 or e_ac_pj < 0:
        raise ValueError("energy per operation must be >= 0")
    if inputs.dim() < 1 or inputs.shape[0] < 1:
        raise ValueError(f"inputs need a batch dimension, got shape {tuple(inputs.shape)}")
    batch = inputs.shape[0]
    tensors = list(model.parameters()) + list(model.buffers())
    if tensors:
        inputs = inputs.to(tensors[0].device)

    modes = {m: m.training for m in model.modules()}
    counter = _Counter(model, batch, timesteps)
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

    layers: list[LayerEnergy] = []
    once_pending = first_layer_once
    for acc in counter.accs.values():
        macs = acc.real_dense / batch
        if once_pending and acc.is_module and acc.real_calls and acc.real_apps:
            macs /= acc.real_apps
            once_pending = False
        sops = acc.sops / batch
        layers.append(
            LayerEnergy(
                name=acc.name,
                kind=acc.kind,
                input_is_spike=acc.spike_calls > 0 and acc.real_calls == 0,
                sops=sops,
                macs=macs,
                dense_macs=acc.dense / batch / acc.apps if acc.apps else 0.0,
                firing_rate=acc.nnz / acc.numel if acc.spike_calls and acc.numel else None,
                energy_pj=e_mac_pj * macs + e_ac_pj * sops,
            )
        )

    rates = {k: s / n for k, (s, n) in counter.spikes.items() if n > 0}
    spikes_total = sum(s for s, n in counter.spikes.values() if n > 0)
    elems_total = sum(n for _, n in counter.spikes.values())
    total_sops = sum(layer.sops for layer in layers)
    total_macs = sum(layer.macs for layer in layers)
    energy_pj = e_mac_pj * total_macs + e_ac_pj * total_sops
    return EnergyReport(
        energy_mj=energy_pj * 1e-9,
        sops=total_sops,
        macs=total_macs,
        mean_firing_rate=spikes_total / elems_total if elems_total else None,
        timesteps=timesteps,
        e_mac_pj=e_mac_pj,
        e_ac_pj=e_ac_pj,
        first_layer_once=first_layer_once,
        layers=layers,
        firing_rates=rates,
    )
