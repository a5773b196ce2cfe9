"""Loading a network's weights from a local checkpoint file or from saved bytes (never from
a hub), with one-line errors: nested dicts, DataParallel / torch.compile prefixes,
weights_only."""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the network (one-line message)."""


_NESTED_KEYS = ("model", "state_dict", "model_state")
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers


def _extract_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a state_dict nor a dict with one under "
                              f"{'/'.join(_NESTED_KEYS)} (found {keys})")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _examples(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def read_weights_file(path: str | os.PathLike) -> bytes:
    """The bytes of a local checkpoint file; FileNotFoundError with a one-line message."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"teacher checkpoint not found: {path}")
    with open(path, "rb") as handle:
        return handle.read()


def load_weights(net: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a local checkpoint file into ``net`` (strictly) and return it.

    Raises FileNotFoundError or CheckpointError with a one-line message (see
    ``load_weights_from_bytes`` for what is accepted).
    """
    return load_weights_from_bytes(net, read_weights_file(path), os.fspath(path))


def load_weights_from_bytes(net: nn.Module, data: bytes, source: str) -> nn.Module:
    """Load saved checkpoint bytes (read from a file or a storage Location, named ``source``
    in errors) into ``net`` (strictly) and return it.

    Accepts a raw state_dict or ``{"model" | "state_dict" | "model_state": state_dict}``;
    strips ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes; BatchNorm
    ``num_batches_tracked`` counters missing from old checkpoints are tolerated.
    Raises CheckpointError with a one-line message.
    """
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{source}: cannot load ({type(exc).__name__}: {first[:200]})") \
            from None
    state = _extract_state_dict(obj, source)
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({_examples(shapes, 2)})")
        raise CheckpointError(f"{source} does not fit {type(net).__name__}: " + "; ".join(parts))
    for key, value in own.items():  # keep our counters where the checkpoint has none
        state.setdefault(key, value)
    net.load_state_dict(state, strict=True)
    return net


# --------------------------------------------------------------------------------------
# The frozen wrapper
