"""The dataset registry, the DataBundle a trial receives, and the helpers every dataset shares:
one-line DataError, seeded stratified splits and seeded subsampling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from bkd_sweep.registry import Registry, UnknownNameError
from bkd_sweep.config import DataConfig


class DataError(Exception):
    """Data that is missing or malformed: one line saying what was expected where."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass
class DataBundle:
    """What a trial needs to know about its data: the two splits and their geometry."""

    train: Dataset
    val: Dataset
    num_classes: int
    in_channels: int
    image_size: int  # side of the square samples after transforms
    is_event: bool  # True: samples are [frames, C, H, W]; False: [C, H, W]
    frames: int | None  # frames per event sample (None for images)
    name: str
    class_names: tuple[str, ...] = ()


DatasetBuilder = Callable[..., DataBundle]
DATASETS: Registry[DataBundle] = Registry("dataset")


def register_dataset(name: str) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Register ``builder(cfg: DataConfig, *, seed: int, frames: int) -> DataBundle``.

    ``frames`` is the frame count event datasets integrate into; image datasets ignore it.
    Limits (limit_train / limit_val) are applied by ``build_data``, not by the builder.
    """
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def build_data(cfg: DataConfig, *, seed: int, timesteps: int = 4) -> DataBundle:
    """Build the configured dataset (offline, never downloads). Raises DataError on any fault."""
    try:
        builder = DATASETS.get(cfg.dataset)
    except UnknownNameError as exc:
        raise DataError(str(exc)) from None
    frames = cfg.frames or timesteps
    bundle = builder(cfg, seed=seed, frames=frames)
    if cfg.num_classes is not None and cfg.num_classes != bundle.num_classes:
        raise DataError(f"{cfg.dataset}: data.num_classes is {cfg.num_classes} but the data "
                        f"has {bundle.num_classes} classes (num_classes is for synthetic data)")
    if len(bundle.train) == 0 or len(bundle.val) == 0:
        raise DataError(f"{cfg.dataset}: empty split (train {len(bundle.train)}, "
                        f"val {len(bundle.val)} samples)")
    bundle.train = limit(bundle.train, cfg.limit_train, seed=seed, stream=1)
    bundle.val = limit(bundle.val, cfg.limit_val, seed=seed, stream=2)
    return bundle


# --------------------------------------------------------------------------------------
# Shared helpers


def rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per (seed, purpose), so a split never shifts a subsample."""
    return np.random.default_rng([seed % 2**32, stream])


def stratified_split(labels: Sequence[int] | np.ndarray, val_fraction: float, *,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class seeded split: round(n_c * val_fraction) of each class (at least one when the
    class has two or more samples) go to val. Returns sorted (train, val) index arrays."""
    labels = np.asarray(labels)
    gen = rng(seed, 0)
    train, val = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[gen.permutation(len(idx))]
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        else:
            n_val = 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def limit(dataset: Dataset, k: int | None, *, seed: int, stream: int) -> Dataset:
    """The first k samples of a seeded permutation (the dataset itself when k is None or >= n)."""
    n = len(dataset)  # type: ignore[arg-type]
    if k is None or k >= n:
        return dataset
    keep = np.sort(rng(seed, 10 + stream).permutation(n)[:k])
    return Subset(dataset, keep.tolist())


def first_samples(dataset: Dataset, count: int) -> torch.Tensor:
    """The first ``count`` inputs of a split, stacked (what energy is measured on)."""
    return torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])


def require_root(name: str, root: str | None, expected: str) -> Path:
    """The configured root as a Path; DataError naming what is expected when unset or absent."""
    if not root:
        raise DataError(f"{name}: data.root is not set; expected {expected}")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{name}: data root {path} does not exist; expected {expected}")
    return path
