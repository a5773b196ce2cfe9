"""Optimizer and schedule come from timm: 1-D parameters without weight decay, and the
reference-style schedule (warm-up, cosine to min LR, cool-down), resumable mid-way."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from bkd_sweep.config import OptimizerConfig, apply_overrides, load_study
from bkd_sweep.distill import DistillLoss
from bkd_sweep.models import create_student
from bkd_sweep.trial import DistillationModel
import bkd_sweep.trial.optim as optim_module
from bkd_sweep.trial.optim import (fused_supported, load_optimizer_state, make_optimizer,
                                   make_scheduler)

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def quickstart_model() -> tuple[DistillationModel, object]:
    config = load_study(STUDIES / "quickstart.yaml").study.base_config()
    config = apply_overrides(config, {"distill.mode": "mixed"})
    student = create_student(config.student.arch, num_classes=10, in_channels=1, image_size=8,
                             timesteps=config.student.timesteps, neuron=config.student.neuron)
    loss = DistillLoss.from_config(config.distill, student_channels=student.feature_channels,
                                   teacher_channels=128)
    return DistillationModel(student, loss), config


def test_quickstart_optimizer_exempts_every_1d_parameter_from_weight_decay():
    model, config = quickstart_model()
    optimizer = make_optimizer(model, config.train.optimizer)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    one_d = [n for n, p in params.items() if p.ndim <= 1]
    assert one_d, "the quickstart student has BatchNorm weights and biases"
    assert any(n.startswith("loss.") for n in one_d)  # align / G biases are covered too
    assert {n: decay_of[id(params[n])] for n in one_d} == {n: 0.0 for n in one_d}
    wd = config.train.optimizer.weight_decay
    assert wd > 0
    assert all(decay_of[id(p)] == wd for p in params.values() if p.ndim > 1)
    assert len(decay_of) == len(params)  # every trainable parameter is optimized once


def test_filter_off_decays_everything():
    model, config = quickstart_model()
    opt_cfg = config.train.optimizer.model_copy(update={"filter_bias_and_bn": False})
    optimizer = make_optimizer(model, opt_cfg)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {opt_cfg.weight_decay}


def test_sgd_is_plain_momentum_sgd():
    config = apply_overrides(quickstart_model()[1], {"train.optimizer.name": "sgd",
                                                     "train.optimizer.momentum": 0.8})
    optimizer = make_optimizer(nn.Linear(3, 2), config.train.optimizer)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.8
    assert optimizer.param_groups[0]["nesterov"] is False


def lrs(config, steps_per_epoch: int, updates: int, start=None) -> list[float]:
    optimizer = make_optimizer(nn.Linear(3, 2), config.train.optimizer)
    schedule = make_scheduler(optimizer, config.train, steps_per_epoch, config.train.optimizer.lr)
    if start is not None:
        schedule.load_state_dict(start)
    out = []
    for _ in range(updates):
        schedule.step()
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_schedule_warmup_cosine_floor_and_cooldown():
    base = quickstart_model()[1]
    config = apply_overrides(base, {"train.epochs": 6, "train.warmup_epochs": 1,
                                    "train.cooldown_epochs": 1, "train.min_lr": 1e-5,
                                    "train.warmup_lr": 0.0, "train.optimizer.lr": 1e-3})
    values = lrs(config, steps_per_epoch=4, updates=24)
    # warm-up: linear from warmup_lr over the first epoch's 4 updates
    assert values[:3] == pytest.approx([2.5e-4, 5e-4, 7.5e-4])
    # cosine over the 5 non-cool-down epochs (20 updates), timm's convention t = updates
    t = 10
    expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * t / 20))
    assert values[t - 1] == pytest.approx(expected)
    # cool-down: the last epoch is held at min_lr
    assert values[-4:] == pytest.approx([1e-5] * 4)


def test_schedule_resumes_where_it_stopped():
    config = apply_overrides(quickstart_model()[1], {"train.epochs": 4})
    full = lrs(config, steps_per_epoch=5, updates=20)
    resumed = lrs(config, steps_per_epoch=5, updates=12, start={"updates": 8})
    assert resumed == pytest.approx(full[8:])


# timm is the oracle: the optimizer and schedule are built without importing it (a worker's
# start), and must be what timm's factories build for the same settings.

def timm_optimizer(model: nn.Module, opt) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    names = {"sgd": "momentum", "adamw": "adamw", "adam": "adam", "lamb": "lamb"}
    extra = {"momentum": opt.momentum} if opt.name == "sgd" else {}
    return create_optimizer_v2(model, opt=names[opt.name], lr=opt.lr,
                               weight_decay=opt.weight_decay,
                               filter_bias_and_bn=opt.filter_bias_and_bn, **extra)


def groups_of(optimizer: torch.optim.Optimizer) -> list[tuple]:
    skip = {"params", "initial_lr", "fused"}  # fused: the kernel, not the update (tested below)
    return [({id(p) for p in g["params"]}, {k: v for k, v in sorted(g.items()) if k not in skip})
            for g in optimizer.param_groups]


@pytest.mark.parametrize("name", ["sgd", "adamw", "adam", "lamb"])
@pytest.mark.parametrize("filter_1d", [True, False])
@pytest.mark.parametrize("weight_decay", [0.05, 0.0])
def test_optimizer_is_what_timm_builds(name, filter_1d, weight_decay):
    model, config = quickstart_model()
    opt = config.train.optimizer.model_copy(update={"name": name, "momentum": 0.85,
                                                    "filter_bias_and_bn": filter_1d,
                                                    "weight_decay": weight_decay})
    ours, theirs = make_optimizer(model, opt), timm_optimizer(model, opt)
    assert type(ours) is type(theirs)
    assert groups_of(ours) == groups_of(theirs)


@pytest.mark.parametrize("name", ["sgd", "adamw", "adam"])
def test_fused_update_is_the_per_parameter_update(name, monkeypatch):
    model, config = quickstart_model()
    opt = config.train.optimizer.model_copy(update={"name": name, "weight_decay": 0.05})
    twin = copy.deepcopy(model)
    ours = make_optimizer(model, opt)
    assert ours.defaults["fused"] is True  # CPU parameters: torch's fused kernel
    monkeypatch.setattr(optim_module, "fused_supported", lambda model: None)
    loop = make_optimizer(twin, opt)
    assert not loop.defaults["fused"]
    for step in range(3):
        for m, optimizer in ((model, ours), (twin, loop)):
            torch.manual_seed(step)
            for p in m.parameters():
                p.grad = torch.randn_like(p)
            optimizer.step()
    moved = [(a - b).abs().max().item() for a, b in zip(model.parameters(), twin.parameters())]
    assert max(moved) < 1e-6
    assert any((a != b).any() for a, b in zip(model.parameters(),
                                              quickstart_model()[0].parameters()))


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_a_contiguous_checkpoints_moments_follow_a_channels_last_model(name):
    """Moments saved from a contiguous model (a checkpoint from before channels-last
    students), loaded into the channels-last one: the fused update must match the update of
    the same moments in the same layout (raw load_state_dict: 0.17 off after one step)."""
    torch.manual_seed(0)
    opt = OptimizerConfig(name=name, lr=0.1, weight_decay=0.0)
    contiguous = nn.Conv2d(4, 8, 3)
    grads = [torch.randn_like(p) for p in contiguous.parameters()]
    before = make_optimizer(contiguous, opt)
    for p, g in zip(contiguous.parameters(), grads):
        p.grad = g.clone()
    before.step()
    saved = before.state_dict()
    moved = []
    for layout in (torch.channels_last, torch.contiguous_format):
        model = copy.deepcopy(contiguous).to(memory_format=layout)
        optimizer = make_optimizer(model, opt)
        load_optimizer_state(optimizer, copy.deepcopy(saved))
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone().contiguous(memory_format=layout if g.dim() == 4
                                          else torch.contiguous_format)
        optimizer.step()
        moved.append(model.weight.detach().contiguous())
    torch.testing.assert_close(moved[0], moved[1])


def test_fused_only_where_torch_has_it():
    assert fused_supported(nn.Linear(3, 2)) is True
    assert fused_supported(nn.Linear(3, 2, device="meta")) is None
    assert fused_supported(nn.Linear(3, 2).half()) is True
    frozen = nn.Linear(3, 2).requires_grad_(False)
    assert fused_supported(frozen) is None


def test_no_weight_decay_names_are_honoured_like_timm():
    model, config = quickstart_model()
    first_2d = next(n for n, p in model.named_parameters() if p.ndim > 1)
    model.no_weight_decay = lambda: {first_2d}
    opt = config.train.optimizer
    ours = make_optimizer(model, opt)
    assert groups_of(ours) == groups_of(timm_optimizer(model, opt))
    param = dict(model.named_parameters())[first_2d]
    assert [g["weight_decay"] for g in ours.param_groups if any(p is param for p in g["params"])
            ] == [0.0]


def timm_lrs(config, steps_per_epoch: int, updates: int) -> list[float]:
    from timm.scheduler import create_scheduler_v2

    train = config.train
    optimizer = timm_optimizer(nn.Linear(3, 2), train.optimizer)
    warmup = min(train.warmup_epochs, train.epochs - 1)
    cooldown = min(train.cooldown_epochs, train.epochs - warmup - 1)
    constant = train.scheduler == "none"
    scheduler, _ = create_scheduler_v2(
        optimizer, sched={"cosine": "cosine", "step": "step", "none": "step"}[train.scheduler],
        num_epochs=train.epochs - cooldown, cooldown_epochs=cooldown, min_lr=train.min_lr,
        warmup_lr=train.warmup_lr if warmup else train.optimizer.lr, warmup_epochs=warmup,
        decay_epochs=train.epochs if constant else train.decay_epochs,
        decay_rate=1.0 if constant else train.decay_rate, step_on_epochs=False,
        updates_per_epoch=steps_per_epoch)
    out = [optimizer.param_groups[0]["lr"]]
    for update in range(1, updates + 1):
        scheduler.step_update(update)
        out.append(optimizer.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("changes", [
    {"train.scheduler": "cosine", "train.epochs": 7, "train.warmup_epochs": 2,
     "train.cooldown_epochs": 2, "train.min_lr": 1e-5, "train.warmup_lr": 1e-6},
    {"train.scheduler": "cosine", "train.epochs": 5},
    {"train.scheduler": "cosine", "train.epochs": 3, "train.warmup_epochs": 5,
     "train.cooldown_epochs": 5},  # clipped to fit
    {"train.scheduler": "step", "train.epochs": 9, "train.decay_epochs": 3,
     "train.decay_rate": 0.5, "train.warmup_epochs": 1, "train.warmup_lr": 0.0},
    {"train.scheduler": "none", "train.epochs": 4, "train.warmup_epochs": 1},
])
def test_schedule_is_timms(changes):
    config = apply_overrides(quickstart_model()[1], {"train.optimizer.lr": 2e-3, **changes})
    steps, epochs = 3, config.train.epochs
    optimizer = make_optimizer(nn.Linear(3, 2), config.train.optimizer)
    schedule = make_scheduler(optimizer, config.train, steps, config.train.optimizer.lr)
    ours = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps * epochs + 2):
        schedule.step()
        ours.append(optimizer.param_groups[0]["lr"])
    assert ours == pytest.approx(timm_lrs(config, steps, steps * epochs + 2), rel=1e-12)


def test_a_trial_worker_does_not_import_timm():
    import subprocess
    import sys

    code = ("import sys, bkd_sweep.trial.run, bkd_sweep.trial.teacher; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('timm', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
