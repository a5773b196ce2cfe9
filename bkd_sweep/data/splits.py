"""Carving one labelled pool into train / val / test, per class and seeded.

The split depends on the data seed only (the trial passes a fixed one), never on the trial
seed, so every trial of a study selects on the same val and reports on the same test. Each
carve draws from its own rng stream: changing val_fraction never moves a test sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from bkd_sweep.data.base import DataError, stratified_split
from bkd_sweep.config import DataConfig

# rng streams of base.rng: test keeps stream 0 (the one the single val/test split of earlier
# versions used, so a carved test set is the same samples it was then); 3 is synthetic noise
# and 11..13 are the limit_* subsamples.
TEST_STREAM = 0
VAL_STREAM = 5
CARVED_TEST_DATASETS = "digits, synthetic, cifar10_dvs"


@dataclass(frozen=True)
class SplitIndices:
    """Indices into one labelled pool. ``val`` is None when val IS the test split
    (val_fraction 0); ``test`` is None when the dataset brings its own test split."""

    train: np.ndarray
    val: np.ndarray | None
    test: np.ndarray | None
    rule: str  # one line: how test and val were made


def carve_splits(labels: Sequence[int] | np.ndarray, cfg: DataConfig, *, seed: int, name: str,
                 default_test_fraction: float | None) -> SplitIndices:
    """Carve test (unless the dataset has an official one: ``default_test_fraction`` None),
    then val from what remains, each round(n_c * fraction) per class (see stratified_split).

    data.test_fraction overrides the default; on a dataset with an official test split it is
    an error rather than silently ignored.
    """
    labels = np.asarray(labels)
    if default_test_fraction is None and cfg.test_fraction is not None:
        raise DataError(f"{name}: data.test_fraction is set but {name} has an official test "
                        f"split; test_fraction is for datasets without one "
                        f"({CARVED_TEST_DATASETS})")
    pool, test = np.arange(len(labels)), None
    if default_test_fraction is None:
        test_rule = "the official test split"
    else:
        test_fraction = cfg.test_fraction or default_test_fraction
        pool, test = stratified_split(labels, test_fraction, seed=seed, stream=TEST_STREAM)
        test_rule = f"{percent(test_fraction)} of each class"
    if cfg.val_fraction == 0:
        return SplitIndices(pool, None, test, f"test: {test_rule}; val = test (selection "
                                                  f"on test, the papers' practice); seed {seed}")
    kept, val = stratified_split(labels[pool], cfg.val_fraction, seed=seed, stream=VAL_STREAM)
    rule = (f"test: {test_rule}; val: {percent(cfg.val_fraction)} of each class of the rest; "
            f"seed {seed}")
    return SplitIndices(pool[kept], pool[val], test, rule)


def percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def split_datasets(make: Callable[[np.ndarray, Callable], Dataset], split: SplitIndices, *,
                   train_tf: Callable, eval_tf: Callable,
                   official_test: Dataset | None = None) -> dict[str, Any]:
    """The split fields of a DataBundle (``DataBundle(**split_datasets(...), ...)``).

    ``make(indices, transform)`` builds a dataset over the pool; val and test always get the
    eval transform (no augmentation). ``official_test`` is the test split when the dataset
    brings one; when val is test, both fields hold the same object.
    """
    test = make(split.test, eval_tf) if split.test is not None else official_test
    if test is None:
        raise ValueError("split_datasets: no test split (carve one or pass official_test)")
    val = test if split.val is None else make(split.val, eval_tf)
    return {"train": make(split.train, train_tf), "val": val, "test": test,
            "selection_on_test": split.val is None, "split_rule": split.rule}
