"""Small helpers shared by the trial loop and teacher training: device choice, seeding,
atomic checkpoint files, the code version."""

from __future__ import annotations

import functools
import math
import os
import random
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from bkd_sweep.config import OptimizerConfig


def select_device(preference: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is an error."""
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cuda")
    if preference == "cuda":
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per (trial seed, epoch): reseeding at every epoch start
    makes a resumed trial draw exactly what an uninterrupted one would."""
    return (seed * 1_000_003 + epoch * 7_919) % 2**31


def lr_schedule(epochs: int, steps_per_epoch: int, warmup_epochs: int, scheduler: str,
               base_lr: float, min_lr: float) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to min_lr (per optimizer step)."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(warmup_epochs * steps_per_epoch, total - 1)
    floor = min_lr / base_lr if base_lr > 0 else 0.0

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if scheduler == "none":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: nn.Module, opt: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters (student, align, restoration block)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum,
                               weight_decay=opt.weight_decay)
    return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file then os.replace: a kill never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """git commit (with '+dirty') of the package when it lives in a checkout, else the
    installed package version."""
    from importlib.metadata import PackageNotFoundError, version

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                                capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=here, capture_output=True, text=True, timeout=5)
            flag = "+dirty" if dirty.stdout.strip() else ""
            return f"git:{commit.stdout.strip()}{flag}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"bkd-sweep=={version('bkd-sweep')}"
    except PackageNotFoundError:
        return "unknown"
