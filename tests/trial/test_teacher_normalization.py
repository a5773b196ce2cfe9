"""A teacher gets its inputs normalized the way its weights expect, from the batch the
student sees (normalized with the data's statistics)."""

from __future__ import annotations

import pytest
import torch

from bkd_sweep.config import StudyError, TeacherConfig, TrialConfig, apply_overrides
from bkd_sweep.models import build_teacher_network, wrap_teacher
from bkd_sweep.trial.teacher import teacher_normalization


def watched_teacher():
    """A cnn_small teacher and a dict that receives the input its network sees."""
    cfg = TeacherConfig(arch="cnn_small", feature="features")
    net = build_teacher_network(cfg, num_classes=10, in_channels=3, image_size=8)
    seen = {}
    net.register_forward_pre_hook(lambda m, args: seen.update(x=args[0].clone()))
    return wrap_teacher(net, cfg, image_size=8), seen


def test_the_teacher_sees_its_own_normalization():
    teacher, seen = watched_teacher()
    raw = torch.rand(2, 3, 8, 8)
    data_mean, data_std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    student_batch = (raw - torch.tensor(data_mean).view(3, 1, 1)) / torch.tensor(
        data_std).view(3, 1, 1)
    teacher.set_input_normalization(data_mean, data_std, (0.485, 0.456, 0.406),
                                    (0.229, 0.224, 0.225))
    teacher(student_batch)
    expected = (raw - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(3, 1, 1)
    assert torch.allclose(seen["x"], expected, atol=1e-5)


def test_a_one_channel_statistic_serves_every_channel():
    teacher, seen = watched_teacher()
    raw = torch.rand(1, 1, 8, 8)  # a grey image, repeated to the teacher's 3 channels
    teacher.set_input_normalization((0.3,), (0.2,), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    teacher((raw - 0.3) / 0.2)
    assert torch.allclose(seen["x"], ((raw - 0.5) / 0.5).expand(1, 3, 8, 8), atol=1e-5)


def config(**overrides) -> TrialConfig:
    return apply_overrides(TrialConfig(), overrides)


def test_which_normalization_a_teacher_expects(tmp_path):
    vit = config(**{"teacher.arch": "vit_tiny_patch16_224", "teacher.checkpoint": "/w/vit.pth"})
    net = build_teacher_network(vit.teacher, num_classes=10, in_channels=3, image_size=224)
    assert teacher_normalization(vit, net) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's
    trained = config(**{"teacher.arch": "vit_tiny_patch16_224", "teacher.checkpoint": "train"})
    assert teacher_normalization(trained, net) is None  # it saw the data's own
    given = config(**{"teacher.checkpoint": "train", "teacher.mean": [0.1], "teacher.std": [0.2]})
    assert teacher_normalization(given, net) == ((0.1,), (0.2,))
    with pytest.raises(StudyError, match="teacher.mean and teacher.std go together"):
        config(**{"teacher.mean": [0.1, 0.2]})
