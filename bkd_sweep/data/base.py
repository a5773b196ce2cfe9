"""The dataset registry, the DataBundle a trial receives, and the helpers every dataset shares:
one-line DataError, seeded stratified splits and seeded subsampling (carving the three splits
is in splits.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from bkd_sweep.registry import Registry, UnknownNameError
from bkd_sweep.config import DataConfig
from bkd_sweep.config.names import BUNDLED_DATASETS


class DataError(Exception):
    """Data that is missing or malformed: one line saying what was expected where."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass
class DataBundle:
    """What a trial needs to know about its data: the three splits and their geometry.

    val drives selection (pruning, the search objective, the checkpoint); test is evaluated
    once, on the selected weights. Both use the eval transform. When ``selection_on_test``,
    val IS test (data.val_fraction 0, the papers' practice) and results must say so.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int  # side of the square samples after transforms
    is_event: bool  # True: samples are [frames, C, H, W]; False: [C, H, W]
    frames: int | None  # frames per event sample (None for images)
    name: str
    class_names: tuple[str, ...] = ()
    selection_on_test: bool = False
    split_rule: str = ""  # one line saying how the splits were made, for captions and logs
    # the normalization the inputs carry (per channel); None: raw values (event counts)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


DatasetBuilder = Callable[..., DataBundle]
DATASETS: Registry[DataBundle] = Registry("dataset")


def register_dataset(name: str, *, needs_root: bool | None = None
                     ) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Register ``builder(cfg: DataConfig, *, seed: int, frames: int) -> DataBundle``.

    ``frames`` is the frame count event datasets integrate into; image datasets ignore it.
    Limits (limit_train / limit_val / limit_test) are applied by ``build_data``.
    ``needs_root``: the dataset reads a local copy at ``data.root`` (False: it ships with the
    code or is generated, and ignores the root; None: False for the names in
    ``bkd_sweep.config.names.BUNDLED_DATASETS``, else True).
    """
    if needs_root is None:
        needs_root = name not in BUNDLED_DATASETS
    return DATASETS.register(name, needs_root=needs_root)


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_needs_root(name: str) -> bool:
    """Whether a dataset reads ``data.root`` (an unknown name is assumed to)."""
    return DATASETS.info(name)["needs_root"] if name in DATASETS else True


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
    sizes = {split: len(getattr(bundle, split)) for split in ("train", "val", "test")}
    if 0 in sizes.values():
        counts = ", ".join(f"{split} {n}" for split, n in sizes.items())
        raise DataError(f"{cfg.dataset}: empty split ({counts} samples); a class needs two "
                        "samples before one can be held out")
    limit_splits(bundle, cfg, seed=seed)
    return bundle


def limit_splits(bundle: DataBundle, cfg: DataConfig, *, seed: int) -> None:
    """Seeded subsets per split. When val is test, one subset serves both (capped by the
    smaller of limit_val and limit_test), so selection and report still see the same set."""
    bundle.train = limit(bundle.train, cfg.limit_train, seed=seed, stream=1)
    if bundle.selection_on_test:
        caps = [k for k in (cfg.limit_val, cfg.limit_test) if k is not None]
        bundle.test = bundle.val = limit(bundle.test, min(caps, default=None), seed=seed,
                                         stream=2)
        return
    bundle.val = limit(bundle.val, cfg.limit_val, seed=seed, stream=2)
    bundle.test = limit(bundle.test, cfg.limit_test, seed=seed, stream=3)


# --------------------------------------------------------------------------------------
# Shared helpers


def rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per (seed, purpose), so a split never shifts a subsample."""
    return np.random.default_rng([seed % 2**32, stream])


def stratified_split(labels: Sequence[int] | np.ndarray, fraction: float, *, seed: int,
                     stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-class seeded split: round(n_c * fraction) of each class (Python's round, half to
    even; at least one and at most n_c - 1 when the class has two or more samples, none from
    a single-sample class) are held out. Returns sorted (kept, held_out) index arrays."""
    labels = np.asarray(labels)
    gen = rng(seed, stream)
    kept, held = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[gen.permutation(len(idx))]
        n_held = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        else:
            n_held = 0
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


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
