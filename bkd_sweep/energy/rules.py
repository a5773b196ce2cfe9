"""The counting rules, one table: which operation costs what, as dense MACs or as SOPs.

Every rule returns a ``Call``: the op's dense MACs, its applications (time steps it covers),
and, when an operand is binary (spikes), the synaptic operations it actually triggers. A Conv
module and a functional ``aten.convolution`` use the same conv rule; a Linear module and the
loose matmuls use the same product rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

aten = torch.ops.aten

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_SDPA_OPS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
             "_scaled_dot_product_fused_attention_overrideable")


@dataclass
class Call:
    """One counted operation: dense MACs, SOPs if spike-fed, and its applications."""

    dense: float
    apps: int
    sops: float | None = None  # None: real-valued input -> dense MACs
    nnz: int = 0
    numel: int = 0


def is_binary(x: torch.Tensor) -> bool:
    if x.dtype == torch.bool:
        return True
    if x.is_complex():
        return False
    return bool(((x == 0) | (x == 1)).all())


SpikeCounts = Callable[[torch.Tensor], "torch.Tensor | None"]


def exact_spikes(x: torch.Tensor) -> torch.Tensor | None:
    """``exact``: only a binary tensor is spikes (each 1 triggers its fan-out once)."""
    return (x != 0).to(torch.float32) if is_binary(x) else None


def paper_spikes(x: torch.Tensor) -> torch.Tensor | None:
    """``paper``: any non-negative integer tensor is spike counts (a SEW ADD output of 2 is two
    spikes arriving, an event frame holds event counts): each count is one accumulate."""
    if x.dtype == torch.bool:
        return x.to(torch.float32)
    if x.is_complex() or not bool(((x >= 0) & (x == torch.round(x))).all()):
        return None
    return x.to(torch.float32)


CONVENTIONS: dict[str, SpikeCounts] = {"exact": exact_spikes, "paper": paper_spikes}


def _nnz(x: torch.Tensor) -> int:
    return int(torch.count_nonzero(x))


def _time_apps(rows: int, batch: int, timesteps: int) -> int:
    """Applications of a linear/matmul call: T when its rows hold B*T (times tokens), else 1."""
    return timesteps if timesteps > 1 and rows % (batch * timesteps) == 0 else 1


def _conv_sops(mask: torch.Tensor, w_shape: tuple[int, ...], stride: Any, padding: Any,
               dilation: Any, groups: int, transposed: bool, output_padding: Any) -> float:
    """Exact synaptic operations of a conv on spike counts ``mask`` [N, C, *spatial]
    (padding-aware): a conv of the counts with an all-ones kernel, times the fan-out."""
    d = len(w_shape) - 2
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


def conv_rule(x: torch.Tensor, out: torch.Tensor, w_shape: tuple[int, ...], *, stride: Any,
              padding: Any, dilation: Any, groups: int, transposed: bool, output_padding: Any,
              batch: int, spikes: SpikeCounts, padded: torch.Tensor | None = None) -> Call:
    """A conv on batched ``x`` [N, C, *spatial]; ``padded`` is ``x`` already padded by a
    non-zero padding mode (then ``padding`` is 0), so the spike mask is padded alike."""
    rows = x.shape[0]
    dense = float((x if transposed else out).numel()) * prod(w_shape[1:])
    call = Call(dense=dense, apps=rows // batch if rows % batch == 0 else 1)
    counts = spikes(x if padded is None else padded)
    if counts is not None:
        call.nnz, call.numel = _nnz(x), x.numel()
        call.sops = _conv_sops(counts, w_shape, stride, padding, dilation, groups, transposed,
                               output_padding)
    return call


def product_rule(a: torch.Tensor, bm: torch.Tensor, batch: int, timesteps: int,
                 spikes: SpikeCounts, weight: str = "") -> Call:
    """A product a @ bm (a [bt, m, k], bm [bt, k, n]). ``weight``: which operand is a model
    weight ("a", "b" or ""): the other one is then a layer input, and the convention says
    whether it is spikes (``paper``: integer counts too), as for a Linear; two activations
    follow ``activation_product``."""
    bt, m, k = a.shape
    n = bm.shape[-1]
    call = Call(dense=float(bt * m * k * n), apps=_time_apps(bt * m, batch, timesteps))
    if not weight:
        return activation_product(call, a, bm, spikes)
    x, fan = (bm, m) if weight == "a" else (a, n)
    counts = spikes(x)
    if counts is not None:  # each spike (count) meets every weight of its row/column once
        call.nnz, call.numel = _nnz(x), x.numel()
        call.sops = float(counts.sum()) * fan
    return call


def activation_product(call: Call, a: torch.Tensor, bm: torch.Tensor,
                       spikes: SpikeCounts) -> Call:
    """a @ bm, both activations: only a *binary* operand is spikes, under either convention
    (an integer operand such as K^T V holds sums of products, not spike arrivals; the
    ``paper`` integer-count rule is for a layer input fed into weights). Each spike of a
    binary operand triggers one accumulate per column of the other operand's free dimension:
    nnz(a) x n, or nnz(bm) x m. Two binary operands: the 1 x 1 products (spike meets spike).
    Neither binary: dense MACs. ``spikes`` still decides (an ANN counts MACs only)."""
    m, n = a.shape[-2], bm.shape[-1]
    a_bin = spikes(a) is not None and is_binary(a)
    b_bin = spikes(bm) is not None and is_binary(bm)
    if a_bin and b_bin:
        a_nz, b_nz = (a != 0).to(torch.float64), (bm != 0).to(torch.float64)
        call.sops = float((a_nz.sum(dim=-2) * b_nz.sum(dim=-1)).sum())  # [bt, k] each
        call.nnz, call.numel = _nnz(a) + _nnz(bm), a.numel() + bm.numel()
    elif a_bin:
        call.nnz, call.numel = _nnz(a), a.numel()
        call.sops = float(call.nnz) * n
    elif b_bin:
        call.nnz, call.numel = _nnz(bm), bm.numel()
        call.sops = float(call.nnz) * m
    return call


def linear_rule(m: nn.Linear, x: torch.Tensor, batch: int, timesteps: int,
                spikes: SpikeCounts) -> Call:
    """A Linear is the product rows x in_features @ in_features x out_features."""
    rows = x.numel() // m.in_features
    call = Call(dense=float(x.numel()) * m.out_features, apps=_time_apps(rows, batch, timesteps))
    counts = spikes(x)
    if counts is not None:
        call.nnz, call.numel = _nnz(x), x.numel()
        call.sops = float(counts.sum()) * m.out_features
    return call


def module_rule(m: nn.Module, x: torch.Tensor, out: torch.Tensor, batch: int,
                timesteps: int, spikes: SpikeCounts) -> Call:
    """Count one call of a Conv or Linear module on input ``x``."""
    if isinstance(m, nn.Linear):
        return linear_rule(m, x, batch, timesteps, spikes)
    assert isinstance(m, nn.modules.conv._ConvNd)
    w_shape = tuple(m.weight.shape)
    d = len(w_shape) - 2
    if x.dim() == d + 3:  # multi-step [T, B, C, ...] -> [T*B, C, ...]
        x, out = x.flatten(0, 1), out.flatten(0, 1)
    elif x.dim() == d + 1:  # unbatched
        x, out = x.unsqueeze(0), out.unsqueeze(0)
    padding, padded = m.padding, None
    if not m.transposed and m.padding_mode != "zeros":  # pad the mask like the layer does
        padded = F.pad(x.float(), m._reversed_padding_repeated_twice, mode=m.padding_mode)
        padding = 0
    return conv_rule(x, out, w_shape, stride=m.stride, padding=padding, dilation=m.dilation,
                     groups=m.groups, transposed=m.transposed,
                     output_padding=m.output_padding if m.transposed else 0, batch=batch,
                     spikes=spikes, padded=padded)


def _as3(x: torch.Tensor, vec_col: bool) -> torch.Tensor:
    if x.dim() == 1:
        x = x.unsqueeze(1) if vec_col else x.unsqueeze(0)
    return x if x.dim() == 3 else x.unsqueeze(0)


def _aten_conv(args: tuple, out: torch.Tensor, batch: int, spikes: SpikeCounts) -> Call:
    x, w, _, stride, padding, dilation, transposed, out_pad, groups = args[:9]
    if x.dim() == w.dim() - 1:  # unbatched
        x, out = x.unsqueeze(0), out.unsqueeze(0)
    return conv_rule(x, out, tuple(w.shape), stride=stride, padding=padding, dilation=dilation,
                     groups=groups, transposed=transposed, output_padding=out_pad, batch=batch,
                     spikes=spikes)


def _sdpa(args: tuple, batch: int, timesteps: int) -> Call:
    q, k, v = args[:3]
    n = prod(q.shape[:-2])
    length, s = q.shape[-2], k.shape[-2]
    dense = float(n * length * s * (q.shape[-1] + v.shape[-1]))
    return Call(dense=dense, apps=_time_apps(n * length, batch, timesteps))  # softmax: MACs


AtenRule = tuple[str, Callable[[tuple, Any], Call]]


def weight_test(model: nn.Module) -> Callable[[torch.Tensor], bool]:
    """Whether a tensor is (a view of) one of ``model``'s parameters or buffers: its storage."""
    ptrs = {p.untyped_storage().data_ptr()
            for p in list(model.parameters()) + list(model.buffers()) if p.numel()}
    return lambda x: x.numel() > 0 and x.untyped_storage().data_ptr() in ptrs


