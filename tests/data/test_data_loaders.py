"""make_loaders (seeded shuffling, drop_last rule, eval batch, distributed) and make_mixup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from timm.data import Mixup
from torch.utils.data import DistributedSampler

from bkd_sweep.data import build_data, make_loaders, make_mixup
from bkd_sweep.data.loaders import EvalShard
from bkd_sweep.config import AugmentConfig, DataConfig


def epoch_labels(loader) -> list[int]:
    return [int(y) for _, ys in loader for y in ys]


def test_shuffling_is_seeded_and_differs_between_epochs():
    cfg = DataConfig(dataset="synthetic", batch_size=16, image_size=8)
    bundle = build_data(cfg, seed=0)
    a = make_loaders(bundle, cfg, seed=5).train
    b = make_loaders(bundle, cfg, seed=5).train
    c = make_loaders(bundle, cfg, seed=6).train
    first_a, first_b, first_c = epoch_labels(a), epoch_labels(b), epoch_labels(c)
    assert first_a == first_b and first_a != first_c
    second_a, second_b = epoch_labels(a), epoch_labels(b)
    assert second_a != first_a and second_a == second_b  # reshuffled, reproducibly


def test_drop_last_only_when_the_set_exceeds_a_batch_and_eval_batch_default():
    cfg = DataConfig(dataset="synthetic", batch_size=4, limit_train=10, limit_val=9,
                     image_size=8)
    bundle = build_data(cfg, seed=0)
    train, val, test = make_loaders(bundle, cfg, seed=0)
    assert [len(y) for _, y in train] == [4, 4]
    assert [len(y) for _, y in val] == [8, 1]  # eval batch = 2 x 4, nothing dropped
    assert [len(y) for _, y in test] == [8] * 12 + [4]  # 100 test samples, none dropped
    small = cfg.model_copy(update={"limit_train": 3, "eval_batch_size": 5, "limit_test": 7})
    train, val, test = make_loaders(build_data(small, seed=0), small, seed=0)
    assert [len(y) for _, y in train] == [3]
    assert [len(y) for _, y in val] == [5, 4]
    assert [len(y) for _, y in test] == [5, 2]


def test_distributed_samplers(tmp_path: Path):
    cfg = DataConfig(dataset="synthetic", batch_size=8, image_size=8)
    bundle = build_data(cfg, seed=0)
    with pytest.raises(RuntimeError, match="needs torch.distributed initialized"):
        make_loaders(bundle, cfg, seed=0, distributed=True)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        train, val, test = make_loaders(bundle, cfg, seed=3, distributed=True)
        assert isinstance(train.sampler, DistributedSampler)
        assert train.sampler.seed == 3 and train.sampler.shuffle
        assert isinstance(val.sampler, EvalShard) and isinstance(test.sampler, EvalShard)
        assert list(val.sampler) == list(range(len(bundle.val)))  # in order, one rank: all
        assert sorted(epoch_labels(val)) == sorted(bundle.val.labels.tolist())
        assert sorted(epoch_labels(test)) == sorted(bundle.test.labels.tolist())
        assert len(bundle.train) == 340
        assert len(epoch_labels(train)) == 336  # 42 full batches of 8, the last 4 dropped
    finally:
        dist.destroy_process_group()


def test_eval_shards_hold_every_sample_once():
    """10 samples on 4 ranks: shares of 3, 3, 2, 2 (DistributedSampler pads to 3 each,
    so all-reduced eval counts would be 12)."""
    shards = [list(EvalShard(10, rank, 4)) for rank in range(4)]
    assert [len(EvalShard(10, rank, 4)) for rank in range(4)] == [3, 3, 2, 2]
    assert shards[1] == [1, 5, 9]
    assert sorted(i for shard in shards for i in shard) == list(range(10))


def test_make_mixup_off_when_both_alphas_are_zero():
    assert make_mixup(AugmentConfig(label_smoothing=0.1), 10) is None


def test_mixup_gives_soft_targets_with_label_smoothing():
    mixup = make_mixup(AugmentConfig(mixup=0.8, cutmix=1.0, label_smoothing=0.1), 5)
    assert isinstance(mixup, Mixup)
    torch.manual_seed(0)
    x = torch.randn(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    mixed, soft = mixup(x.clone(), y)
    assert mixed.shape == x.shape and soft.shape == (6, 5)
    torch.testing.assert_close(soft.sum(1), torch.ones(6))
    assert float(soft.min()) >= 0.1 / 5 - 1e-6  # smoothing floor
    assert float(soft.max()) < 1.0  # never a hard one-hot
    # batch mode: one lam; sample i mixes with sample 5 - i, and every row is
    # (1 - 0.1) * (lam * onehot(y_i) + (1 - lam) * onehot(y_{5-i})) + 0.1 / 5
    lam = float(soft[1, 1] - 0.02) / 0.9
    one_hot = torch.nn.functional.one_hot(y, 5).float()
    want = 0.9 * (lam * one_hot + (1 - lam) * one_hot.flip(0)) + 0.02
    torch.testing.assert_close(soft, want)


def test_mixup_target_is_the_convex_combination():
    mixup = make_mixup(AugmentConfig(mixup=1.0, label_smoothing=0.0), 4)
    x = torch.stack([torch.full((1, 2, 2), float(v)) for v in (0.0, 1.0, 2.0, 3.0)])
    y = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)
    mixed, soft = mixup(x.clone(), y)
    lam = float(soft[0, 0])  # sample 0 mixed with sample 3 (the batch flipped)
    torch.testing.assert_close(mixed[0], torch.full((1, 2, 2), lam * 0 + (1 - lam) * 3.0))
    torch.testing.assert_close(soft[0], torch.tensor([lam, 0.0, 0.0, 1 - lam]))


def test_mixup_odd_batch_and_switch_off():
    mixup = make_mixup(AugmentConfig(mixup=0.5, label_smoothing=0.2), 4)
    x = torch.randn(5, 3, 4, 4)
    mixed, soft = mixup(x.clone(), torch.tensor([0, 1, 2, 3, 1]))
    assert mixed.shape == (5, 3, 4, 4) and soft.shape == (5, 4)
    torch.testing.assert_close(mixed[4], x[4])
    torch.testing.assert_close(soft[4], torch.tensor([0.05, 0.85, 0.05, 0.05]))
    mixup.mixup_enabled = False  # what the trial does from mixup_off_epoch on
    mixed, soft = mixup(x.clone(), torch.tensor([0, 1, 2, 3, 1]))
    torch.testing.assert_close(mixed, x)
    torch.testing.assert_close(soft[0], torch.tensor([0.85, 0.05, 0.05, 0.05]))
