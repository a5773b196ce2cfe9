"""The cost model's feature maps (what BKD's align conv and restoration block run on) are the
maps the built networks produce: channels and side, for students and for tapped teachers."""

from __future__ import annotations

import pytest
import torch

from bkd_sweep.config import TeacherConfig
from bkd_sweep.engine.costs import student_map, teacher_map
from bkd_sweep.models import create_student
from bkd_sweep.models.teachers import build_teacher_network


@pytest.mark.parametrize("arch,side", [
    ("spiking_cnn_small", 8), ("spiking_cnn_small", 28), ("spiking_cnn_small", 64),
    ("sew_resnet18_cifar", 32), ("sew_resnet18", 64), ("spiking_resnet19", 32),
    ("spikformer_2_256", 64), ("sew_resnet_dvs", 64),
])
def test_student_maps_match_the_built_students(arch, side):
    student = create_student(arch, num_classes=10, in_channels=3, image_size=side,
                             timesteps=1).eval()
    with torch.no_grad():
        feature = student.forward_features(torch.zeros(2, 3, side, side))  # [T, B, C, H, W]
    assert student_map(arch, side) == (feature.shape[2], feature.shape[3])
    assert feature.shape[3] == feature.shape[4]


@pytest.mark.parametrize("arch,feature,side", [
    ("cnn_small", "features", 8), ("cnn_small", "features", 28), ("cnn_small", "features", 64),
    ("resnet18_cifar", "layer3", 32), ("resnet18_cifar", "layer4", 32),
    ("resnet18", "layer2", 64), ("resnet50_cifar", "layer4", 32),
])
def test_teacher_maps_match_the_built_teachers(arch, feature, side):
    net = build_teacher_network(TeacherConfig(arch=arch, checkpoint="train", feature=feature),
                                num_classes=10, in_channels=3, image_size=side).eval()
    shapes = []
    dict(net.named_modules())[feature].register_forward_hook(
        lambda module, inputs, output: shapes.append(tuple(output.shape)))
    with torch.no_grad():
        net(torch.zeros(2, 3, side, side))
    assert teacher_map(arch, feature, side) == (shapes[0][1], shapes[0][2])


def test_vector_features_and_unknown_maps():
    assert teacher_map("vit_small_patch16_224", "pre_logits", 224) == (384, None)
    assert teacher_map("spikingformer_2_256_dvs", "pre_logits", 128) == (256, None)
    assert teacher_map("resnet18", "fc", 224) is None  # not a map the model knows
    assert student_map("my_net", 32) is None
