"""DataLoaders for the three splits, with seeded shuffling (optionally distributed), and
batch-level mixup/cutmix (``make_mixup``; timm is imported only when a study mixes)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

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


def make_loaders(bundle: DataBundle, cfg: DataConfig, *, seed: int,
                 distributed: bool = False) -> Loaders:
    """Loaders(train, val, test). Train shuffles from ``seed`` (a torch.Generator, so the
    epoch orders are reproducible) and drops its last partial batch only when the
    (per-replica) set is bigger than one batch; val and test keep order, batch
    eval_batch_size (default 2 x batch_size).

    distributed=True needs torch.distributed initialized: every loader then uses a
    DistributedSampler (call ``loaders.train.sampler.set_epoch(epoch)`` each epoch; the val
    and test samplers pad with repeated samples to an equal share per rank).
    """
    eval_batch = cfg.eval_batch_size or 2 * cfg.batch_size
    common = {"num_workers": cfg.num_workers, "pin_memory": torch.cuda.is_available(),
              "persistent_workers": cfg.num_workers > 0}
    n_train = len(bundle.train)  # type: ignore[arg-type]
    if distributed:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("make_loaders(distributed=True) needs torch.distributed "
                               "initialized first (init_process_group)")
        train_sampler = DistributedSampler(bundle.train, shuffle=True, seed=seed)
        per_replica = math.ceil(n_train / dist.get_world_size())
        train = DataLoader(bundle.train, batch_size=cfg.batch_size, sampler=train_sampler,
                           drop_last=per_replica > cfg.batch_size, **common)
    else:
        generator = torch.Generator().manual_seed(seed)
        train = DataLoader(bundle.train, batch_size=cfg.batch_size, shuffle=True,
                           generator=generator, drop_last=n_train > cfg.batch_size, **common)

    def in_order(dataset: Dataset) -> DataLoader:
        sampler = DistributedSampler(dataset, shuffle=False) if distributed else None
        return DataLoader(dataset, batch_size=eval_batch, shuffle=False, sampler=sampler,
                          **common)

    val = in_order(bundle.val)
    test = val if bundle.test is bundle.val else in_order(bundle.test)
    return Loaders(train, val, test)


def make_mixup(aug: AugmentConfig, num_classes: int) -> "BatchMixup | None":
    """Batch mixup/cutmix with label smoothing (soft targets [B, K]); None when both alphas
    are 0. The trial sets ``mixup.mixup_enabled = False`` from ``aug.mixup_off_epoch`` on."""
    if aug.mixup <= 0 and aug.cutmix <= 0:
        return None
    from bkd_sweep.data.mixup import BatchMixup  # timm (+ torchvision): ~4 s; plan needs none

    return BatchMixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix,
                      label_smoothing=aug.label_smoothing, num_classes=num_classes)
