"""CIFAR10-DVS: event integration against hand counts and spikingjelly, layout, split, errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bkd_sweep.data import DataError, build_data, make_loaders, make_mixup
from bkd_sweep.data.events import integrate_by_count
from bkd_sweep.config import AugmentConfig, DataConfig

# (x, y, p) of 8 events; into 2 frames: events 0-3 -> frame 0, events 4-7 -> frame 1
EIGHT = [(0, 0, 1), (1, 0, 0), (0, 0, 1), (2, 3, 1), (5, 5, 0), (5, 5, 0), (0, 0, 1),
         (127, 127, 1)]


def hand_frames_of_eight() -> np.ndarray:
    f = np.zeros((2, 2, 128, 128), np.float32)
    f[0, 1, 0, 0] = 2  # events 0 and 2
    f[0, 0, 0, 1] = 1  # event 1 (p=0, y=0, x=1)
    f[0, 1, 3, 2] = 1  # event 3 (y=3, x=2)
    f[1, 0, 5, 5] = 2  # events 4 and 5
    f[1, 1, 0, 0] = 1  # event 6
    f[1, 1, 127, 127] = 1  # event 7
    return f


def test_integrate_eight_events_into_two_frames():
    x, y, p = (np.array(v) for v in zip(*EIGHT))
    got = integrate_by_count(x, y, p, frames=2, height=128, width=128)
    assert got.dtype == np.float32 and got.shape == (2, 2, 128, 128)
    np.testing.assert_array_equal(got, hand_frames_of_eight())


def test_integrate_remainder_goes_to_last_frame_and_short_streams():
    x = np.arange(9)
    y = np.zeros(9, int)
    p = np.ones(9, int)
    got = integrate_by_count(x, y, p, frames=2, height=4, width=16)
    assert got[0, 1, 0].tolist() == [1] * 4 + [0] * 12  # 9 // 2 = 4 events
    assert got[1, 1, 0].tolist() == [0] * 4 + [1] * 5 + [0] * 7  # the other 5
    short = integrate_by_count(x[:3], y[:3], p[:3], frames=4, height=4, width=16)
    assert short[:3].sum() == 0 and short[3].sum() == 3


def test_integrate_matches_spikingjelly_split_by_number():
    from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number

    gen = np.random.default_rng(0)
    n = 1001
    ev = {"t": np.sort(gen.integers(0, 10**6, n)), "x": gen.integers(0, 32, n),
          "y": gen.integers(0, 24, n), "p": gen.integers(0, 2, n)}
    want = integrate_events_by_fixed_frames_number(ev, "number", 5, 24, 32)
    got = integrate_by_count(ev["x"], ev["y"], ev["p"], frames=5, height=24, width=32)
    np.testing.assert_array_equal(got, want)


def test_dvs_sample_through_build_data(tmp_path: Path, dataset_files):
    dataset_files.write_cifar10_dvs(tmp_path, n_per_class=3, classes=("cat", "airplane"),
                                    n_events=40)
    x, y, p = zip(*EIGHT)
    target = dataset_files.write_event_file(tmp_path / "events_np" / "cat" / "3.npz",
                                            t=range(8), x=x, y=y, p=p)
    cfg = DataConfig(dataset="cifar10_dvs", root=str(tmp_path), frames=2,
                     val_fraction=0.25)
    bundle = build_data(cfg, seed=0, timesteps=4)
    assert (bundle.is_event, bundle.frames, bundle.in_channels, bundle.image_size) == \
        (True, 2, 2, 128)
    assert bundle.class_names == ("airplane", "cat") and bundle.num_classes == 2
    # airplane 3 files, cat 4: test one each (round(0.3), round(0.4) raised to 1), then val
    # one each (round(0.5) = 0 raised to 1, round(0.75) = 1): train 1 + 2
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (3, 2, 2)
    for ds in (bundle.train, bundle.val, bundle.test):
        if target in ds.files:
            frames, label = ds[ds.files.index(target)]
    assert label == 1
    torch.testing.assert_close(frames, torch.from_numpy(hand_frames_of_eight()))


def test_dvs_frames_downsampling_and_split(tmp_path: Path, dataset_files):
    dataset_files.write_cifar10_dvs(tmp_path, n_per_class=10, classes=("a", "b", "c"), n_events=64)
    cfg = DataConfig(dataset="cifar10_dvs", root=str(tmp_path), image_size=32)
    bundle = build_data(cfg, seed=0, timesteps=4)
    # default 9:1 test split per class, then val_fraction 0.1 of the 9: round(0.9) = 1
    assert Counter(bundle.test.labels.tolist()) == {0: 1, 1: 1, 2: 1}
    assert Counter(bundle.val.labels.tolist()) == {0: 1, 1: 1, 2: 1}
    assert Counter(bundle.train.labels.tolist()) == {0: 8, 1: 8, 2: 8}
    frames, _ = bundle.train[0]
    assert frames.shape == (4, 2, 32, 32) and frames.dtype == torch.float32
    assert float(frames.sum()) * 16 == pytest.approx(64)  # 4x4 area average keeps the mass
    same = build_data(cfg, seed=0, timesteps=4)
    other = build_data(cfg, seed=1, timesteps=4)
    assert same.val.files == bundle.val.files and other.val.files != bundle.val.files
    assert same.test.files == bundle.test.files and other.test.files != bundle.test.files
    explicit = build_data(cfg.model_copy(update={"test_fraction": 0.3}), seed=0)
    assert Counter(explicit.test.labels.tolist()) == {0: 3, 1: 3, 2: 3}
    assert Counter(explicit.val.labels.tolist()) == {0: 1, 1: 1, 2: 1}  # round(0.7) = 1
    # root may also be the events_np folder itself; frames come from data.frames
    direct = build_data(DataConfig(dataset="cifar10_dvs", root=str(tmp_path / "events_np"),
                                   frames=3), seed=0, timesteps=8)
    assert direct.frames == 3 and direct.val[0][0].shape == (3, 2, 128, 128)
    assert float(direct.val[0][0].sum()) == 64


def test_dvs_loader_augment_and_mixup(tmp_path: Path, dataset_files):
    dataset_files.write_cifar10_dvs(tmp_path, n_per_class=4, classes=("a", "b"), n_events=32)
    cfg = DataConfig(dataset="cifar10_dvs", root=str(tmp_path), image_size=16, batch_size=3,
                     augment={"crop_flip": True, "random_erasing": 0.5, "mixup": 0.5})
    bundle = build_data(cfg, seed=0, timesteps=2)
    # the train transform moves every frame alike: identical frames stay identical
    same = torch.rand(1, 2, 16, 16).expand(5, 2, 16, 16).contiguous()
    torch.manual_seed(0)
    for _ in range(5):
        out = bundle.train.transform(same)
        assert all(torch.equal(out[0], f) for f in out[1:])
    loaders = make_loaders(bundle, cfg, seed=0)
    xb, yb = next(iter(loaders.train))
    assert xb.shape == (3, 2, 2, 16, 16)
    mixup = make_mixup(cfg.augment, bundle.num_classes)
    mixed, soft = mixup(xb.clone(), yb)
    assert mixed.shape == xb.shape and soft.shape == (3, 2)
    torch.testing.assert_close(soft.sum(1), torch.ones(3))
    assert next(iter(loaders.val))[0].shape == (2, 2, 2, 16, 16)
    assert next(iter(loaders.test))[0].shape == (2, 2, 2, 16, 16)


def test_dvs_errors_name_the_path(tmp_path: Path, dataset_files):
    with pytest.raises(DataError, match=f"expected events_np/<class>/<n>.npz .* under {tmp_path}"):
        build_data(DataConfig(dataset="cifar10_dvs", root=str(tmp_path)), seed=0)
    dataset_files.write_cifar10_dvs(tmp_path, n_per_class=2, classes=("a", "b"), n_events=8)
    bad = tmp_path / "events_np" / "a" / "0.npz"
    np.savez(bad, t=np.arange(3), x=np.arange(3), y=np.arange(3))
    with pytest.raises(DataError, match=f"{bad} lacks arrays p"):
        build_data(DataConfig(dataset="cifar10_dvs", root=str(tmp_path)), seed=0)
    dataset_files.write_event_file(bad, t=[0], x=[128], y=[0], p=[1])
    with pytest.raises(DataError, match=f"{bad}: x outside 0..127"):
        build_data(DataConfig(dataset="cifar10_dvs", root=str(tmp_path)), seed=0)
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"{bad} is not a readable .npz"):
        build_data(DataConfig(dataset="cifar10_dvs", root=str(tmp_path)), seed=0)
    dataset_files.write_event_file(bad, t=[0], x=[1], y=[2], p=[0])
    with pytest.raises(DataError, match="cifar10_dvs: augment.randaugment needs images"):
        build_data(DataConfig(dataset="cifar10_dvs", root=str(tmp_path / "events_np"),
                              augment=AugmentConfig(randaugment="rand-m9")), seed=0)
