"""Each on-disk format, written for real by tests/data/dataset_files.py, loaded via build_data."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bkd_sweep.data import DataError, build_data, list_datasets, make_loaders
from bkd_sweep.data.transforms import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD
from bkd_sweep.config import DataConfig


def labels_of(dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


def test_registry_lists_every_dataset_and_unknown_names_list_valid_ones():
    assert set(list_datasets()) >= {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100",
                                    "imagenet", "cifar10_dvs", "synthetic"}
    with pytest.raises(DataError, match="did you mean 'cifar10'.*valid: .*digits"):
        build_data(DataConfig(dataset="cifar1"), seed=0)


# ---------------------------------------------------------------------------- digits


# sklearn's digits per class, and round(0.2 n_c) of each for test, then round(0.1 x rest) for val
DIGITS_PER_CLASS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
DIGITS_TEST = [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]  # 35.6, 36.4, 35.4, 36.6, 36.2 ...
DIGITS_VAL = [14, 15, 14, 15, 14, 15, 14, 14, 14, 14]  # 14.2, 14.6, ...; 14.5 -> 14 (half even)


def test_digits_split_is_stratified_and_seeded():
    bundle = build_data(DataConfig(), seed=0)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (10, 1, 8)
    assert not bundle.is_event and bundle.frames is None
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (1295, 143, 359)
    x, y = bundle.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    counts = {split: [Counter(getattr(bundle, split).labels.tolist())[c] for c in range(10)]
              for split in ("train", "val", "test")}
    assert counts["test"] == DIGITS_TEST and counts["val"] == DIGITS_VAL
    assert counts["train"] == [n - t - v for n, t, v in zip(DIGITS_PER_CLASS, DIGITS_TEST,
                                                            DIGITS_VAL)]
    # normalized with the train split's statistics: val and test never shape the inputs
    train = bundle.train.transform(bundle.train.images)
    assert abs(float(train.mean())) < 1e-4 and abs(float(train.std()) - 1) < 1e-3
    assert bundle.test.transform.mean == bundle.train.transform.mean == \
        (float(bundle.train.images.mean()),)

    same = build_data(DataConfig(), seed=0)
    other = build_data(DataConfig(), seed=1)  # another data seed is another split
    assert torch.equal(same.val.images, bundle.val.images)
    assert torch.equal(same.test.images, bundle.test.images)
    assert not torch.equal(other.val.images, bundle.val.images)


def test_limits_take_a_seeded_subset():
    cfg = DataConfig(limit_train=50, limit_val=7, limit_test=9)
    a, b = build_data(cfg, seed=3), build_data(cfg, seed=3)
    c = build_data(cfg, seed=4)
    assert (len(a.train), len(a.val), len(a.test)) == (50, 7, 9)
    assert a.train.indices == b.train.indices and a.test.indices == b.test.indices
    assert a.train.indices != c.train.indices


def test_digits_crop_flip_moves_pixels_but_keeps_shape():
    cfg = DataConfig(augment={"crop_flip": True}, image_size=16)
    bundle = build_data(cfg, seed=0)
    torch.manual_seed(0)
    train_views = torch.stack([bundle.train[0][0] for _ in range(8)])
    assert train_views.shape == (8, 1, 16, 16) and bundle.image_size == 16
    assert not all(torch.equal(train_views[0], v) for v in train_views[1:])
    assert torch.equal(bundle.val[0][0], bundle.val[0][0])  # val is deterministic


def test_randaugment_on_non_pil_dataset_is_a_data_error():
    with pytest.raises(DataError, match="digits: augment.randaugment"):
        build_data(DataConfig(augment={"randaugment": "rand-m9-mstd0.5"}), seed=0)


# ---------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_learnable():
    cfg = DataConfig(dataset="synthetic", num_classes=4, image_size=12)
    bundle = build_data(cfg, seed=0)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (4, 3, 12)
    # 48 per class: test round(9.6) = 10, val round(0.1 x 38) = 4, train 34
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (4 * 34, 4 * 4, 4 * 10)
    assert Counter(bundle.train.labels.tolist()) == {c: 34 for c in range(4)}
    assert torch.equal(build_data(cfg, seed=0).train.images, bundle.train.images)
    assert not torch.equal(build_data(cfg, seed=1).train.images, bundle.train.images)
    # nearest class mean (fit on train) classifies test almost perfectly
    flat = bundle.train.images.flatten(1)
    means = torch.stack([flat[bundle.train.labels == c].mean(0) for c in range(4)])
    pred = torch.cdist(bundle.test.images.flatten(1), means).argmin(1)
    assert (pred == bundle.test.labels).float().mean() > 0.9


# ---------------------------------------------------------------------------- mnist


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_plain_and_gz(tmp_path: Path, gz: bool, dataset_files):
    dataset_files.write_mnist(tmp_path, n_train=20, n_test=10, gz=gz)
    bundle = build_data(DataConfig(dataset="mnist", root=str(tmp_path)), seed=0)
    # 2 train images per class: one held out as val (the at-least-one rule), one trains
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (10, 10, 10)
    assert bundle.num_classes == 10 and not bundle.selection_on_test
    assert labels_of(bundle.test) == [i % 10 for i in range(10)]
    x, _ = bundle.test[3]
    pixels = torch.from_numpy(dataset_files.mnist_images(10, 1)[3]).float() / 255
    want = (pixels - MNIST_MEAN[0]) / MNIST_STD[0]
    assert x.shape == (1, 28, 28) and torch.allclose(x[0], want, atol=1e-5)


def test_fashion_mnist_root_pointing_at_raw_folder(tmp_path: Path, dataset_files):
    # 2 a class: 1 to val
    raw = dataset_files.write_mnist(tmp_path, n_train=20, n_test=10, fashion=True)
    bundle = build_data(DataConfig(dataset="fashion_mnist", root=str(raw), image_size=14),
                        seed=0)
    assert bundle.train[0][0].shape == (1, 14, 14) and bundle.image_size == 14
    assert bundle.class_names[9] == "Ankle boot"
    with pytest.raises(DataError, match=f"mnist: expected .* under {tmp_path / 'MNIST' / 'raw'}"):
        build_data(DataConfig(dataset="mnist", root=str(tmp_path)), seed=0)


def test_mnist_malformed_and_missing_files(tmp_path: Path, dataset_files):
    raw = dataset_files.write_mnist(tmp_path)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=f"t10k-labels-idx1-ubyte \\(or .gz\\) under {raw}"):
        build_data(DataConfig(dataset="mnist", root=str(tmp_path)), seed=0)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte has magic 0x00000803"):
        build_data(DataConfig(dataset="mnist", root=str(tmp_path)), seed=0)
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x0a" + bytes(range(9)))  # 9 of 10 labels
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz holds 9 bytes of data but "
                                        "its header says 10"):
        build_data(DataConfig(dataset="mnist", root=str(tmp_path)), seed=0)
    with pytest.raises(DataError, match="mnist: data root .*nowhere does not exist"):
        build_data(DataConfig(dataset="mnist", root=str(tmp_path / "nowhere")), seed=0)


def test_mnist_randaugment_runs_on_grayscale(tmp_path: Path, dataset_files):
    dataset_files.write_mnist(tmp_path)
    cfg = DataConfig(dataset="mnist", root=str(tmp_path),
                     augment={"randaugment": "rand-m9-n3-mstd0.5", "crop_flip": True})
    bundle = build_data(cfg, seed=0)
    assert bundle.train[0][0].shape == (1, 28, 28)


# ---------------------------------------------------------------------------- cifar


@pytest.mark.parametrize("point_at_folder", [False, True])
def test_cifar10_pickles(tmp_path: Path, point_at_folder: bool, dataset_files):
    dataset_files.write_cifar10(tmp_path, n_train=20, n_test=10)
    root = tmp_path / "cifar-10-batches-py" if point_at_folder else tmp_path
    cfg = DataConfig(dataset="cifar10", root=str(root), batch_size=8)
    bundle = build_data(cfg, seed=0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test), bundle.num_classes,
            bundle.in_channels) == (10, 10, 10, 10, 3)
    assert bundle.class_names[0] == "airplane"
    assert Counter(labels_of(bundle.train)) == {c: 1 for c in range(10)}
    assert Counter(labels_of(bundle.val)) == {c: 1 for c in range(10)}
    x, y = bundle.test[7]
    raw = torch.from_numpy(dataset_files.cifar_images(10, 1)[7]).view(3, 32, 32).float() / 255
    want = (raw - torch.tensor(CIFAR10_MEAN).view(3, 1, 1)) / torch.tensor(CIFAR10_STD).view(3, 1, 1)
    assert y == 7 and torch.allclose(x, want, atol=1e-5)
    loaders = make_loaders(bundle, cfg, seed=0)
    xb, yb = next(iter(loaders.train))
    assert xb.shape == (8, 3, 32, 32) and yb.dtype == torch.long
    assert [len(b[1]) for b in loaders.val] == [10]  # eval batch 16 = 2 x 8
    assert [len(b[1]) for b in loaders.test] == [10]


def test_cifar10_augmented_and_resized(tmp_path: Path, dataset_files):
    dataset_files.write_cifar10(tmp_path, n_train=20, n_test=5)  # 2 a class: 1 to val
    cfg = DataConfig(dataset="cifar10", root=str(tmp_path), image_size=24,
                     augment={"crop_flip": True, "randaugment": "rand-m9-mstd0.5-inc1",
                              "random_erasing": 0.5})
    bundle = build_data(cfg, seed=0)
    assert bundle.image_size == 24
    assert bundle.train[0][0].shape == (3, 24, 24) and bundle.val[0][0].shape == (3, 24, 24)


def test_randaugment_posterize_survives_zero_bits(dataset_files):
    from PIL import Image

    from bkd_sweep.data.transforms import make_randaugment

    ra = make_randaugment("rand-m9-mstd0.5-inc1", 32, CIFAR10_MEAN)
    (op,) = [op for op in ra.ops if op.name == "PosterizeIncreasing"]
    op.magnitude, op.magnitude_std, op.prob = 10, 0, 1.0  # timm asks for 0 bits here
    img = Image.fromarray(dataset_files.cifar_images(1)[0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert not np.asarray(op(img)).any()
    op.magnitude = 5  # 2 bits kept: every value a multiple of 64
    assert set(np.unique(np.asarray(op(img))) % 64) == {0}


def test_cifar100_fine_labels(tmp_path: Path, dataset_files):
    # two per fine class: one held out
    dataset_files.write_cifar100(tmp_path, n_train=200, n_test=10)
    bundle = build_data(DataConfig(dataset="cifar100", root=str(tmp_path)), seed=0)
    assert bundle.num_classes == 100 and bundle.class_names[5] == "fine_5"
    assert sorted(labels_of(bundle.train)) == list(range(100))
    assert sorted(labels_of(bundle.val)) == list(range(100))
    assert labels_of(bundle.test) == list(range(10))
    assert bundle.val[0][0].shape == (3, 32, 32)


def test_cifar_missing_and_malformed(tmp_path: Path, dataset_files):
    base = dataset_files.write_cifar10(tmp_path) / "cifar-10-batches-py"
    (base / "test_batch").unlink()
    msg = ("cifar10: expected data_batch_1..data_batch_5 and test_batch (python pickle "
           f"version) under {base} (missing test_batch)")
    with pytest.raises(DataError) as err:
        build_data(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)
    assert str(err.value) == msg
    (base / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match=f"{base / 'test_batch'} is not a CIFAR python pickle"):
        build_data(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)
    with pytest.raises(DataError, match=f"under {tmp_path / 'empty' / 'cifar-100-python'}"):
        (tmp_path / "empty").mkdir()
        build_data(DataConfig(dataset="cifar100", root=str(tmp_path / "empty")), seed=0)


def test_cifar_pickle_cannot_run_code(tmp_path: Path, dataset_files):
    import pickle

    base = dataset_files.write_cifar10(tmp_path) / "cifar-10-batches-py"

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (base / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(DataError, match="builtins.print is not allowed"):
        build_data(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)


# ---------------------------------------------------------------------------- imagenet


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_image_folder(tmp_path: Path, fmt: str, dataset_files):
    classes = ("n02", "n01", "n03")
    dataset_files.write_image_folder(tmp_path, classes, n_train=3, n_val=2, fmt=fmt,
                                     val_classes=("n03",))
    cfg = DataConfig(dataset="imagenet", root=str(tmp_path), image_size=16, batch_size=4,
                     augment={"randaugment": "rand-m9-mstd0.5", "random_erasing": 0.25})
    bundle = build_data(cfg, seed=0)
    assert bundle.class_names == ("n01", "n02", "n03") and bundle.num_classes == 3
    # 3 train images per class: round(0.3) = 0, raised to one held out as val
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (6, 3, 2)
    assert Counter(labels_of(bundle.train)) == {0: 2, 1: 2, 2: 2}
    assert Counter(labels_of(bundle.val)) == {0: 1, 1: 1, 2: 1}
    assert labels_of(bundle.test) == [2, 2]  # test indexes follow train's classes
    assert bundle.train[0][0].shape == (3, 16, 16) and bundle.test[0][0].shape == (3, 16, 16)
    xb, yb = next(iter(make_loaders(bundle, cfg, seed=0).train))
    assert xb.shape == (4, 3, 16, 16)


def test_image_folder_errors(tmp_path: Path, dataset_files):
    dataset_files.write_image_folder(tmp_path, ("a", "b"), n_train=1, n_val=1)
    (tmp_path / "val" / "zzz").mkdir()
    with pytest.raises(DataError, match="class folders missing from train: zzz"):
        build_data(DataConfig(dataset="imagenet", root=str(tmp_path)), seed=0)
    (tmp_path / "val" / "zzz").rmdir()
    for f in (tmp_path / "val").rglob("*.JPEG"):
        f.unlink()
    with pytest.raises(DataError, match=f"no images .* under {tmp_path / 'val'}/<class>/"):
        build_data(DataConfig(dataset="imagenet", root=str(tmp_path)), seed=0)
    with pytest.raises(DataError, match=f"expected train/<wnid>/\\* under {tmp_path / 'x'}"):
        (tmp_path / "x").mkdir()
        build_data(DataConfig(dataset="imagenet", root=str(tmp_path / "x")), seed=0)


def test_num_classes_mismatch_is_an_error(tmp_path: Path, dataset_files):
    dataset_files.write_cifar10(tmp_path, n_train=10, n_test=5)
    with pytest.raises(DataError, match="num_classes is 5 but the data has 10"):
        build_data(DataConfig(dataset="cifar10", root=str(tmp_path), num_classes=5), seed=0)