def _which_weight(a: torch.Tensor, bm: torch.Tensor, is_weight: Callable) -> str:
    return "b" if is_weight(bm) else "a" if is_weight(a) else ""


def aten_rules(b: int, t: int, spikes: SpikeCounts,
               is_weight: Callable[[torch.Tensor], bool] = lambda x: False,
               ) -> dict[Any, AtenRule]:
    """aten op packet -> (op label, rule(args, out)) for ops outside Conv/Linear modules;
    ``is_weight`` tells a model weight operand (the other is then a layer input)."""
    def pair(i: int, j: int, vec: bool = True) -> Callable[[tuple, Any], Call]:
        def rule(args: tuple, out: Any) -> Call:
            x, y = (_as3(args[i], False), _as3(args[j], True)) if vec else (args[i], args[j])
            w = _which_weight(args[i], args[j], is_weight)
            return product_rule(x, y, b, t, spikes, w)
        return rule

    table: dict[Any, AtenRule] = {
        aten.mm: ("mm", pair(0, 1)), aten.addmm: ("mm", pair(1, 2)),
        aten.mv: ("mv", pair(0, 1)), aten.addmv: ("mv", pair(1, 2)),
        aten.dot: ("dot", pair(0, 1)),
        aten.bmm: ("bmm", pair(0, 1, vec=False)),
        aten.baddbmm: ("bmm", pair(1, 2, vec=False)),
        aten.convolution: ("conv", lambda a, o: _aten_conv(a, o, b, spikes)),
    }
    for name in _SDPA_OPS:
        if hasattr(aten, name):
            table[getattr(aten, name)] = ("sdpa", lambda a, o: _sdpa(a, b, t))
    return table
