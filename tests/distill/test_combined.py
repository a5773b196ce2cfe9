"""DistillLoss: per-mode totals, parameters, validation, gradients, config wiring."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bkd_sweep.distill import BKDLoss, DistillLoss, LossTerms, logit_kd_loss
from bkd_sweep.config import DistillConfig

D = torch.float64
N, K, CS, CT = 3, 4, 6, 5


def inputs(requires_grad: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(
        student_logits=torch.randn(N, K, generator=g, dtype=D, requires_grad=requires_grad),
        targets=torch.tensor([0, 3, 1]),
        student_feat=torch.randn(N, CS, 4, 4, generator=g, dtype=D, requires_grad=requires_grad),
        teacher_logits=torch.randn(N, K, generator=g, dtype=D, requires_grad=requires_grad),
        teacher_feat=torch.randn(N, CT, 2, 2, generator=g, dtype=D, requires_grad=requires_grad),
    )


def build(mode: str, **kw) -> DistillLoss:
    cfg = DistillConfig(mode=mode, alpha=0.3, beta=0.05, blur_ratio=0.4, temperature=2.0, **kw)
    return DistillLoss.from_config(cfg, student_channels=CS, teacher_channels=CT).double()


@pytest.mark.parametrize("mode,keys", [
    ("none", {"task"}), ("logit", {"task", "logit"}), ("bkd", {"task", "bkd"}),
    ("mixed", {"task", "logit", "bkd"}),
])
def test_totals_equal_sum_of_weighted_terms(mode, keys):
    torch.manual_seed(0)
    loss = build(mode)
    x = inputs()
    terms = loss(**x, generator=torch.Generator().manual_seed(5))
    assert isinstance(terms, LossTerms)
    floats = terms.as_floats()
    assert set(floats) == keys
    assert terms.total.item() == pytest.approx(sum(floats.values()), rel=1e-12)
    assert terms.task.item() == pytest.approx(
        F.cross_entropy(x["student_logits"], x["targets"]).item(), rel=1e-12)
    if "logit" in keys:
        expected = 0.3 * logit_kd_loss(student_logits=x["student_logits"],
                                       teacher_logits=x["teacher_logits"],
                                       targets=x["targets"], temperature=2.0, kind="wsld")
        assert terms.logit.item() == pytest.approx(expected.item(), rel=1e-12)
    else:
        assert terms.logit is None
    if "bkd" in keys:
        expected = loss.bkd(student_feat=x["student_feat"], teacher_feat=x["teacher_feat"],
                            generator=torch.Generator().manual_seed(5))
        assert terms.bkd.item() == pytest.approx(expected.item(), rel=1e-12)
        assert loss.bkd.beta == 0.05 and loss.bkd.blur_ratio == 0.4
    else:
        assert terms.bkd is None


def test_mixed_total_by_hand_from_parts():
    loss = build("mixed", logit_loss="kl")
    x = inputs()
    terms = loss(**x, generator=torch.Generator().manual_seed(1))
    kl = logit_kd_loss(student_logits=x["student_logits"], teacher_logits=x["teacher_logits"],
                       targets=None, temperature=2.0, kind="kl")
    bkd = loss.bkd(student_feat=x["student_feat"], teacher_feat=x["teacher_feat"],
                   generator=torch.Generator().manual_seed(1))
    ce = F.cross_entropy(x["student_logits"], x["targets"])
    assert terms.total.item() == pytest.approx((ce + 0.3 * kl + bkd).item(), rel=1e-12)


def test_none_and_logit_carry_no_parameters():
    for mode in ("none", "logit"):
        loss = build(mode)
        assert loss.bkd is None and list(loss.parameters()) == []
    # teacher_channels may be unknown when no feature is distilled
    assert DistillLoss.from_config(DistillConfig(mode="logit"), student_channels=CS,
                                   teacher_channels=None).bkd is None
    for mode in ("bkd", "mixed"):
        loss = build(mode)
        assert isinstance(loss.bkd, BKDLoss) and loss.bkd.align is not None
        names = {n for n, _ in loss.named_parameters()}
        assert {"bkd.align.weight", "bkd.restore.0.weight", "bkd.restore.2.bias"} <= names


def test_needs_flags_and_missing_inputs():
    assert not build("none").needs_teacher
    assert build("logit").needs_teacher_logits and not build("logit").needs_features
    assert build("bkd").needs_features and not build("bkd").needs_teacher_logits
    x = inputs()
    with pytest.raises(ValueError, match="'logit' needs teacher_logits"):
        build("logit")(student_logits=x["student_logits"], targets=x["targets"])
    with pytest.raises(ValueError, match="'bkd' needs teacher_feat"):
        build("bkd")(student_logits=x["student_logits"], targets=x["targets"],
                     student_feat=x["student_feat"])
    with pytest.raises(ValueError, match="'mixed' needs teacher_logits"):
        build("mixed")(student_logits=x["student_logits"], targets=x["targets"],
                       student_feat=x["student_feat"], teacher_feat=x["teacher_feat"])
    with pytest.raises(ValueError, match="student_feat and teacher_feat"):
        build("mixed")(student_logits=x["student_logits"], targets=x["targets"],
                       teacher_logits=x["teacher_logits"])
    with pytest.raises(ValueError, match="teacher_channels"):
        DistillLoss.from_config(DistillConfig(mode="bkd"), student_channels=CS,
                                teacher_channels=None)
    with pytest.raises(ValueError, match="unknown distillation mode"):
        DistillLoss(mode="feature")
    with pytest.raises(TypeError):  # keyword-only forward
        build("none")(x["student_logits"], x["targets"])


def test_gradients_reach_student_and_loss_parts_never_teacher():
    torch.manual_seed(0)
    loss = build("mixed")
    x = inputs(requires_grad=True)
    loss(**x).total.backward()
    for name in ("student_logits", "student_feat"):
        assert x[name].grad is not None and x[name].grad.abs().sum() > 0
    for name in ("teacher_logits", "teacher_feat"):
        assert x[name].grad is None
    for name, p in loss.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_time_major_student_feature_is_averaged_before_blur():
    loss = build("bkd")
    x = inputs()
    seq = torch.stack([x["student_feat"] * 0.5, x["student_feat"] * 1.5])  # mean = feat
    a = loss(**{**x, "student_feat": seq}, generator=torch.Generator().manual_seed(2))
    b = loss(**x, generator=torch.Generator().manual_seed(2))
    assert a.bkd.item() == pytest.approx(b.bkd.item(), rel=1e-12)


def test_task_loss_label_smoothing_and_soft_targets():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]], dtype=D)
    loss = DistillLoss.from_config(DistillConfig(mode="none"), student_channels=4,
                                   teacher_channels=None, label_smoothing=0.1)

    def lsm(row):
        lse = math.log(sum(math.exp(v) for v in row))
        return [v - lse for v in row]

    # smoothed target: (1 - eps) one-hot + eps / K
    hand = 0.0
    for row, y in zip(logits.tolist(), [0, 2]):
        q = [0.9 * (k == y) + 0.1 / 3 for k in range(3)]
        hand -= sum(a * b for a, b in zip(q, lsm(row)))
    out = loss(student_logits=logits, targets=torch.tensor([0, 2]))
    assert out.task.item() == pytest.approx(hand / 2, rel=1e-12)
    soft = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.25, 0.75]], dtype=D)
    hand_soft = -sum(sum(a * b for a, b in zip(q, lsm(row)))
                     for row, q in zip(logits.tolist(), soft.tolist())) / 2
    out = loss(student_logits=logits, targets=soft)
    assert out.task.item() == pytest.approx(hand_soft, rel=1e-12)


def test_soft_targets_through_mixed_mode():
    loss = build("mixed")
    x = inputs()
    soft = torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.2, 0.8], [1.0, 0, 0, 0]], dtype=D)
    terms = loss(**{**x, "targets": soft}, generator=torch.Generator().manual_seed(3))
    expected = 0.3 * logit_kd_loss(student_logits=x["student_logits"],
                                   teacher_logits=x["teacher_logits"], targets=soft,
                                   temperature=2.0)
    assert terms.logit.item() == pytest.approx(expected.item(), rel=1e-12)
    assert terms.total.item() == pytest.approx(sum(terms.as_floats().values()), rel=1e-12)


def test_oversized_terms():
    terms = LossTerms(total=torch.tensor(13.0), task=torch.tensor(1.0),
                      logit=torch.tensor(2.0), bkd=torch.tensor(10.0))
    assert terms.oversized(5.0) == ["bkd"]
    assert terms.oversized(1.0) == ["logit", "bkd"]
