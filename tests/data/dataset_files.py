"""Writers of tiny datasets in their real on-disk formats, for tests of any stage.

Each writer puts files under ``root`` exactly where the real download would, returns the
path a user would give as ``data.root``, and is deterministic (labels cycle 0, 1, 2, ...,
pixels come from ``seed``), so tests can hand-compute what a loader must yield.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def cifar_images(n: int, seed: int = 0) -> np.ndarray:
    """n random uint8 CIFAR rows [n, 3072] (channel-major 3x32x32, as in the pickles)."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, n_train: int = 20, n_test: int = 10, *, seed: int = 0) -> Path:
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}; returns root.

    Train image i (in batch order) has label i % 10 and pixels cifar_images(n_train, seed)[i];
    test image i has label i % 10 and pixels cifar_images(n_test, seed + 1)[i].
    """
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    train = cifar_images(n_train, seed)
    labels = [i % 10 for i in range(n_train)]
    for b, part in enumerate(np.array_split(np.arange(n_train), 5)):
        _dump(base / f"data_batch_{b + 1}",
              {"batch_label": f"training batch {b + 1} of 5", "data": train[part],
               "labels": [labels[i] for i in part],
               "filenames": [f"img_{i}.png" for i in part]})
    _dump(base / "test_batch", {"batch_label": "testing batch 1 of 1",
                                "data": cifar_images(n_test, seed + 1),
                                "labels": [i % 10 for i in range(n_test)],
                                "filenames": [f"test_{i}.png" for i in range(n_test)]})
    _dump(base / "batches.meta", {"label_names": list(CIFAR10_CLASSES),
                                  "num_cases_per_batch": max(1, n_train // 5), "num_vis": 3072})
    return Path(root)


def write_cifar100(root: Path, n_train: int = 20, n_test: int = 10, *, seed: int = 0) -> Path:
    """root/cifar-100-python/{train, test, meta}; fine label of image i is i % 100
    (coarse i % 20); pixels as in write_cifar10. Returns root."""
    base = Path(root) / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    for name, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        _dump(base / name, {"batch_label": name, "data": cifar_images(n, s),
                            "fine_labels": [i % 100 for i in range(n)],
                            "coarse_labels": [i % 20 for i in range(n)],
                            "filenames": [f"{name}_{i}.png" for i in range(n)]})
    _dump(base / "meta", {"fine_label_names": [f"fine_{i}" for i in range(100)],
                          "coarse_label_names": [f"coarse_{i}" for i in range(20)]})
    return Path(root)


def idx_bytes(array: np.ndarray) -> bytes:
    """An uint8 array in idx format: magic 0x0000 08 <ndim>, big-endian int32 dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def mnist_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def write_mnist(root: Path, n_train: int = 20, n_test: int = 10, *, gz: bool = False,
                fashion: bool = False, seed: int = 0) -> Path:
    """root/MNIST/raw (root/FashionMNIST/raw when fashion) with the four idx files, gzipped
    when gz. Label of image i is i % 10; pixels mnist_images(n_train, seed), (n_test, seed+1).
    Returns the raw folder."""
    raw = Path(root) / ("FashionMNIST" if fashion else "MNIST") / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": mnist_images(n_train, seed),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": mnist_images(n_test, seed + 1),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, array in files.items():
        blob = idx_bytes(array)
        if gz:
            with gzip.open(raw / f"{name}.gz", "wb") as f:
                f.write(blob)
        else:
            (raw / name).write_bytes(blob)
    return raw


def write_image_folder(root: Path, classes: Sequence[str] = ("n01440764", "n01443537",
                                                              "n01484850"),
                       n_train: int = 3, n_val: int = 2, *, size: int = 20,
                       fmt: str = "JPEG", val_classes: Sequence[str] | None = None,
                       seed: int = 0) -> Path:
    """root/train/<class>/<i>.<fmt> and root/val/<class>/<i>.<fmt>: n_train / n_val RGB
    images of size x size per class (val only for val_classes, default all). Returns root."""
    from PIL import Image

    gen = np.random.default_rng(seed)
    ext = {"JPEG": "JPEG", "PNG": "png"}[fmt]
    for split, n, names in (("train", n_train, classes), ("val", n_val, val_classes or classes)):
        for cls in names:
            folder = Path(root) / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = gen.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{cls}_{i}.{ext}", format=fmt)
    return Path(root)


def write_event_file(path: Path, t: Sequence[int], x: Sequence[int], y: Sequence[int],
                     p: Sequence[int]) -> Path:
    """One sample as spikingjelly stores it: an .npz with arrays t, x, y, p."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, t=np.asarray(t, np.int64), x=np.asarray(x, np.int32),
             y=np.asarray(y, np.int32), p=np.asarray(p, np.int8))
    return path


def write_cifar10_dvs(root: Path, n_per_class: int = 4, *, n_events: int = 64,
                      classes: Sequence[str] = CIFAR10_CLASSES, seed: int = 0) -> Path:
    """root/events_np/<class>/<n>.npz, n = 0..n_per_class-1 per class: n_events random events
    on the 128x128 sensor, time-sorted, polarity 0/1. Returns root."""
    gen = np.random.default_rng(seed)
    for cls in classes:
        for n in range(n_per_class):
            write_event_file(Path(root) / "events_np" / cls / f"{n}.npz",
                             t=np.sort(gen.integers(0, 10**6, n_events)),
                             x=gen.integers(0, 128, n_events), y=gen.integers(0, 128, n_events),
                             p=gen.integers(0, 2, n_events))
    return Path(root)
