"""DataLoaders for the three splits, with seeded shuffling (optionally distributed), and
batch-level mixup/cutmix (``make_mixup``; timm is imported only when a study mixes)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from bkd_sweep.data.base import DataBundle
from bkd_sweep.config import AugmentConfig, DataConfig

if TYPE_CHECKING:
    from bkd_sweep.data.mixup import BatchMixup


class Loaders(NamedTuple):
    """The loaders of a DataBundle's three splits; val and test are one object when the
    bundle selects on test (val IS test)."""

    train: DataLoader
    val: DataLoader
    test: DataLoader


class EvalShard(Sampler[int]):
    """Indices rank, rank + world, ... of ``size``: every sample on exactly one rank, so
    all-reduced eval counts equal the split's size (DistributedSampler pads each share with
    repeated samples, counting them twice)."""

    def __init__(self, size: int, rank: int, world: int):
        self.indices = range(rank, size, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loaders(bundle: DataBundle, cfg: DataConfig, *, seed: int,
                 distributed: bool = False) -> Loaders:
    """Loaders(train, val, test). Train shuffles from ``seed`` (a torch.Generator, so the
    epoch orders are reproducible) and drops its last partial batch only when the
    (per-replica) set is bigger than one batch; val and test keep order, batch
    eval_batch_size (default 2 x batch_size).

    distributed=True needs torch.distributed initialized: train then uses a
    DistributedSampler (call ``loaders.train.sampler.set_epoch(epoch)`` each epoch), val and
    test an EvalShard per rank (unpadded: shares differ by at most one sample).
    """
    eval_batch = cfg.eval_batch_size or 2 * cfg.batch_size
    common = {"num_workers": cfg.num_workers, "pin_memory": torch.cuda.is_available()}
    # Train workers start afresh each epoch: the new iterator draws the workers' seed after
    # the epoch's reseed, so a resumed epoch augments as an unbroken one does (persistent
    # workers draw it once, in whichever epoch the process starts with).
    train_common = {**common, "persistent_workers": False}
    eval_common = {**common, "persistent_workers": cfg.num_workers > 0}
    n_train = len(bundle.train)  # type: ignore[arg-type]
    rank, world = 0, 1
    if distributed:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("make_loaders(distributed=True) needs torch.distributed "
                               "initialized first (init_process_group)")
        rank, world = dist.get_rank(), dist.get_world_size()
        train_sampler = DistributedSampler(bundle.train, shuffle=True, seed=seed)
        train = DataLoader(bundle.train, batch_size=cfg.batch_size, sampler=train_sampler,
                           drop_last=math.ceil(n_train / world) > cfg.batch_size,
                           **train_common)
    else:
        generator = torch.Generator().manual_seed(seed)
        train = DataLoader(bundle.train, batch_size=cfg.batch_size, shuffle=True,
                           generator=generator, drop_last=n_train > cfg.batch_size,
                           **train_common)

    def in_order(dataset: Dataset) -> DataLoader:
        size = len(dataset)  # type: ignore[arg-type]
        sampler = EvalShard(size, rank, world) if distributed else None
        return DataLoader(dataset, batch_size=eval_batch, shuffle=False, sampler=sampler,
                          **eval_common)

    val = in_order(bundle.val)
    test = val if bundle.test is bundle.val else in_order(bundle.test)
    return Loaders(train, val, test)


def make_mixup(aug: AugmentConfig, num_classes: int) -> "BatchMixup | None":
    """Batch mixup/cutmix with label smoothing (soft targets [B, K]); None when both alphas
    are 0. The trial mixes in epochs 1..``aug.mixup_off_epoch`` and stops after it (timm's
    rule, counted from 1: off 200 = the paper's "off after epoch 200")."""
    if aug.mixup <= 0 and aug.cutmix <= 0:
        return None
    from bkd_sweep.data.mixup import BatchMixup  # timm (+ torchvision): ~4 s; plan needs none

    return BatchMixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix,
                      label_smoothing=aug.label_smoothing, num_classes=num_classes)
