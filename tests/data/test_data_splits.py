"""The three named splits on every on-disk format: disjoint, sized per class as computed by
hand, fixed across trial seeds, eval-transformed, and val = test only when asked for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest
import torch
from pydantic import ValidationError
from torch.utils.data import Subset

from bkd_sweep.data import DataError, build_data, make_loaders
from bkd_sweep.config import DataConfig

NO_DROP = 4096  # a batch bigger than any train split here: every train loader yields all samples


@dataclass
class Format:
    """One dataset format written for real: its config and the split sizes worked out by hand."""

    # write(dataset_files, root) writes the files and returns the DataConfig fields
    write: Callable[[ModuleType, Path], dict]
    sizes: tuple[int, int, int]  # (train, val, test) at the config's fractions
    carved_test: bool  # test carved from the pool (no official test split)


FORMATS = {
    # 20 train images per class: val round(0.1 x 20) = 2; official test batch of 30
    "cifar10": Format(lambda files, root: {
        "dataset": "cifar10", "root": str(files.write_cifar10(root, n_train=200, n_test=30))},
                      (180, 20, 30), False),
    # 10 per class: val round(0.3 x 10) = 3; official t10k of 20
    "mnist": Format(lambda files, root: {"dataset": "mnist", "val_fraction": 0.3, "root": str(
        files.write_mnist(root, n_train=100, n_test=20, gz=True).parents[1])},
                    (70, 30, 20), False),
    # 3 classes x 10 images: val round(0.2 x 10) = 2; test = the val folder, 2 per class
    "imagenet": Format(lambda files, root: {
        "dataset": "imagenet", "image_size": 8, "val_fraction": 0.2,
        "root": str(files.write_image_folder(root, ("a", "b", "c"), n_train=10, n_val=2,
                                             size=12))},
                       (24, 6, 6), False),
    # 3 classes x 10 files: test round(0.1 x 10) = 1 (the 9:1 default), val round(0.9) = 1
    "cifar10_dvs": Format(lambda files, root: {
        "dataset": "cifar10_dvs", "image_size": 16, "root": str(files.write_cifar10_dvs(
            root, n_per_class=10, classes=("a", "b", "c"), n_events=32))},
                          (24, 3, 3), True),
    # per-class counts in test_data_formats.DIGITS_*: 359 test, then 143 val of the 1,438 left
    "digits": Format(lambda files, root: {"dataset": "digits"}, (1295, 143, 359), True),
    # 3 classes x 48: test round(9.6) = 10, val round(0.1 x 38) = 4, train 34
    "synthetic": Format(lambda files, root: {"dataset": "synthetic", "num_classes": 3,
                                      "image_size": 8}, (102, 12, 30), True),
}


def sample_ids(dataset) -> list:
    """What identifies a sample: its file, or its raw pixels (the fixtures' are random)."""
    if isinstance(dataset, Subset):  # a limit_* subsample
        ids = sample_ids(dataset.dataset)
        return [ids[i] for i in dataset.indices]
    if hasattr(dataset, "files"):
        return [str(f) for f in dataset.files]
    if hasattr(dataset, "samples"):
        return [path for path, _ in dataset.samples]
    return [dataset.images[i].numpy().tobytes() for i in range(len(dataset))]


@pytest.fixture(params=sorted(FORMATS))
def fmt(request, tmp_path: Path, dataset_files: ModuleType) -> tuple[Format, dict]:
    spec = FORMATS[request.param]
    return spec, spec.write(dataset_files, tmp_path)


def test_splits_are_disjoint_and_sized_per_class(fmt):
    spec, fields = fmt
    bundle = build_data(DataConfig(**fields), seed=0, timesteps=2)
    train, val, test = (sample_ids(getattr(bundle, s)) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == spec.sizes
    assert not bundle.selection_on_test and bundle.val is not bundle.test
    assert len(set(train)) == len(train) and len(set(val)) == len(val)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    # nothing lost: val_fraction 0 keeps the whole training pool in train
    pool = build_data(DataConfig(**{**fields, "val_fraction": 0}), seed=0, timesteps=2)
    assert set(sample_ids(pool.train)) == set(train) | set(val)
    assert sample_ids(pool.test) == test  # carving val never moves a test sample


def test_the_split_is_the_same_for_every_trial_seed(fmt):
    """The trial builds data with a fixed split seed; its own seed reaches only the loaders."""
    _, fields = fmt
    cfg = DataConfig(**fields, batch_size=NO_DROP)
    first, second = build_data(cfg, seed=0, timesteps=2), build_data(cfg, seed=0, timesteps=2)
    for split in ("train", "val", "test"):
        assert sample_ids(getattr(first, split)) == sample_ids(getattr(second, split))
    a, b = make_loaders(first, cfg, seed=1), make_loaders(second, cfg, seed=2)
    for split in ("val", "test"):
        for (xa, ya), (xb, yb) in zip(getattr(a, split), getattr(b, split), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    (xa, ya), = a.train  # one batch holds the whole split; only its order depends on the seed
    (xb, yb), = b.train
    assert not torch.equal(ya, yb) or not torch.equal(xa, xb)
    assert sorted(ya.tolist()) == sorted(yb.tolist())


def test_val_and_test_use_the_eval_transform(fmt):
    _, fields = fmt
    cfg = DataConfig(**fields, augment={"crop_flip": True, "random_erasing": 1.0})
    bundle = build_data(cfg, seed=0, timesteps=2)
    torch.manual_seed(0)
    train_views = [bundle.train[0][0] for _ in range(3)]
    assert not torch.equal(train_views[0], train_views[1])  # train is augmented
    assert bundle.val.transform is bundle.test.transform is not bundle.train.transform
    for split in (bundle.val, bundle.test):
        assert torch.equal(split[0][0], split[0][0]) and torch.equal(split[1][0], split[1][0])


def test_val_fraction_zero_selects_on_test(fmt):
    spec, fields = fmt
    bundle = build_data(DataConfig(**{**fields, "val_fraction": 0}), seed=0, timesteps=2)
    train, val, test = spec.sizes
    assert bundle.selection_on_test and bundle.val is bundle.test
    assert (len(bundle.train), len(bundle.test)) == (train + val, test)
    assert "val = test (selection on test" in bundle.split_rule
    loaders = make_loaders(bundle, DataConfig(**{**fields, "val_fraction": 0}), seed=0)
    assert loaders.val is loaders.test


def test_the_rule_is_said_in_one_line():
    assert build_data(DataConfig(), seed=0).split_rule == (
        "test: 20% of each class; val: 10% of each class of the rest; seed 0")
    cfg = DataConfig(dataset="cifar10_dvs", test_fraction=0.125, val_fraction=0.05)
    assert "test: 12.5% of each class; val: 5% of" in cfg_rule(cfg)


def cfg_rule(cfg: DataConfig) -> str:
    from bkd_sweep.data.splits import carve_splits

    return carve_splits([0, 0, 1, 1], cfg, seed=0, name=cfg.dataset,
                        default_test_fraction=0.1).rule


def test_changing_val_fraction_never_moves_a_test_sample():
    small = build_data(DataConfig(val_fraction=0.05), seed=0)
    large = build_data(DataConfig(val_fraction=0.3), seed=0)
    assert torch.equal(small.test.images, large.test.images)
    # per class 7.1, 7.3, ... -> 7 each; 42.6 -> 43, 43.8 -> 44, ... (the rest: 142, 146, ...)
    assert (len(small.val), len(large.val)) == (70, 434)


def test_test_fraction_overrides_the_default_and_is_refused_where_test_is_official(
        tmp_path, dataset_files):
    bundle = build_data(DataConfig(test_fraction=0.5), seed=0)
    # half of 178, 182, 177, 183, 181, 182, 181, 179, 174, 180, x.5 rounding half to even
    assert len(bundle.test) == 89 + 91 + 88 + 92 + 90 + 91 + 90 + 90 + 87 + 90
    dataset_files.write_cifar10(tmp_path, n_train=20, n_test=10)
    with pytest.raises(DataError, match="cifar10: data.test_fraction is set but cifar10 has an "
                                        "official test split"):
        build_data(DataConfig(dataset="cifar10", root=str(tmp_path), test_fraction=0.2), seed=0)


def test_limits_per_split_and_one_limit_when_val_is_test():
    cfg = DataConfig(limit_val=20, limit_test=50)
    bundle, again = build_data(cfg, seed=0), build_data(cfg, seed=0)
    assert (len(bundle.val), len(bundle.test)) == (20, 50)
    assert bundle.test.indices == again.test.indices  # seeded
    full = build_data(DataConfig(), seed=0)
    assert set(sample_ids(bundle.test)) <= set(sample_ids(full.test))
    papers = build_data(cfg.model_copy(update={"val_fraction": 0}), seed=0)
    assert papers.val is papers.test and len(papers.test) == 20  # the smaller limit
    only_test = build_data(DataConfig(val_fraction=0, limit_test=30), seed=0)
    assert only_test.val is only_test.test and len(only_test.val) == 30


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_a_val_fraction_outside_zero_to_one_is_rejected(fraction: float):
    with pytest.raises(ValidationError, match="val_fraction"):
        DataConfig(val_fraction=fraction)


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_a_test_fraction_must_leave_both_sides_non_empty(fraction: float):
    with pytest.raises(ValidationError, match="test_fraction"):
        DataConfig(test_fraction=fraction)


def test_a_class_too_small_to_give_a_val_sample_is_a_data_error(tmp_path: Path,
                                                               dataset_files):
    dataset_files.write_cifar10(tmp_path, n_train=10, n_test=10)  # one image per class
    with pytest.raises(DataError, match="cifar10: empty split \\(train 10, val 0, test 10 "
                                        "samples\\); a class needs two samples"):
        build_data(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)
    assert len(build_data(DataConfig(dataset="cifar10", root=str(tmp_path), val_fraction=0),
                          seed=0).train) == 10
