"""Event-camera data: integrating an event stream into frames, and CIFAR10-DVS in
spikingjelly's on-disk layout (root/events_np/<class>/<n>.npz with arrays t, x, y, p)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bkd_sweep.data.base import DataBundle, DataError, register_dataset, require_root
from bkd_sweep.data.splits import carve_splits, split_datasets
from bkd_sweep.data.transforms import event_transforms
from bkd_sweep.config import DataConfig

EVENT_KEYS = ("t", "x", "y", "p")
DVS_SENSOR = 128  # CIFAR10-DVS: 128 x 128 pixels
DVS_TEST_FRACTION = 0.1  # the usual 9:1 per-class split, unless data.test_fraction is set


def integrate_by_count(x: np.ndarray, y: np.ndarray, p: np.ndarray, *, frames: int,
                       height: int, width: int) -> np.ndarray:
    """Split the stream into ``frames`` chunks of equal event count and count events per
    (polarity, y, x) in each: F[j, p, y, x] = #{i in chunk j : (p_i, y_i, x_i) = (p, y, x)}.

    Chunk j holds events [j * (N // frames), (j + 1) * (N // frames)); the last chunk also
    takes the remainder (spikingjelly's split_by='number'). Polarity > 0 is channel 1.
    Returns float32 [frames, 2, height, width].
    """
    n = len(x)
    step = n // frames
    if step == 0:  # fewer events than frames: everything lands in the last frame
        chunk = np.full(n, frames - 1, dtype=np.int64)
    else:
        chunk = np.minimum(np.arange(n, dtype=np.int64) // step, frames - 1)
    channel = (np.asarray(p) > 0).astype(np.int64)
    flat = ((chunk * 2 + channel) * height + np.asarray(y, np.int64)) * width \
        + np.asarray(x, np.int64)
    counts = np.bincount(flat, minlength=frames * 2 * height * width)
    return counts.reshape(frames, 2, height, width).astype(np.float32)


def load_events(path: Path, name: str = "cifar10_dvs") -> dict[str, np.ndarray]:
    """The t, x, y, p arrays of one .npz sample, checked for shape and sensor range."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in EVENT_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{name}: {path} lacks arrays {', '.join(missing)}; expected "
                                "t, x, y, p")
            events = {k: np.asarray(z[k]).reshape(-1) for k in EVENT_KEYS}
    except (OSError, ValueError, TypeError, AttributeError, zipfile.BadZipFile,
            EOFError) as exc:
        raise DataError(f"{name}: {path} is not a readable .npz of events "
                        f"({exc.__class__.__name__})") from None
    lengths = {len(v) for v in events.values()}
    if len(lengths) != 1:
        raise DataError(f"{name}: {path}: arrays t, x, y, p differ in length")
    for key in ("x", "y"):
        v = events[key]
        if len(v) and (v.min() < 0 or v.max() >= DVS_SENSOR):
            raise DataError(f"{name}: {path}: {key} outside 0..{DVS_SENSOR - 1}")
    return events


class EventFrameDataset(Dataset):
    """Event files integrated into [frames, 2, 128, 128] on access, then transformed."""

    def __init__(self, files: list[Path], labels: np.ndarray, frames: int,
                 transform: Callable[[Tensor], Tensor]):
        self.files = files
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.frames = frames
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        ev = load_events(self.files[index])
        frames = integrate_by_count(ev["x"], ev["y"], ev["p"], frames=self.frames,
                                    height=DVS_SENSOR, width=DVS_SENSOR)
        return self.transform(torch.from_numpy(frames)), int(self.labels[index])


def _sample_key(path: Path) -> tuple[int, str]:
    return (int(path.stem) if path.stem.isdigit() else 1 << 62, path.name)


@register_dataset("cifar10_dvs")
def build_cifar10_dvs(cfg: DataConfig, *, seed: int, frames: int) -> DataBundle:
    """CIFAR10-DVS frames: classes are the sorted folder names. No test split ships, so test
    is carved first (test_fraction, default 0.1: the usual 9:1), then val_fraction (default
    0.1) of the rest, per class. No caching: frames are integrated per access.
    """
    name = "cifar10_dvs"
    expected = f"events_np/<class>/<n>.npz (arrays t, x, y, p) under {cfg.root}"
    root = require_root(name, cfg.root, expected)
    base = root if root.name == "events_np" else root / "events_np"
    if not base.is_dir():
        raise DataError(f"{name}: expected events_np/<class>/<n>.npz (arrays t, x, y, p) "
                        f"under {root}")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir())
    files: list[Path] = []
    labels: list[int] = []
    for idx, cls in enumerate(classes):
        found = sorted((base / cls).glob("*.npz"), key=_sample_key)
        if not found:
            raise DataError(f"{name}: expected <n>.npz event files under {base / cls}")
        load_events(found[0], name)  # fail early on a malformed layout, not in a worker
        files += found
        labels += [idx] * len(found)
    if len(classes) < 2:
        raise DataError(f"{name}: expected one folder per class under {base} "
                        f"(found {len(classes)})")
    split = carve_splits(labels, cfg, seed=seed, name=name,
                         default_test_fraction=DVS_TEST_FRACTION)
    train_tf, eval_tf = event_transforms(name, cfg.augment, native=DVS_SENSOR,
                                         size=cfg.image_size)
    label_arr = np.asarray(labels, dtype=np.int64)

    def make(idx: np.ndarray, tf: Callable) -> EventFrameDataset:
        return EventFrameDataset([files[i] for i in idx], label_arr[idx], frames, tf)

    return DataBundle(
        **split_datasets(make, split, train_tf=train_tf, eval_tf=eval_tf),
        num_classes=len(classes), in_channels=2, image_size=cfg.image_size or DVS_SENSOR,
        is_event=True, frames=frames, name=name, class_names=tuple(classes))
