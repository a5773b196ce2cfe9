"""MNIST and Fashion-MNIST from torchvision's on-disk raw idx files (plain or .gz)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from bkd_sweep.data.arrays import TensorImageDataset, tensor_pool
from bkd_sweep.data.base import DataBundle, DataError, register_dataset, require_root
from bkd_sweep.data.splits import carve_splits, split_datasets
from bkd_sweep.data.transforms import (FASHION_MEAN, FASHION_STD, MNIST_MEAN, MNIST_STD,
                                       image_transforms)
from bkd_sweep.config import DataConfig

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path, ndim: int, dataset: str) -> np.ndarray:
    """An idx file of unsigned bytes (magic 0x0000 08 <ndim>, big-endian int32 dims)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            blob = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{dataset}: cannot read {path} ({exc.__class__.__name__})") from None
    expected = f"an idx{ndim}-ubyte file"
    if len(blob) < 4 + 4 * ndim:
        raise DataError(f"{dataset}: {path} is truncated; expected {expected}")
    magic = int.from_bytes(blob[:4], "big")
    if magic != 0x0800 + ndim:
        raise DataError(f"{dataset}: {path} has magic 0x{magic:08x}; expected {expected} "
                        f"(magic 0x{0x0800 + ndim:08x})")
    dims = [int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = blob[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{dataset}: {path} holds {len(body)} bytes of data but its header "
                        f"says {'x'.join(map(str, dims))}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def find_raw_dir(dataset: str, root: Path, folder: str) -> Path:
    """root/<folder>/raw, root/raw or root itself: the first holding the training images."""
    for cand in (root / folder / "raw", root / "raw", root):
        if any((cand / (IDX_FILES["train_images"] + ext)).exists() for ext in ("", ".gz")):
            return cand
    names = ", ".join(IDX_FILES.values())
    raise DataError(f"{dataset}: expected {names} (optionally .gz) under {root / folder / 'raw'}")


def idx_path(dataset: str, raw: Path, key: str) -> Path:
    for ext in ("", ".gz"):
        path = raw / (IDX_FILES[key] + ext)
        if path.exists():
            return path
    raise DataError(f"{dataset}: expected {IDX_FILES[key]} (or .gz) under {raw}")


def _build(cfg: DataConfig, *, seed: int, name: str, folder: str, mean, std, classes) -> DataBundle:
    root = require_root(name, cfg.root, f"{folder}/raw/{IDX_FILES['train_images']} etc. "
                                        f"under {cfg.root}")
    raw = find_raw_dir(name, root, folder)
    arrays = {}
    for key in IDX_FILES:
        arrays[key] = read_idx(idx_path(name, raw, key), 3 if "images" in key else 1, name)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(f"{name}: {raw}: {split} has {len(images)} images but "
                            f"{len(labels)} labels")
        if len(labels) and labels.max() >= 10:
            raise DataError(f"{name}: {raw}: {split} labels must be 0..9 (found {labels.max()})")
    side = arrays["train_images"].shape[-1]
    train_tf, eval_tf = image_transforms(name, cfg.augment, mean=mean, std=std, native=side,
                                         size=cfg.image_size, hflip=name == "fashion_mnist",
                                         pil_ok=True)

    def images_labels(part: str) -> tuple[torch.Tensor, np.ndarray]:
        images = torch.from_numpy(arrays[f"{part}_images"].copy()).unsqueeze(1)
        return images, arrays[f"{part}_labels"].astype(np.int64)

    train_images, train_labels = images_labels("train")
    split = carve_splits(train_labels, cfg, seed=seed, name=name, default_test_fraction=None)
    test = TensorImageDataset(*images_labels("test"), eval_tf)
    return DataBundle(**split_datasets(tensor_pool(train_images, train_labels), split,
                                       train_tf=train_tf, eval_tf=eval_tf, official_test=test),
                      num_classes=10, in_channels=1, image_size=cfg.image_size or side,
                      is_event=False, frames=None, name=name, class_names=classes,
                      mean=tuple(mean), std=tuple(std))


@register_dataset("mnist")
def build_mnist(cfg: DataConfig, *, seed: int, frames: int) -> DataBundle:
    """MNIST. test: the official t10k files; val: val_fraction (default 0.1) of each class of
    the 60,000 training images. crop_flip crops but never mirrors digits."""
    return _build(cfg, seed=seed, name="mnist", folder="MNIST", mean=MNIST_MEAN, std=MNIST_STD,
                  classes=tuple(str(d) for d in range(10)))


@register_dataset("fashion_mnist")
def build_fashion_mnist(cfg: DataConfig, *, seed: int, frames: int) -> DataBundle:
    """Fashion-MNIST. test: the official t10k files; val: val_fraction (default 0.1) of each
    class of the training images."""
    return _build(cfg, seed=seed, name="fashion_mnist", folder="FashionMNIST", mean=FASHION_MEAN,
                  std=FASHION_STD, classes=FASHION_CLASSES)
