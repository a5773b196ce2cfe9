"""Teachers: feature kinds and shapes, input preparation, freezing, checkpoints, names."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest
from spikingjelly.activation_based import neuron
from torch import nn

from bkd_sweep.models import (CheckpointError, build_teacher_network, create_student,
                              create_teacher, list_teachers, load_weights, reset, wrap_teacher)
from bkd_sweep.registry import UnknownNameError
from bkd_sweep.config import NeuronConfig, TeacherConfig


def _teacher(arch: str, *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             **cfg):
    torch.manual_seed(0)
    config = TeacherConfig(arch=arch, **cfg)
    net = build_teacher_network(config, num_classes=num_classes, in_channels=in_channels,
                                image_size=image_size)
    return net, wrap_teacher(net, config, image_size=image_size)


def test_cnn_small_vector_and_map() -> None:
    x = torch.randn(2, 1, 8, 8)
    _, vec = _teacher("cnn_small", in_channels=1, image_size=8)
    _, fmap = _teacher("cnn_small", in_channels=1, image_size=8, feature="features")
    assert (vec.feature_kind, vec.feature_channels) == ("vector", 128)
    assert (fmap.feature_kind, fmap.feature_channels, fmap.feature_size) == ("map", 128, (8, 8))
    a, b = vec(x), fmap(x)
    assert a.logits.shape == (2, 10) and a.feature.shape == (2, 128)
    assert b.feature.shape == (2, 128, 8, 8)
    torch.testing.assert_close(a.feature, b.feature.mean(dim=(2, 3)))  # pre-logits = pooled map
    torch.testing.assert_close(a.logits, b.logits)


def test_resnet18_pre_logits_and_layer4() -> None:
    x = torch.randn(2, 3, 16, 16)
    net, vec = _teacher("resnet18", image_size=16)
    _, fmap = _teacher("resnet18", image_size=16, feature="layer4")
    _, cifar = _teacher("resnet18_cifar", image_size=16, feature="layer4")
    out_v, out_m, out_c = vec(x), fmap(x), cifar(x)
    assert (vec.feature_kind, vec.feature_channels) == ("vector", 512)
    assert out_v.feature.shape == (2, 512)
    assert fmap.feature_kind == "map" and out_m.feature.shape == (2, 512, 1, 1)
    assert out_c.feature.shape == (2, 512, 2, 2)  # CIFAR stem: /8 instead of /32
    torch.testing.assert_close(out_v.feature, out_m.feature.flatten(1))  # avgpool of layer4
    with torch.no_grad():
        torch.testing.assert_close(out_v.logits, net(x))


def test_timm_model_at_its_input_size() -> None:
    net, teacher = _teacher("test_vit", image_size=16, input_size=32)
    assert teacher.feature_kind == "vector" and teacher.feature_channels == net.num_features
    x = torch.randn(2, 3, 16, 16)
    heads = []
    head = teacher.net.forward_head
    teacher.net.forward_head = lambda *a, **k: heads.append(k) or head(*a, **k)
    out = teacher(x)
    assert heads == [{"pre_logits": True}]  # the head runs once; the classifier alone after
    del teacher.net.forward_head
    big = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(teacher.prepare(x), big)
    with torch.no_grad():
        feats = net.forward_features(big)
        torch.testing.assert_close(out.feature, net.forward_head(feats, pre_logits=True))
        torch.testing.assert_close(out.logits, net(big))


def test_grey_input_is_repeated_for_a_three_channel_net() -> None:
    net, teacher = _teacher("resnet18_cifar", image_size=16, feature="layer4")
    grey = torch.randn(2, 1, 16, 16)
    out = teacher(grey)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, net(grey.repeat(1, 3, 1, 1)))


def test_snn_teacher_time_averages_and_resets() -> None:
    torch.manual_seed(0)
    cfg = TeacherConfig(arch="spiking_cnn_small", timesteps=4)
    net = build_teacher_network(cfg, num_classes=3, in_channels=2, image_size=8,
                                student_neuron=NeuronConfig(type="if", v_threshold=0.5))
    assert net.timesteps == 4
    assert all(m.v_threshold == 0.5 for m in net.modules() if isinstance(m, neuron.BaseNode))
    teacher = wrap_teacher(net, cfg, image_size=8)
    assert (teacher.feature_kind, teacher.feature_channels) == ("map", 64)
    frames = torch.rand(2, 8, 2, 8, 8)  # the loader's 8 frames -> the teacher's 4 bins
    out = teacher(frames)
    assert all(isinstance(m.v, float) for m in net.modules() if isinstance(m, neuron.BaseNode))
    with torch.no_grad():
        feats = net.forward_features(frames)
        logits = net.forward_head(feats)
        reset(net)
    torch.testing.assert_close(out.feature, feats.mean(0))
    torch.testing.assert_close(out.logits, logits)
    # a named module of an SNN teacher is time-averaged too
    tapped = wrap_teacher(net, TeacherConfig(arch="spiking_cnn_small", timesteps=4,
                                             feature="features.1"), image_size=8)
    assert tapped(frames).feature.shape == (2, 32, 8, 8)


def test_teacher_is_frozen_even_under_a_training_parent() -> None:
    net, teacher = _teacher("resnet18_cifar", image_size=16, feature="layer4")
    parent = nn.ModuleDict({"teacher": teacher, "head": nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training and not teacher.training
    assert not any(m.training for m in net.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    bn = net.bn1
    before = bn.running_mean.clone()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    out = teacher(x)
    assert not out.feature.requires_grad and not out.logits.requires_grad
    torch.testing.assert_close(bn.running_mean, before)  # eval-mode BN: statistics untouched


def test_load_weights_round_trip(tmp_path) -> None:
    torch.manual_seed(1)
    source = build_teacher_network(TeacherConfig(arch="cnn_small"), num_classes=4, in_channels=1,
                                   image_size=8)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # a DDP checkpoint
    path = tmp_path / "teacher.pth"
    torch.save({"model": state, "epoch": 3}, path)
    target = build_teacher_network(TeacherConfig(arch="cnn_small"), num_classes=4, in_channels=1,
                                   image_size=8)
    load_weights(target, path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    # create_teacher loads a path checkpoint ...
    teacher = create_teacher(TeacherConfig(arch="cnn_small", checkpoint=str(path)),
                             num_classes=4, in_channels=1, image_size=8)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x).logits, source.eval()(x))
    # ... and "train" means: do not load anything here (the caller trains, then loads)
    create_teacher(TeacherConfig(arch="cnn_small", checkpoint="train"), num_classes=4,
                   in_channels=1, image_size=8)
    # raw state_dict and {"state_dict": ...} are accepted too
    for wrapped in (source.state_dict(), {"state_dict": source.state_dict()}):
        torch.save(wrapped, path)
        load_weights(target, path)


def test_load_weights_errors_are_one_line(tmp_path) -> None:
    net = build_teacher_network(TeacherConfig(arch="cnn_small"), num_classes=4, in_channels=1,
                                image_size=8)
    with pytest.raises(FileNotFoundError, match="teacher checkpoint not found"):
        load_weights(net, tmp_path / "nope.pth")
    other = build_teacher_network(TeacherConfig(arch="cnn_small"), num_classes=7, in_channels=1,
                                  image_size=8)
    state = other.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["features.0.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_weights(net, tmp_path / "bad.pth")
    message = str(err.value)
    assert "\n" not in message
    assert "1 missing (features.0.weight)" in message
    assert "1 unexpected (extra.weight)" in message
    assert "2 shape mismatches (fc.weight (7, 128) vs (4, 128)" in message
    torch.save({"optimizer": {"lr": 0.1}}, tmp_path / "opt.pth")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_weights(net, tmp_path / "opt.pth")


def test_names() -> None:
    assert {"cnn_small", "resnet18", "resnet34", "resnet50", "resnet18_cifar"} <= \
        set(list_teachers())
    with pytest.raises(UnknownNameError) as err:
        _teacher("resnt18")
    assert "did you mean 'resnet18'" in str(err.value) and "cnn_small" in str(err.value)
    with pytest.raises(UnknownNameError, match="unknown student"):
        _teacher("not_a_student", timesteps=4)
    with pytest.raises(ValueError, match="no module 'layer5'.*layer4"):
        _teacher("resnet18", feature="layer5")


def test_snn_student_and_teacher_share_one_loader() -> None:
    """A T=2 student and a T=4 teacher both take the same 4-frame batch."""
    frames = torch.rand(2, 4, 2, 8, 8)
    student = create_student("spiking_cnn_small", num_classes=3, in_channels=2, image_size=8,
                             timesteps=2)
    _, teacher = _teacher("spiking_cnn_small", num_classes=3, in_channels=2, image_size=8,
                          timesteps=4)
    assert student(frames).shape == teacher(frames).logits.shape == (2, 3)
    reset(student)
