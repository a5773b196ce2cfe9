"""In-memory image datasets: the tensor-backed Dataset, bundled digits and synthetic data."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from bkd_sweep.data.base import DataBundle, register_dataset, rng
from bkd_sweep.data.splits import carve_splits, split_datasets
from bkd_sweep.data.transforms import image_transforms
from bkd_sweep.config import DataConfig


class TensorImageDataset(Dataset):
    """Images [N, C, H, W] (uint8, or float in [0, 1]) and int labels, with a per-sample transform."""

    def __init__(self, images: Tensor, labels: Tensor | np.ndarray,
                 transform: Callable[[Tensor], Tensor]):
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


DIGITS_TEST_FRACTION = 0.2
SYNTHETIC_TEST_FRACTION = 0.2


def tensor_pool(images: Tensor, labels: np.ndarray) -> Callable[[np.ndarray, Callable],
                                                                    TensorImageDataset]:
    """``make(indices, transform)`` over in-memory images, for split_datasets."""
    return lambda idx, tf: TensorImageDataset(images[idx], labels[idx], tf)


@register_dataset("digits")
def build_digits(cfg: DataConfig, *, seed: int, frames: int) -> DataBundle:
    """scikit-learn's bundled 8x8 digits (1,797 images, 0..16 -> [0, 1]); no test split, so
    test is carved first (test_fraction, default 0.2, per class), then val_fraction of the rest.

    Normalized with the train split's mean/std (val and test stay unseen); crop_flip crops
    with 1-px padding but does not mirror (a mirrored digit is not the same digit).
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)  # [N,1,8,8]
    labels = data.target.astype(np.int64)
    split = carve_splits(labels, cfg, seed=seed, name="digits",
                         default_test_fraction=DIGITS_TEST_FRACTION)
    mean, std = (float(images[split.train].mean()),), (float(images[split.train].std()),)
    train_tf, eval_tf = image_transforms("digits", cfg.augment, mean=mean, std=std, native=8,
                                         size=cfg.image_size, hflip=False, pil_ok=False)
    return DataBundle(
        **split_datasets(tensor_pool(images, labels), split, train_tf=train_tf,
                         eval_tf=eval_tf),
        num_classes=10, in_channels=1, image_size=cfg.image_size or 8, is_event=False,
        frames=None, name="digits", class_names=tuple(str(d) for d in range(10)),
        mean=mean, std=std)


SYNTHETIC_PER_CLASS = 48  # 10 test, 4 val, 34 train per class at the default fractions
SYNTHETIC_NOISE = 0.8


def synthetic_prototypes(num_classes: int, size: int, channels: int = 3) -> Tensor:
    """One smooth random pattern per class (4x4 noise upsampled), fixed for a given shape so
    every seed sees the same task. Unit variance per pixel, roughly."""
    gen = torch.Generator().manual_seed(1234)
    coarse = torch.randn(num_classes, channels, 4, 4, generator=gen)
    protos = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return protos / protos.std(dim=(1, 2, 3), keepdim=True)


@register_dataset("synthetic")
def build_synthetic(cfg: DataConfig, *, seed: int, frames: int) -> DataBundle:
    """Learnable class-conditional images: class prototype + Gaussian noise (std 0.8).

    48 samples per class, split like digits: test_fraction (default 0.2) per class, then
    val_fraction of the rest. 3 channels, image_size default 32, num_classes default 10; the
    noise (hence the samples) depends on the data seed, the prototypes do not.
    """
    num_classes = cfg.num_classes or 10
    size = cfg.image_size or 32
    protos = synthetic_prototypes(num_classes, size)
    gen = torch.Generator().manual_seed(int(rng(seed, 3).integers(2**62)))
    labels = torch.arange(num_classes).repeat(SYNTHETIC_PER_CLASS)  # interleaved classes
    noise = torch.randn(len(labels), *protos.shape[1:], generator=gen) * SYNTHETIC_NOISE
    images = protos[labels] + noise
    split = carve_splits(labels.numpy(), cfg, seed=seed, name="synthetic",
                         default_test_fraction=SYNTHETIC_TEST_FRACTION)
    # samples are already standardized: identity normalization, no resize needed
    train_tf, eval_tf = image_transforms("synthetic", cfg.augment, mean=(0.0,) * 3,
                                         std=(1.0,) * 3, native=size, size=None, hflip=True,
                                         pil_ok=False)
    return DataBundle(
        **split_datasets(tensor_pool(images, labels.numpy()), split, train_tf=train_tf,
                         eval_tf=eval_tf),
        num_classes=num_classes, in_channels=3, image_size=size, is_event=False, frames=None,
        name="synthetic", class_names=tuple(f"class_{i}" for i in range(num_classes)),
        mean=(0.0,) * 3, std=(1.0,) * 3)
