"""The same seed gives the same trial whatever the teacher cache holds: preparing the teacher
(training it, evaluating it, or reading both) does not move the generators the trial's own
modules are initialised from."""

from __future__ import annotations

import shutil

import torch

from bkd_sweep.config import TrialConfig, apply_overrides
from bkd_sweep.trial.state import build_state

CONFIG = apply_overrides(TrialConfig(), {
    "data.dataset": "digits", "data.batch_size": 32, "data.limit_train": 256,
    "data.limit_val": 64, "student.arch": "spiking_cnn_small", "student.timesteps": 2,
    "teacher.arch": "cnn_small", "teacher.checkpoint": "train", "teacher.feature": "features",
    "teacher.train.epochs": 1, "train.epochs": 1, "train.threads": 1, "distill.mode": "bkd",
    "energy.samples": 4})


def initial_loss_weights(cache) -> dict[str, torch.Tensor]:
    """The align conv's and restoration block's weights as a fresh trial starts them."""
    state = build_state(CONFIG, cache_dir=cache)
    return {k: v.clone() for k, v in state.model.loss.state_dict().items()}


def test_loss_modules_start_alike_with_and_without_a_cached_teacher_evaluation(tmp_path):
    trained = initial_loss_weights(tmp_path)  # trains and evaluates the teacher
    cached = initial_loss_weights(tmp_path)  # reads both
    shutil.rmtree(tmp_path / "teacher_eval")
    evaluated = initial_loss_weights(tmp_path)  # reads the weights, evaluates again
    assert any("restore" in k for k in cached) and any("align" in k for k in cached)
    for key, value in cached.items():
        assert torch.equal(value, evaluated[key]), key
        assert torch.equal(value, trained[key]), key
