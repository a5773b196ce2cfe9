"""A resumed trial's epoch draws the batches and augmentations an unbroken run draws there,
also when DataLoader workers augment (their seed must come from the epoch's reseed)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from bkd_sweep.config import TrialConfig, apply_overrides
from bkd_sweep.data import build_data, make_loaders
from bkd_sweep.trial.environment import ProcessGroup
from bkd_sweep.trial.step import _start_epoch


def first_batches(first: int, last: int, workers: int) -> dict[int, tuple]:
    """The first (images, labels) batch of epochs first..last, starting the loaders afresh at
    ``first`` as a resumed trial does."""
    config = apply_overrides(TrialConfig(), {
        "data.dataset": "digits", "data.batch_size": 16, "data.num_workers": workers,
        "data.augment.crop_flip": True, "data.limit_train": 64})
    loaders = make_loaders(build_data(config.data, seed=0), config.data, seed=config.seed)
    state = SimpleNamespace(config=config, group=ProcessGroup(), loaders=loaders,
                            wrapped=nn.Identity(), teacher=None, mixup=None)
    batches = {}
    for epoch in range(first, last + 1):
        _start_epoch(state, epoch)
        batches[epoch] = next(iter(loaders.train))
    return batches


def test_resumed_epoch_with_workers_sees_the_unbroken_runs_batch():
    unbroken = first_batches(1, 3, workers=2)
    resumed = first_batches(3, 3, workers=2)
    (images, labels), (images_r, labels_r) = unbroken[3], resumed[3]
    assert torch.equal(labels, labels_r)
    assert torch.equal(images, images_r)  # same samples, same crops and flips
    assert not torch.equal(unbroken[2][0], images)  # each epoch draws anew
