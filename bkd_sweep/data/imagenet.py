"""ImageNet (or any ImageFolder tree): root/train/<wnid>/*.JPEG and root/val/<wnid>/*.

ImageNet's test labels are not public, so its val folder serves as the test split and val is
carved from train."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import Tensor
from torch.utils.data import Dataset

from bkd_sweep.data.base import DataBundle, DataError, register_dataset, require_root
from bkd_sweep.data.splits import carve_splits, split_datasets
from bkd_sweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD, folder_transforms
from bkd_sweep.config import DataConfig


class FolderDataset(Dataset):
    """(path, label) samples decoded with PIL (RGB) and transformed on access."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable):
        self.samples = samples
        self.labels = [label for _, label in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from torchvision.datasets.folder import pil_loader

        path, label = self.samples[index]
        try:
            image = pil_loader(path)
        except OSError as exc:
            raise DataError(f"imagenet: cannot decode {path} ({exc.__class__.__name__})") from None
        return self.transform(image), label


def scan_split(name: str, split_dir: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """Images under split_dir/<class>/ for the known classes (extra folders are an error)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    extra = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and d.name not in class_to_idx)
    if extra:
        raise DataError(f"{name}: {split_dir} has class folders missing from train: "
                        f"{', '.join(extra[:5])}")
    samples = make_dataset(str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS,
                           allow_empty=True)
    if not samples:
        raise DataError(f"{name}: no images ({', '.join(IMG_EXTENSIONS)}) under "
                        f"{split_dir}/<class>/")
    return samples


@register_dataset("imagenet")
def build_imagenet(cfg: DataConfig, *, seed: int, frames: int) -> DataBundle:
    """ImageFolder train/val; classes are train's sorted folder names. test: the val folder;
    val: val_fraction (default 0.1) of each class of the train folder, eval-transformed.

    Train always uses RandomResizedCrop(image_size or 224) + flip (the standard recipe), plus
    RandAugment / random erasing when configured; val resizes to size/0.875 and center-crops.
    """
    name = "imagenet"
    expected = f"train/<wnid>/*.JPEG and val/<wnid>/* under {cfg.root}"
    root = require_root(name, cfg.root, expected)
    train_dir, val_dir = root / "train", root / "val"
    for split_dir in (train_dir, val_dir):
        if not split_dir.is_dir():
            raise DataError(f"{name}: expected {split_dir.name}/<wnid>/* under {root} "
                            f"({split_dir} not found)")
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{name}: expected class folders train/<wnid>/ under {root}")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    size = cfg.image_size or 224
    train_tf, eval_tf = folder_transforms(cfg.augment, size)
    samples = scan_split(name, train_dir, class_to_idx)
    split = carve_splits([label for _, label in samples], cfg, seed=seed, name=name,
                         default_test_fraction=None)
    test = FolderDataset(scan_split(name, val_dir, class_to_idx), eval_tf)
    return DataBundle(
        **split_datasets(lambda idx, tf: FolderDataset([samples[i] for i in idx], tf), split,
                         train_tf=train_tf, eval_tf=eval_tf, official_test=test),
        num_classes=len(classes), in_channels=3, image_size=size, is_event=False, frames=None,
        name=name, class_names=tuple(classes), mean=IMAGENET_MEAN, std=IMAGENET_STD)
