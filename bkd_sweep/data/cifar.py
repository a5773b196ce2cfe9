"""CIFAR-10 / CIFAR-100 from the official python pickle batches, read with an unpickler that
only builds plain containers and numpy arrays (a data file must never run code)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bkd_sweep.data.arrays import TensorImageDataset, tensor_pool
from bkd_sweep.data.base import DataBundle, DataError, register_dataset, require_root
from bkd_sweep.data.splits import carve_splits, split_datasets
from bkd_sweep.data.transforms import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD,
                                       image_transforms)
from bkd_sweep.config import DataConfig

_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    *((f"numpy.{core}.multiarray", fn) for core in ("core", "_core")
      for fn in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")
        return super().find_class(module, name)


def load_batch(path: Path, dataset: str) -> dict[str, Any]:
    """One pickle batch as a dict with str keys (files written by Python 2 have bytes keys)."""
    try:
        with open(path, "rb") as f:
            obj = _DataUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
            AttributeError, IndexError) as exc:
        raise DataError(f"{dataset}: {path} is not a CIFAR python pickle batch "
                        f"({exc.__class__.__name__}: {str(exc)[:80]})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{dataset}: {path} holds a {type(obj).__name__}; expected a dict batch")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _arrays(batch: dict[str, Any], path: Path, dataset: str,
            label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{dataset}: {path} lacks 'data' or {label_key!r} "
                        f"(keys: {', '.join(sorted(batch))})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{dataset}: {path}: 'data' is {data.dtype} {data.shape}; "
                        "expected uint8 [N, 3072]")
    if len(data) != len(labels):
        raise DataError(f"{dataset}: {path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def find_folder(root: Path, folder: str, marker: str) -> Path:
    """Accept the extracted folder itself or its parent."""
    return root if (root / marker).exists() else root / folder


def _build(cfg: DataConfig, *, seed: int, name: str, folder: str, train_files: list[str],
           test_file: str, meta_file: str, label_key: str, names_key: str, num_classes: int,
           mean, std) -> DataBundle:
    listed = (f"{train_files[0]}..{train_files[-1]}" if len(train_files) > 1 else train_files[0])
    expected = f"{listed} and {test_file} (python pickle version) under "
    root = require_root(name, cfg.root, expected + str(Path(cfg.root or ".") / folder))
    base = find_folder(root, folder, train_files[0])
    missing = [f for f in train_files + [test_file] if not (base / f).is_file()]
    if missing:
        raise DataError(f"{name}: expected {expected}{base} (missing {', '.join(missing)})")

    def load(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_arrays(load_batch(base / f, name), base / f, name, label_key) for f in files]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    train_x, train_y = load(train_files)
    test_x, test_y = load([test_file])
    for labels, what in ((train_y, "train"), (test_y, "test")):
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"{name}: {base}: {what} labels must be 0..{num_classes - 1}")
    class_names: tuple[str, ...] = ()
    if (base / meta_file).is_file():
        names = load_batch(base / meta_file, name).get(names_key)
        if isinstance(names, list) and len(names) == num_classes:
            class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    train_tf, eval_tf = image_transforms(name, cfg.augment, mean=mean, std=std, native=32,
                                         size=cfg.image_size, hflip=True, pil_ok=True)
    split = carve_splits(train_y, cfg, seed=seed, name=name, default_test_fraction=None)
    test = TensorImageDataset(torch.from_numpy(test_x), test_y, eval_tf)
    return DataBundle(
        **split_datasets(tensor_pool(torch.from_numpy(train_x), train_y), split,
                         train_tf=train_tf, eval_tf=eval_tf, official_test=test),
        num_classes=num_classes, in_channels=3, image_size=cfg.image_size or 32,
        is_event=False, frames=None, name=name, class_names=class_names,
        mean=tuple(mean), std=tuple(std))


@register_dataset("cifar10")
def build_cifar10(cfg: DataConfig, *, seed: int, frames: int) -> DataBundle:
    """CIFAR-10: root is cifar-10-batches-py or its parent. test: the official test batch;
    val: val_fraction (default 0.1) of each class of the 50,000 training images."""
    return _build(cfg, seed=seed, name="cifar10", folder="cifar-10-batches-py",
                  train_files=[f"data_batch_{i}" for i in range(1, 6)], test_file="test_batch",
                  meta_file="batches.meta", label_key="labels", names_key="label_names",
                  num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD)


@register_dataset("cifar100")
def build_cifar100(cfg: DataConfig, *, seed: int, frames: int) -> DataBundle:
    """CIFAR-100 (fine labels): root is cifar-100-python or its parent. test: the official
    test file; val: val_fraction (default 0.1) of each fine class of the training file."""
    return _build(cfg, seed=seed, name="cifar100", folder="cifar-100-python", train_files=["train"],
                  test_file="test", meta_file="meta", label_key="fine_labels",
                  names_key="fine_label_names", num_classes=100, mean=CIFAR100_MEAN,
                  std=CIFAR100_STD)
