"""Where a trial runs: its device, its process group (DDP), and its random streams."""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def select_device(preference: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is an error. GPUs hidden
    on purpose (CUDA_VISIBLE_DEVICES empty: a trial given none) mean CPU for 'auto' even when
    torch counted the devices before they were hidden (Ray Train does, before the loop)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    if preference == "cpu" or (preference == "auto" and hidden):
        return torch.device("cpu")
    if torch.cuda.is_available():
        if dist.is_available() and dist.is_initialized():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cuda")
    if preference == "cuda":
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A distinct, reproducible seed per (trial seed, epoch, data-parallel rank): reseeding at
    every epoch start makes a resumed trial draw exactly what an uninterrupted one would, and
    each rank draws its own blur masks, mixes and augmentations (the same seed on every rank
    would give sample i of each GPU's batch the same mask)."""
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % 2**31


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Run a block without moving the global generators (torch CPU and ``device``, Python,
    NumPy): what it draws, or whether it draws at all, then cannot change what follows."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


def rng_state() -> dict:
    """Every generator's state, saved in checkpoints for inspection."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in data-parallel training (rank 0 of 1 without DDP)."""

    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def process_group() -> ProcessGroup:
    if dist.is_available() and dist.is_initialized():
        return ProcessGroup(dist.get_rank(), dist.get_world_size())
    return ProcessGroup()


def broadcast_buffers(module: nn.Module, group: ProcessGroup) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics). DDP broadcasts them at each
    forward, but each rank's own batch then updates them: without this, each rank would
    evaluate its own statistics while checkpoints hold rank 0's."""
    if group.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
