"""Each data-parallel rank draws its own randomness (blur masks, mixes, augmentations), and
rank 0 draws what a single-process trial always drew (a resumed trial stays reproducible)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from bkd_sweep.trial.environment import ProcessGroup, epoch_seed
from bkd_sweep.trial.step import _start_epoch


def _state(rank: int) -> SimpleNamespace:
    loader = SimpleNamespace(sampler=None, generator=torch.Generator())
    module = torch.nn.Linear(1, 1)
    config = SimpleNamespace(seed=3, data=SimpleNamespace(
        augment=SimpleNamespace(mixup_off_epoch=None)))
    return SimpleNamespace(config=config, loaders=SimpleNamespace(train=loader),
                           wrapped=module, teacher=None, mixup=None,
                           group=ProcessGroup(rank, 2))


def _draws(rank: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    state = _state(rank)
    _start_epoch(state, epoch)
    mask = torch.rand(4, 8).lt(0.15)  # what a blur mask draws from the global generator
    return mask, torch.rand(4, generator=state.loaders.train.generator)


def test_rank_zero_keeps_the_single_process_seed() -> None:
    assert epoch_seed(3, 2) == epoch_seed(3, 2, 0) == (3 * 1_000_003 + 2 * 7_919) % 2**31


def test_ranks_draw_different_masks_and_the_same_rank_draws_the_same() -> None:
    zero, one = _draws(0, epoch=2), _draws(1, epoch=2)
    again = _draws(1, epoch=2)
    assert not torch.equal(zero[0], one[0]) and not torch.equal(zero[1], one[1])
    assert torch.equal(one[0], again[0]) and torch.equal(one[1], again[1])
    assert len({epoch_seed(3, e, r) for e in range(1, 50) for r in range(8)}) == 49 * 8
