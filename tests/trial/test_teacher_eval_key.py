"""A teacher's cached evaluation belongs to what was evaluated: an SNN teacher loaded from a
file is built with the student's neurons, so a study varying them measures each teacher."""

from __future__ import annotations

import torch

from bkd_sweep.config import TrialConfig, apply_overrides
from bkd_sweep.models import create_student
from bkd_sweep.trial.teacher import ensure_teacher
from bkd_sweep.trial.teacher_cache import TeacherCache, evaluation_key


def snn_teacher_config(checkpoint, v_threshold: float) -> TrialConfig:
    return apply_overrides(TrialConfig(), {
        "data.dataset": "digits", "data.batch_size": 32, "data.limit_train": 64,
        "data.limit_val": 32, "data.limit_test": 32, "student.timesteps": 2,
        "student.neuron.v_threshold": v_threshold, "teacher.arch": "spiking_cnn_small",
        "teacher.timesteps": 2, "teacher.checkpoint": str(checkpoint),
        "teacher.feature": "features", "distill.mode": "logit"})


def test_an_snn_teacher_is_evaluated_again_when_the_neurons_change(tmp_path):
    torch.manual_seed(0)
    net = create_student("spiking_cnn_small", num_classes=10, in_channels=1, image_size=8,
                         timesteps=2)
    torch.save(net.state_dict(), tmp_path / "snn.pt")
    cache = TeacherCache.of(tmp_path / "cache")
    for threshold in (1.0, 0.5):
        ensure_teacher(snn_teacher_config(tmp_path / "snn.pt", threshold), cache)
    assert len(list((tmp_path / "cache" / "teacher_eval").glob("*.json"))) == 2


def test_an_ann_teachers_evaluation_key_ignores_the_students_neurons():
    base = {"teacher.arch": "cnn_small", "teacher.checkpoint": "train"}
    one = apply_overrides(TrialConfig(), {**base, "student.neuron.v_threshold": 1.0})
    two = apply_overrides(TrialConfig(), {**base, "student.neuron.v_threshold": 0.5})
    assert evaluation_key(b"weights", one) == evaluation_key(b"weights", two)
