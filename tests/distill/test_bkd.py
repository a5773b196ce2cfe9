"""BKDLoss against hand computation: masks, align, vector/map teachers, resize, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bkd_sweep.distill import BKDLoss, resize_map, sample_blur_mask

D = torch.float64


def identity_restore(loss: BKDLoss) -> BKDLoss:
    """Make G(x) = relu(x): both 3x3 convs become the identity (centre tap 1, bias 0)."""
    loss.double()
    with torch.no_grad():
        for conv in (loss.restore[0], loss.restore[2]):
            conv.weight.zero_()
            conv.bias.zero_()
            for c in range(conv.weight.shape[0]):
                conv.weight[c, c, 1, 1] = 1.0
    return loss


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=D)


# S: N=2, C=2, H=1, W=2, and a teacher map of the same size.
S = [[[[1.0, -2.0]], [[3.0, 4.0]]],
     [[[0.5, 1.0]], [[-1.0, 2.0]]]]
FT = [[[[0.0, 1.0]], [[1.0, 0.0]]],
      [[[2.0, 0.0]], [[0.0, 0.0]]]]


def test_channel_mask_no_align_map_teacher():
    loss = identity_restore(BKDLoss(2, 2, blur_ratio=0.3, beta=0.5))
    assert loss.align is None
    mask = t([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)
    # blurred -> relu: n0 c0=[1,0] c1=[0,0]; n1 c0=[0,0] c1=[0,2]
    # squared error: n0 (1+1)+(1+0)=3; n1 (4+0)+(0+4)=8; L = 0.5 * 11 / 2
    out = loss(student_feat=t(S), teacher_feat=t(FT), mask=mask)
    assert out.item() == pytest.approx(2.75, abs=1e-12)


def test_pixel_mask_no_align_map_teacher():
    loss = identity_restore(BKDLoss(2, 2, blur_ratio=0.3, beta=0.5, granularity="pixel"))
    mask = t([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])  # (N, 1, H, W)
    # blurred -> relu: n0 c0=[1,0] c1=[3,0]; n1 c0=[0,1] c1=[0,2]
    # squared error: n0 2+4; n1 5+4 -> 15; L = 0.5 * 15 / 2
    out = loss(student_feat=t(S), teacher_feat=t(FT), mask=mask)
    assert out.item() == pytest.approx(3.75, abs=1e-12)


def test_align_and_vector_teacher():
    loss = identity_restore(BKDLoss(3, 2, blur_ratio=0.0, beta=2.0))
    assert isinstance(loss.align, torch.nn.Conv2d)
    assert loss.align.kernel_size == (1, 1) and loss.align.bias is not None
    with torch.no_grad():
        loss.align.weight.copy_(t([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]).view(2, 3, 1, 1))
        loss.align.bias.copy_(t([0.5, -1.0]))
    student = t([[1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]]).view(2, 3, 1, 1)
    teacher = t([[1.0, 1.0], [0.5, -1.0]])  # vector [N, C_t]
    # aligned: n0 [1.5, 4], n1 [-0.5, -0.5] -> relu n1 [0, 0]
    # squared error: n0 0.25+9, n1 0.25+1 -> 10.5; L = 2 * 10.5 / 2
    out = loss(student_feat=student, teacher_feat=teacher)  # blur_ratio 0: mask of ones
    assert out.item() == pytest.approx(10.5, abs=1e-12)
    # A [N, C_s] student vector is a 1x1 map.
    out2 = loss(student_feat=student.view(2, 3), teacher_feat=teacher)
    assert out2.item() == pytest.approx(10.5, abs=1e-12)


def test_vector_teacher_global_average_pools_g_output():
    loss = identity_restore(BKDLoss(1, 1, blur_ratio=0.5, beta=1.0))
    student = t([[[[1.0, -1.0], [2.0, 3.0]]]])
    # relu -> [[1,0],[2,3]], mean 1.5; teacher 0.5 -> (1.0)^2; N = 1
    out = loss(student_feat=student, teacher_feat=t([[0.5]]), mask=t([[[[1.0]]]]))
    assert out.item() == pytest.approx(1.0, abs=1e-12)
    # The blurred channel restores to 0: (0 - 0.5)^2
    out0 = loss(student_feat=student, teacher_feat=t([[0.5]]), mask=t([[[[0.0]]]]))
    assert out0.item() == pytest.approx(0.25, abs=1e-12)


def test_resize_shrinks_by_adaptive_average_pool():
    loss = identity_restore(BKDLoss(1, 1, blur_ratio=0.0, beta=1.0))
    student = torch.arange(16, dtype=D).view(1, 1, 4, 4)
    # 2x2 block means: 2.5, 4.5, 10.5, 12.5 -> squares sum 6.25+20.25+110.25+156.25
    out = loss(student_feat=student, teacher_feat=torch.zeros(1, 1, 2, 2, dtype=D))
    assert out.item() == pytest.approx(293.0, abs=1e-9)


def test_resize_grows_bilinear():
    student = t([[[[1.0, 3.0]]]])
    # align_corners=False: sources -0.25, 0.25, 0.75, 1.25 -> 1, 1.5, 2.5, 3
    assert resize_map(student, (1, 4)).flatten().tolist() == pytest.approx([1, 1.5, 2.5, 3])
    loss = identity_restore(BKDLoss(1, 1, blur_ratio=0.0, beta=1.0))
    out = loss(student_feat=student, teacher_feat=torch.zeros(1, 1, 1, 4, dtype=D))
    assert out.item() == pytest.approx(1 + 2.25 + 6.25 + 9, abs=1e-12)


def test_random_restore_matches_manual_composition():
    torch.manual_seed(0)
    loss = BKDLoss(3, 4, blur_ratio=0.4, beta=0.7).double()
    student = torch.randn(2, 3, 5, 5, dtype=D)
    teacher = torch.randn(2, 4, 5, 5, dtype=D)
    mask = t([[1, 0, 1, 1], [0, 1, 1, 0]]).view(2, 4, 1, 1)
    a, r0, r2 = loss.align, loss.restore[0], loss.restore[2]
    x = F.conv2d(student, a.weight, a.bias) * mask
    x = F.conv2d(F.relu(F.conv2d(x, r0.weight, r0.bias, padding=1)), r2.weight, r2.bias, padding=1)
    expected = 0.7 * ((x - teacher) ** 2).sum() / 2
    out = loss(student_feat=student, teacher_feat=teacher, mask=mask)
    assert torch.allclose(out, expected, rtol=1e-12, atol=0)


def test_explicit_mask_equals_generator_sample_and_reproducible():
    torch.manual_seed(1)
    loss = BKDLoss(3, 4, blur_ratio=0.5, beta=1.0).double()
    student = torch.randn(3, 3, 2, 2, dtype=D)
    teacher = torch.randn(3, 4, 2, 2, dtype=D)
    mask = loss.sample_mask(torch.empty(3, 4, 2, 2, dtype=D),
                            generator=torch.Generator().manual_seed(7))
    assert mask.shape == (3, 4, 1, 1)
    via_gen = loss(student_feat=student, teacher_feat=teacher,
                   generator=torch.Generator().manual_seed(7))
    via_mask = loss(student_feat=student, teacher_feat=teacher, mask=mask)
    again = loss(student_feat=student, teacher_feat=teacher,
                 generator=torch.Generator().manual_seed(7))
    assert via_gen.item() == via_mask.item() == again.item()
    other = loss.sample_mask(torch.empty(3, 4, 2, 2), generator=torch.Generator().manual_seed(8))
    assert not torch.equal(mask.float(), other)


def test_mask_resampled_every_call_and_binary_without_rescale():
    torch.manual_seed(2)
    feat = torch.randn(4, 64, 3, 3)
    m1 = sample_blur_mask(feat, blur_ratio=0.4)
    m2 = sample_blur_mask(feat, blur_ratio=0.4)
    assert not torch.equal(m1, m2)
    assert set(m1.unique().tolist()) == {0.0, 1.0}  # no 1/(1-lambda) rescaling
    assert sample_blur_mask(feat, blur_ratio=0.0).eq(1).all()
    # The loss itself resamples: two calls on identical inputs differ.
    loss = BKDLoss(64, 64, blur_ratio=0.4, beta=1.0)
    a = loss(student_feat=feat, teacher_feat=torch.zeros(4, 64, 3, 3))
    b = loss(student_feat=feat, teacher_feat=torch.zeros(4, 64, 3, 3))
    assert a.item() != b.item()


@pytest.mark.parametrize("granularity,shape,expect", [
    ("channel", (4000, 32, 2, 2), (4000, 32, 1, 1)),
    ("pixel", (200, 3, 16, 16), (200, 1, 16, 16)),
])
@pytest.mark.parametrize("ratio", [0.15, 0.6])
def test_empirical_zero_rate(granularity, shape, expect, ratio):
    mask = sample_blur_mask(torch.empty(shape), blur_ratio=ratio, granularity=granularity,
                            generator=torch.Generator().manual_seed(3))
    assert mask.shape == expect
    zero_rate = (mask == 0).float().mean().item()
    assert abs(zero_rate - ratio) < 0.01  # >= 51,200 draws: std < 0.0022


def test_gradients_reach_student_align_restore_but_not_teacher():
    torch.manual_seed(4)
    loss = BKDLoss(3, 5, blur_ratio=0.15, beta=1.0)
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    teacher_map = torch.randn(2, 5, 2, 2, requires_grad=True)
    teacher_vec = torch.randn(2, 5, requires_grad=True)
    mask = torch.ones(2, 5, 1, 1)
    (loss(student_feat=student, teacher_feat=teacher_map, mask=mask)
     + loss(student_feat=student, teacher_feat=teacher_vec, mask=mask)).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    for p in (loss.align.weight, loss.align.bias, loss.restore[0].weight, loss.restore[2].weight,
              loss.restore[2].bias):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert teacher_map.grad is None and teacher_vec.grad is None


def test_parameters_and_shape_errors():
    same = BKDLoss(4, 4, blur_ratio=0.1, beta=1.0)
    assert same.align is None
    # restore only: 2 x (4*4*9 + 4)
    assert sum(p.numel() for p in same.parameters()) == 2 * (4 * 4 * 9 + 4)
    diff = BKDLoss(3, 4, blur_ratio=0.1, beta=1.0)
    assert sum(p.numel() for p in diff.parameters()) == 2 * (4 * 4 * 9 + 4) + 3 * 4 + 4
    with pytest.raises(ValueError, match="channels"):
        diff(student_feat=torch.randn(2, 4, 2, 2), teacher_feat=torch.randn(2, 4))
    with pytest.raises(ValueError, match="teacher_feat"):
        diff(student_feat=torch.randn(2, 3, 2, 2), teacher_feat=torch.randn(2, 3))
    with pytest.raises(ValueError, match="batch"):
        diff(student_feat=torch.randn(2, 3, 2, 2), teacher_feat=torch.randn(3, 4))
    with pytest.raises(ValueError, match="mask"):
        diff(student_feat=torch.randn(2, 3, 2, 2), teacher_feat=torch.randn(2, 4),
             mask=torch.ones(2, 3, 1, 1))
    with pytest.raises(ValueError, match="granularity"):
        BKDLoss(3, 4, blur_ratio=0.1, beta=1.0, granularity="token")
    with pytest.raises(ValueError, match="blur_ratio"):
        BKDLoss(3, 4, blur_ratio=1.0, beta=1.0)
    with pytest.raises(TypeError):  # keyword-only: no positional student/teacher
        diff(torch.randn(2, 3, 2, 2), torch.randn(2, 4))
