"""Per-sample transforms: tensor pipelines for in-memory images and event frames, and the
PIL pipeline for ImageFolder data. Train and val differ only in the random parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from bkd_sweep.data.base import DataError
from bkd_sweep.config import AugmentConfig

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def crop_padding(side: int) -> int:
    """Random-crop padding: side / 8, i.e. CIFAR's pad-4 at 32 px, 1 px for 8x8 digits."""
    return max(1, round(side / 8))


def random_crop_flip(x: Tensor, pad: int, hflip: bool) -> Tensor:
    """Zero-pad the last two dims by ``pad``, crop back at a random offset, maybe mirror.

    Works on [C, H, W] and [T, C, H, W] alike: every frame of an event sample moves together.
    """
    h, w = x.shape[-2:]
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
        x = padded[..., top:top + h, left:left + w]
    if hflip and bool(torch.rand(()) < 0.5):
        x = x.flip(-1)
    return x.contiguous()


def make_randaugment(spec: str, side: int, mean: tuple[float, ...]) -> Callable:
    """timm's RandAugment on PIL images; fill colour is the dataset mean (as timm does)."""
    from timm.data import rand_augment_transform

    fill = tuple(round(255 * m) for m in mean)
    hparams = {"translate_const": max(1, int(side * 0.45)),
               "img_mean": fill if len(fill) > 1 else fill[0]}
    try:
        transform = rand_augment_transform(spec, hparams)
    except (AssertionError, KeyError, ValueError, IndexError) as exc:
        raise DataError(f"augment.randaugment: invalid spec {spec!r} ({exc.__class__.__name__}); "
                        "expected a timm spec such as 'rand-m9-mstd0.5-inc1'") from None
    for op in transform.ops:
        if op.name.startswith("Posterize"):
            op.aug_fn = safe_posterize
    return transform


def safe_posterize(img, bits_to_keep: int, **_):
    """Posterize that accepts 0 bits (a black image, as Pillow < 13 did): timm's
    PosterizeIncreasing asks for 0 bits at magnitude 10, which Pillow 13 rejects, so
    'rand-m9-mstd0.5-inc1' would crash a run now and then."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def make_erasing(probability: float, mode: str = "pixel") -> Callable | None:
    """timm's RandomErasing on one normalized sample; None when the probability is 0."""
    if probability <= 0:
        return None
    from timm.data.random_erasing import RandomErasing

    return RandomErasing(probability=probability, mode=mode, device="cpu")


@dataclass
class ImageTransform:
    """uint8 or [0, 1] float image [C, H, W] -> normalized float [C, size, size].

    Order: RandAugment (on PIL, uint8 only), to float, resize, pad-crop / flip, normalize,
    random erasing. The val transform is the same object with the random parts off.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int | None = None
    crop_pad: int = 0
    hflip: bool = False
    randaugment: Callable | None = None
    erasing: Callable | None = None

    def __call__(self, img: Tensor) -> Tensor:
        if self.randaugment is not None:
            from torchvision.transforms.functional import pil_to_tensor, to_pil_image

            img = pil_to_tensor(self.randaugment(to_pil_image(img)))
        x = img.float().div_(255.0) if img.dtype == torch.uint8 else img.float()
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=True)[0]
        if self.crop_pad or self.hflip:
            x = random_crop_flip(x, self.crop_pad, self.hflip)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        x = (x - mean) / std
        if self.erasing is not None:
            x = self.erasing(x)
        return x


def image_transforms(name: str, aug: AugmentConfig, *, mean: tuple[float, ...],
                     std: tuple[float, ...], native: int, size: int | None, hflip: bool,
                     pil_ok: bool) -> tuple[ImageTransform, ImageTransform]:
    """(train, val) transforms for an in-memory image dataset.

    ``hflip`` says whether mirroring preserves the class (not for digits); ``pil_ok`` whether
    samples are uint8 images RandAugment can take.
    """
    side = size or native
    randaugment = None
    if aug.randaugment:
        if not pil_ok:
            raise DataError(f"{name}: augment.randaugment needs uint8 images (mnist, cifar, "
                            "imagenet); this dataset supports crop_flip and random_erasing")
        randaugment = make_randaugment(aug.randaugment, native, mean)
    train = ImageTransform(mean, std, size=size,
                           crop_pad=crop_padding(side) if aug.crop_flip else 0,
                           hflip=aug.crop_flip and hflip, randaugment=randaugment,
                           erasing=make_erasing(aug.random_erasing))
    val = ImageTransform(mean, std, size=size)
    return train, val


@dataclass
class EventTransform:
    """Integrated frames [T, 2, 128, 128] (counts) -> [T, 2, size, size].

    Downsampling averages each size x size cell (area pooling). Augmentation moves every
    frame together; random erasing blanks one box across all frames (zeros = no events).
    """

    size: int | None = None
    crop_pad: int = 0
    hflip: bool = False
    erasing: Callable | None = None

    def __call__(self, frames: Tensor) -> Tensor:
        x = frames.float()
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        if self.crop_pad or self.hflip:
            x = random_crop_flip(x, self.crop_pad, self.hflip)
        if self.erasing is not None:
            t, c, h, w = x.shape
            x = self.erasing(x.reshape(t * c, h, w)).reshape(t, c, h, w)
        return x


def event_transforms(name: str, aug: AugmentConfig, *, native: int,
                     size: int | None) -> tuple[EventTransform, EventTransform]:
    if aug.randaugment:
        raise DataError(f"{name}: augment.randaugment needs images; event data supports "
                        "crop_flip and random_erasing")
    side = size or native
    train = EventTransform(size=size, crop_pad=crop_padding(side) if aug.crop_flip else 0,
                           hflip=aug.crop_flip, erasing=make_erasing(aug.random_erasing, "const"))
    return train, EventTransform(size=size)


def folder_transforms(aug: AugmentConfig, size: int) -> tuple[Callable, Callable]:
    """ImageNet-style PIL pipelines: RandomResizedCrop + flip (+ RandAugment, erasing) for
    train; resize to size/0.875 (256 for 224) + center crop for val."""
    from torchvision import transforms as T

    train_ops: list[Callable] = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    if aug.randaugment:
        train_ops.append(make_randaugment(aug.randaugment, size, IMAGENET_MEAN))
    train_ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    erasing = make_erasing(aug.random_erasing)
    if erasing is not None:
        train_ops.append(erasing)
    val_ops = [T.Resize(int(round(size / 0.875))), T.CenterCrop(size), T.ToTensor(),
               T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(train_ops), T.Compose(val_ops)
