"""WSLD and KL logit distillation against formulas written out with python floats."""

from __future__ import annotations

import math

import pytest
import torch

from bkd_sweep.distill import logit_kd_loss
from bkd_sweep.registry import UnknownNameError

D = torch.float64
STUDENT = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]]
TEACHER = [[1.5, 1.0, -0.5], [0.0, 0.0, 1.5], [0.0, 2.5, 0.5]]
TARGETS = [0, 2, 1]
SOFT = [[0.7, 0.3, 0.0], [0.0, 0.5, 0.5], [0.1, 0.8, 0.1]]


def log_softmax(z: list[float], tau: float = 1.0) -> list[float]:
    scaled = [v / tau for v in z]
    lse = math.log(sum(math.exp(v) for v in scaled))
    return [v - lse for v in scaled]


def softmax(z: list[float], tau: float = 1.0) -> list[float]:
    return [math.exp(v) for v in log_softmax(z, tau)]


def hand_weights(targets, eps: float = 1e-7) -> list[float]:
    """w_n = 1 - exp(-max(CE_s / (CE_t + eps), 0)); targets: indices or soft rows."""
    weights = []
    for s, te, y in zip(STUDENT, TEACHER, targets):
        row = y if isinstance(y, list) else [1.0 if k == y else 0.0 for k in range(3)]
        ce_s = -sum(p * l for p, l in zip(row, log_softmax(s)))
        ce_t = -sum(p * l for p, l in zip(row, log_softmax(te)))
        weights.append(1 - math.exp(-max(ce_s / (ce_t + eps), 0.0)))
    return weights


def hand_wsld(targets, tau: float) -> float:
    terms = []
    for s, te, w in zip(STUDENT, TEACHER, hand_weights(targets)):
        soft_ce = -sum(p * l for p, l in zip(softmax(te, tau), log_softmax(s, tau)))
        terms.append(w * soft_ce)
    return tau ** 2 * sum(terms) / len(terms)


def hand_kl(tau: float) -> float:
    total = 0.0
    for s, te in zip(STUDENT, TEACHER):
        lt, ls = log_softmax(te, tau), log_softmax(s, tau)
        total += sum(math.exp(a) * (a - b) for a, b in zip(lt, ls))
    return tau ** 2 * total / len(STUDENT)


def tensors(requires_grad: bool = False):
    s = torch.tensor(STUDENT, dtype=D, requires_grad=requires_grad)
    te = torch.tensor(TEACHER, dtype=D, requires_grad=requires_grad)
    return s, te


def test_wsld_weights_are_spread():
    # The example exercises the weight: different per sample, none saturated at 0 or 1.
    w = hand_weights(TARGETS)
    assert min(w) > 0.1 and max(w) < 0.99 and max(w) - min(w) > 0.2


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_wsld_matches_hand_formula(tau):
    s, te = tensors()
    out = logit_kd_loss(student_logits=s, teacher_logits=te, targets=torch.tensor(TARGETS),
                        temperature=tau, kind="wsld")
    assert out.item() == pytest.approx(hand_wsld(TARGETS, tau), rel=1e-12)


def test_wsld_soft_targets_use_soft_cross_entropy():
    s, te = tensors()
    out = logit_kd_loss(student_logits=s, teacher_logits=te,
                        targets=torch.tensor(SOFT, dtype=D), temperature=2.0)
    assert out.item() == pytest.approx(hand_wsld(SOFT, 2.0), rel=1e-12)
    # and differs from the index-target value: the targets really enter the weights
    assert abs(out.item() - hand_wsld(TARGETS, 2.0)) > 1e-3


def test_wsld_weight_is_detached():
    s, te = tensors(requires_grad=True)
    logit_kd_loss(student_logits=s, teacher_logits=te, targets=torch.tensor(TARGETS),
                  temperature=2.0).backward()
    # Reference gradient: the same loss with w as a constant.
    s2 = torch.tensor(STUDENT, dtype=D, requires_grad=True)
    w = torch.tensor(hand_weights(TARGETS), dtype=D)
    p_t = torch.softmax(torch.tensor(TEACHER, dtype=D) / 2.0, dim=1)
    soft_ce = -(p_t * torch.log_softmax(s2 / 2.0, dim=1)).sum(1)
    (4.0 * (w * soft_ce).mean()).backward()
    assert torch.allclose(s.grad, s2.grad, rtol=1e-9, atol=1e-12)
    assert te.grad is None


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_kl_matches_hand_formula(tau):
    s, te = tensors()
    out = logit_kd_loss(student_logits=s, teacher_logits=te, targets=None, temperature=tau,
                        kind="kl")
    assert out.item() == pytest.approx(hand_kl(tau), rel=1e-12)


def test_kl_zero_when_equal_and_no_teacher_grad():
    s, te = tensors(requires_grad=True)
    same = logit_kd_loss(student_logits=te.detach(), teacher_logits=te, targets=None,
                         temperature=2.0, kind="kl")
    assert same.item() == pytest.approx(0.0, abs=1e-14)
    logit_kd_loss(student_logits=s, teacher_logits=te, targets=torch.tensor(TARGETS),
                  temperature=2.0, kind="kl").backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert te.grad is None


def test_errors():
    s, te = tensors()
    with pytest.raises(UnknownNameError, match="kl, wsld"):
        logit_kd_loss(student_logits=s, teacher_logits=te, targets=None, temperature=2.0,
                      kind="mse")
    with pytest.raises(ValueError, match="targets"):
        logit_kd_loss(student_logits=s, teacher_logits=te, targets=None, temperature=2.0)
    with pytest.raises(ValueError, match="shapes"):
        logit_kd_loss(student_logits=s, teacher_logits=te[:, :2], targets=None,
                      temperature=2.0, kind="kl")
    with pytest.raises(TypeError):  # keyword-only: no positional student/teacher
        logit_kd_loss(s, te, torch.tensor(TARGETS), 2.0)
