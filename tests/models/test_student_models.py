"""Students: a contract over every registered architecture, plus family-specific structure."""

from __future__ import annotations

import copy

import pytest
import torch
from spikingjelly.activation_based import neuron as sj_neuron
from torch import nn

from bkd_sweep.models import (SpikingStudent, create_student, list_students, reset,
                              training_layout)
from bkd_sweep.models.students import to_time_major
from bkd_sweep.models.students.spikformer import num_downsamples
from bkd_sweep.registry import UnknownNameError

T, B, K = 2, 2, 5
# The widest nets take seconds each; the unit tier covers their builders through the smaller
# members of the same family.
WIDEST = ("spikformer_8_768", "spikingformer_8_768", "spikformer_8_512", "spikingformer_8_512",
          "sew_resnet50", "sew_resnet50_cifar")


def _setup(arch: str) -> tuple[int, int]:
    """(in_channels, image_size) small enough for CPU yet valid for the architecture; the
    transformers run on 4x4 px (16 tokens, no down-sampling) to keep the 8-768 nets cheap."""
    if arch.startswith(("spikformer", "spikingformer")):
        return (2 if arch.endswith("_dvs") else 3), 4
    return (2, 32) if arch.endswith("_dvs") else (3, 8)


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in WIDEST else a
                                  for a in list_students()])
def test_student_contract(arch: str) -> None:
    torch.manual_seed(0)
    channels, size = _setup(arch)
    model = create_student(arch, num_classes=K, in_channels=channels, image_size=size,
                           timesteps=T)
    assert isinstance(model, SpikingStudent)
    assert (model.timesteps, model.num_classes) == (T, K)
    # DVS nets get event frames (T' = 2T), the others static images (direct encoding).
    x = (torch.rand(B, 2 * T, channels, size, size) if arch.endswith("_dvs")
         else torch.randn(B, channels, size, size))
    tapped = {}
    point = dict(model.named_modules())[model.feature_point]
    handle = point.register_forward_hook(lambda m, i, o: tapped.setdefault("out", o))
    features = model.forward_features(x)
    handle.remove()
    assert features.dim() == 5 and features.shape[:3] == (T, B, model.feature_channels)
    assert tapped["out"] is features  # feature_point names the module that produced it
    logits = model.forward_head(features)
    assert logits.shape == (B, K)
    torch.nn.functional.cross_entropy(logits, torch.arange(B) % K).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0  # gradients cross the whole depth
    reset(model)
    twin = copy.deepcopy(model)  # only possible once the membrane state is cleared
    model.eval(), twin.eval()
    with torch.no_grad():
        a = model(x)
        reset(model)
        b = twin(x)
        reset(twin)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("arch", ["spiking_cnn_small", "sew_resnet18_cifar", "sew_resnet_dvs",
                                  "spiking_resnet19", "spikformer_2_256"])
def test_training_layout(arch: str) -> None:
    """Convolutional students train with channels-last weights (faster convolutions, measured
    in bench/loop_overhead.py) and their activations stay channels-last between neurons; the
    transformers keep the default layout (their patch splitting ran slower)."""
    torch.manual_seed(0)
    channels, size = _setup(arch)
    model = training_layout(create_student(arch, num_classes=K, in_channels=channels,
                                           image_size=size, timesteps=T))
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    channels_last = [w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                     for w in convs if w.shape[-1] > 1 or w.shape[-2] > 1]
    assert model.channels_last == (arch != "spikformer_2_256")
    assert all(channels_last) if model.channels_last else not any(channels_last)
    x = (torch.rand(B, 2 * T, channels, size, size) if arch.endswith("_dvs")
         else torch.randn(B, channels, size, size))
    features = model.forward_features(x)
    if model.channels_last and features.shape[-1] > 1:
        assert features.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    logits = model.forward_head(features)
    torch.nn.functional.cross_entropy(logits, torch.arange(B) % K).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    reset(model)


def test_training_layout_takes_the_loss_modules_along() -> None:
    """The student decides; what trains with it (align, the restoration block) follows."""
    for arch, expected in (("spiking_cnn_small", True), ("spikformer_2_256", False)):
        student = create_student(arch, num_classes=K, image_size=8, timesteps=1)
        restore = nn.Conv2d(16, 16, 3)
        training_layout(nn.ModuleList([student, restore]), student)
        assert restore.weight.is_contiguous(memory_format=torch.channels_last) == expected


def test_unknown_student_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        create_student("sew_resnet19", num_classes=10)
    message = str(err.value)
    assert "did you mean" in message and "spiking_cnn_small" in message
    assert "spikingformer_8_768" in message


def test_registry_has_the_paper_architectures() -> None:
    names = set(list_students())
    for depth_dim in ("8_384", "8_512", "8_768", "4_384", "2_384", "4_256", "2_256"):
        assert f"spikingformer_{depth_dim}" in names and f"spikformer_{depth_dim}" in names
    assert {"sew_resnet18", "sew_resnet34", "sew_resnet50", "sew_resnet18_cifar",
            "sew_resnet34_cifar", "sew_resnet50_cifar", "spiking_resnet19", "sew_resnet_dvs",
            "spikingformer_2_256_dvs", "spiking_cnn_small"} <= names


def test_sew_feature_maps_follow_the_stem() -> None:
    x = torch.randn(1, 3, 32, 32)
    imagenet = create_student("sew_resnet18", num_classes=K, image_size=32, timesteps=1).eval()
    cifar = create_student("sew_resnet18_cifar", num_classes=K, image_size=32, timesteps=1)
    with torch.no_grad():
        assert imagenet.forward_features(x).shape == (1, 1, 512, 1, 1)  # /32
        assert cifar.forward_features(x).shape == (1, 1, 512, 4, 4)  # /8
    r19 = create_student("spiking_resnet19", num_classes=K, image_size=16, timesteps=1)
    assert [len(getattr(r19, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 2]
    with torch.no_grad():
        feats = r19.forward_features(torch.randn(1, 3, 16, 16))
    assert feats.shape == (1, 1, 512, 4, 4)
    assert set(feats.unique().tolist()) <= {0.0, 1.0}  # spiking ResNet blocks end in a neuron


def test_transformer_token_grid_adapts_to_image_size() -> None:
    assert [num_downsamples(s) for s in (8, 28, 32, 64, 128, 224)] == [0, 1, 2, 3, 4, 4]
    for size, side in ((8, 8), (32, 8)):
        model = create_student("spikformer_2_256", num_classes=K, image_size=size, timesteps=1)
        with torch.no_grad():
            assert model.forward_features(torch.randn(1, 3, size, size)).shape == \
                (1, 1, 256, side, side)


def test_spikformer_adds_spikes_spikingformer_keeps_a_real_stream() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    outs = {}
    for family in ("spikformer", "spikingformer"):
        model = create_student(f"{family}_2_256", num_classes=K, image_size=16, timesteps=2)
        with torch.no_grad():
            outs[family] = model.forward_features(x)
        # the attention neuron fires at 0.5, every other neuron at the configured 1.0
        thresholds = {n: m.v_threshold for n, m in model.named_modules()
                      if isinstance(m, sj_neuron.BaseNode)}
        assert {v for n, v in thresholds.items() if n.endswith("attn_neuron")} == {0.5}
        assert {v for n, v in thresholds.items() if not n.endswith("attn_neuron")} == {1.0}
    spk, cml = outs["spikformer"], outs["spikingformer"]
    assert torch.equal(spk, spk.round())  # sums of spike tensors: integer counts
    assert not torch.equal(cml, cml.round())  # BN outputs on the residual stream
    # Spikingformer's convs see only spikes: every Conv2d input after the first is binary
    model = create_student("spikingformer_2_256", num_classes=K, image_size=16, timesteps=1)
    seen = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, i, o: seen.append(i[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
    assert len(seen) == 4 + 1 + 2 * 4  # stem stages, RPE, 2 blocks x (qkv, proj, fc1, fc2)
    assert all(set(t.unique().tolist()) <= {0.0, 1.0} for t in seen[1:])


def test_cnn_small_keeps_8x8_and_pools_larger_inputs() -> None:
    for size, side in ((8, 8), (28, 14), (32, 8)):
        model = create_student("spiking_cnn_small", num_classes=10, in_channels=1,
                               image_size=size, timesteps=1)
        with torch.no_grad():
            feats = model.forward_features(torch.randn(2, 1, size, size))
        assert feats.shape == (1, 2, 64, side, side)


def test_event_frames_are_summed_into_time_bins() -> None:
    frames = torch.arange(2 * 4 * 1 * 2 * 2, dtype=torch.float32).reshape(2, 4, 1, 2, 2)
    binned = to_time_major(frames, 2)
    assert binned.shape == (2, 2, 1, 2, 2)  # [T, B, C, H, W]
    torch.testing.assert_close(binned[0], frames[:, 0] + frames[:, 1])
    torch.testing.assert_close(binned[1], frames[:, 2] + frames[:, 3])
    image = torch.randn(3, 1, 2, 2)
    repeated = to_time_major(image, 3)
    assert repeated.shape == (3, 3, 1, 2, 2) and all(torch.equal(r, image) for r in repeated)
    with pytest.raises(ValueError, match="multiple of timesteps"):
        to_time_major(torch.zeros(2, 3, 1, 2, 2), 2)
    # through a model: 4 frames at T=2 == the pairwise-summed frames at T=2
    model = create_student("spiking_cnn_small", num_classes=3, in_channels=1, image_size=4,
                           timesteps=2).eval()
    with torch.no_grad():
        a = model(frames.reshape(2, 4, 1, 2, 2).repeat(1, 1, 1, 2, 2))
        reset(model)
        summed = frames.reshape(2, 2, 2, 1, 2, 2).sum(2).repeat(1, 1, 1, 2, 2)
        b = model(summed)
        reset(model)
    torch.testing.assert_close(a, b)
