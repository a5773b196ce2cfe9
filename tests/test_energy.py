"""energy.measure: exact SOP/MAC counts against brute-force loops and closed-form layer counts."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from bkd_sweep.energy import measure

T = 4


# --------------------------------------------------------------------------------------
# brute-force references (loops, independent of the implementation)


def brute_conv2d_sops(x, cout, k, stride=1, pad=0, dil=1, groups=1):
    """For every output position/channel, count the nonzero inputs in its receptive field."""
    n_, c, h, w = x.shape
    ho = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    cin_g, cout_g = c // groups, cout // groups
    nz = (x != 0).tolist()
    total = 0
    for n in range(n_):
        for g in range(groups):
            per_pos = 0
            for i in range(ho):
                for j in range(wo):
                    for ci in range(g * cin_g, (g + 1) * cin_g):
                        for ki in range(k):
                            for kj in range(k):
                                hh, ww = i * stride - pad + ki * dil, j * stride - pad + kj * dil
                                if 0 <= hh < h and 0 <= ww < w and nz[n][ci][hh][ww]:
                                    per_pos += 1
            total += per_pos * cout_g
    return total


def brute_conv_transpose2d_sops(x, cout, k, stride, pad, groups):
    """Each input spike reaches cout/groups channels at every kernel tap inside the output."""
    n_, c, h, w = x.shape
    ho, wo = (h - 1) * stride - 2 * pad + k, (w - 1) * stride - 2 * pad + k
    total = 0
    for n, ci, hh, ww in (x != 0).nonzero().tolist():
        for ki in range(k):
            for kj in range(k):
                oh, ow = hh * stride - pad + ki, ww * stride - pad + kj
                if 0 <= oh < ho and 0 <= ow < wo:
                    total += cout // groups
    return total


def spikes(*shape, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < p).float()


# --------------------------------------------------------------------------------------
# conv / linear fed by hand-made spikes


def test_padded_conv_hand_count():
    """3x3, padding 1, 4x4 input: corner spike -> 4 outputs, interior -> 9, edge -> 6."""
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = x[0, 0, 0, 2] = 1.0
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    r = measure(conv, x)
    assert r.sops == (4 + 9 + 6) * 2  # 38; rate x dense would say 3/16 * 9 * 16 * 2 = 54
    assert r.macs == 0
    (lay,) = r.layers
    assert lay.input_is_spike and lay.firing_rate == pytest.approx(3 / 16)
    assert lay.dense_macs == 2 * 16 * 9
    assert r.energy_mj == pytest.approx(0.9 * 38 * 1e-9)


def test_circular_padding_counts_wrapped_spikes():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0
    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    assert measure(conv, x).sops == 9  # the corner spike reappears on the wrapped borders


@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,dil,groups",
    [(3, 4, 3, 1, 1, 1, 1), (4, 6, 3, 2, 1, 1, 2), (2, 3, 3, 1, 2, 2, 1), (4, 4, 1, 1, 0, 1, 4)],
)
def test_conv_sops_match_brute_force(cin, cout, k, stride, pad, dil, groups):
    x = spikes(2, cin, 6, 5, seed=cin + cout)
    conv = layer.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=groups)
    r = measure(conv, x)
    assert r.sops == brute_conv2d_sops(x, cout, k, stride, pad, dil, groups) / 2


def test_conv_transpose_sops_match_brute_force():
    x = spikes(1, 4, 3, 3, seed=3)
    conv = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2)
    assert measure(conv, x).sops == brute_conv_transpose2d_sops(x, 6, 3, 2, 1, 2)


def test_conv1d_and_linear_fed_by_spikes():
    x = spikes(3, 2, 7, seed=1)
    conv = nn.Conv1d(2, 5, 3, padding=1)
    nz = (x != 0).tolist()
    expect = sum(  # per output position, nonzeros in the 3-tap window (zero padded)
        nz[n][c][j]
        for n in range(3)
        for i in range(7)
        for c in range(2)
        for j in (i - 1, i, i + 1)
        if 0 <= j < 7
    ) * 5
    assert measure(conv, x).sops == pytest.approx(expect / 3)

    s = spikes(4, 6, seed=2)
    lin = nn.Linear(6, 3)
    r = measure(lin, s)
    assert r.sops == s.count_nonzero().item() * 3 / 4
    assert r.layers[0].firing_rate == pytest.approx(s.mean().item())
    assert r.layers[0].dense_macs == 18


def test_real_valued_input_counts_dense_macs():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    r = measure(conv, torch.randn(2, 3, 5, 5))
    assert r.sops == 0 and r.macs == 4 * 25 * 3 * 9
    assert not r.layers[0].input_is_spike and r.layers[0].firing_rate is None


# --------------------------------------------------------------------------------------
# a tiny multi-step SNN: direct encoding, x T accounting, firing rates


class TinySNN(nn.Module):
    """conv(real) -> BN -> LIF -> conv(spikes, stride 2) -> LIF -> flatten -> fc(spikes)."""

    def __init__(self, loop: bool = False) -> None:
        super().__init__()
        self.loop = loop  # single-step: iterate T times in Python
        self.conv1 = layer.Conv2d(2, 4, 3, padding=1, step_mode="m")
        self.bn = layer.BatchNorm2d(4, step_mode="m")
        self.lif1 = neuron.LIFNode(step_mode="m")
        self.conv2 = layer.Conv2d(4, 3, 3, padding=1, stride=2, step_mode="m")
        self.lif2 = neuron.LIFNode(step_mode="m")
        self.flat = layer.Flatten(step_mode="m")
        self.fc = layer.Linear(3 * 4 * 4, 5, step_mode="m")
        self.drop = nn.Dropout(0.5)
        with torch.no_grad():
            self.conv1.weight.mul_(6.0)
            self.conv2.weight.mul_(8.0)

    def body(self, x):
        return self.fc(self.flat(self.lif2(self.conv2(self.lif1(self.bn(self.conv1(x)))))))

    def forward(self, x):
        if self.loop:
            return torch.stack([self.body(x) for _ in range(T)]).mean(0)
        return self.drop(self.body(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0))


def capture(model, names):
    outs = {n: [] for n in names}
    mods = dict(model.named_modules())
    hs = [
        mods[n].register_forward_hook(lambda m, a, o, n=n: outs[n].append(o.detach().clone()))
        for n in names
    ]
    return outs, hs


def test_tiny_snn_exact_counts_and_rates():
    torch.manual_seed(0)
    net = TinySNN()
    x = torch.randn(2, 2, 8, 8)
    outs, hs = capture(net, ["lif1", "lif2"])
    r = measure(net, x, timesteps=T)
    for h in hs:
        h.remove()
    s1, s2 = outs["lif1"][0], outs["lif2"][0]  # [T, B, ...]
    assert 0 < s1.mean() < 1 and 0 < s2.mean() < 1  # the test exercises real spikes

    by = {lay.name: lay for lay in r.layers}
    assert list(by) == ["conv1", "conv2", "fc"]  # BN, neurons, flatten: not counted
    assert by["conv1"].macs == T * 4 * 64 * 2 * 9 and by["conv1"].sops == 0
    assert by["conv1"].dense_macs == 4 * 64 * 2 * 9
    assert by["conv2"].sops == brute_conv2d_sops(s1.flatten(0, 1), 3, 3, 2, 1) / 2
    assert by["conv2"].dense_macs == 3 * 16 * 4 * 9 and by["conv2"].macs == 0
    assert by["conv2"].firing_rate == pytest.approx(s1.mean().item())
    assert by["fc"].sops == s2.count_nonzero().item() * 5 / 2
    assert by["fc"].dense_macs == 48 * 5

    assert r.macs == by["conv1"].macs
    assert r.sops == by["conv2"].sops + by["fc"].sops
    assert r.energy_mj == pytest.approx((4.6 * r.macs + 0.9 * r.sops) * 1e-9)
    assert sum(lay.energy_pj for lay in r.layers) == pytest.approx(r.energy_mj * 1e9)
    assert r.firing_rates == pytest.approx({"lif1": s1.mean().item(), "lif2": s2.mean().item()})
    weighted = (s1.sum() + s2.sum()) / (s1.numel() + s2.numel())
    assert r.mean_firing_rate == pytest.approx(weighted.item())
    assert r.timesteps == T and not r.first_layer_once


def test_first_layer_once_and_energy_constants():
    torch.manual_seed(1)
    net = TinySNN()
    x = torch.randn(2, 2, 8, 8)
    full = measure(net, x, timesteps=T)
    once = measure(net, x, timesteps=T, first_layer_once=True, e_mac_pj=3.0, e_ac_pj=0.5)
    dense1 = 4 * 64 * 2 * 9
    assert once.first_layer_once and once.layers[0].macs == dense1
    assert once.macs == full.macs - (T - 1) * dense1
    assert once.sops == full.sops  # only the real-valued first layer changes
    assert once.energy_mj == pytest.approx((3.0 * once.macs + 0.5 * once.sops) * 1e-9)
    assert once.layers[1].energy_pj == pytest.approx(0.5 * once.layers[1].sops)


class EventSumNet(nn.Module):
    """Binary event input -> conv1 (spikes) -> LIF -> conv2 fed s + s (real under exact)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = layer.Conv2d(2, 4, 3, padding=1, step_mode="m")
        self.lif = neuron.LIFNode(step_mode="m")
        self.conv2 = layer.Conv2d(4, 3, 3, padding=1, step_mode="m")
        with torch.no_grad():
            self.conv1.weight.mul_(6.0)

    def forward(self, x):
        spikes = self.lif(self.conv1(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)))
        return self.conv2(spikes + spikes).mean(0)


def test_first_layer_once_never_moves_past_a_first_layer_fed_spikes():
    torch.manual_seed(4)
    events = (torch.rand(2, 2, 8, 8) < 0.3).float()
    net = EventSumNet()
    full, once = (measure(net, events, timesteps=T),
                  measure(net, events, timesteps=T, first_layer_once=True))
    assert full.layers[0].sops > 0 and full.layers[0].macs == 0  # conv1 is fed spikes
    dense2 = 3 * 64 * 4 * 9
    assert full.layers[1].macs == T * dense2  # conv2's real input changes every step
    assert once.layers[1].macs == full.layers[1].macs and once.macs == full.macs


def test_single_step_loop_counts_like_multi_step():
    torch.manual_seed(2)
    multi = TinySNN()
    single = copy.deepcopy(multi)
    functional.set_step_mode(single, "s")
    single.loop = True
    x = torch.randn(3, 2, 8, 8)
    rm, rs = measure(multi, x, timesteps=T), measure(single, x, timesteps=T)
    assert rs.macs == rm.macs and rs.sops == pytest.approx(rm.sops) and rm.sops > 0
    for a, b in zip(rm.layers, rs.layers, strict=True):
        assert (a.name, a.dense_macs, a.macs) == (b.name, b.dense_macs, b.macs)
        assert a.sops == pytest.approx(b.sops)
    assert rs.firing_rates == pytest.approx(rm.firing_rates)


def test_reset_and_modes_restored():
    torch.manual_seed(3)
    net = TinySNN()
    net.train()
    net.bn.eval()  # a submodule in a different mode stays so
    net(torch.randn(3, 2, 8, 8))  # leaves batch-3 state: measure must reset first
    seen = []
    h = net.register_forward_pre_hook(lambda m, a: seen.append((m.training, m.drop.training)))
    r = measure(net, torch.randn(2, 2, 8, 8), timesteps=T)
    h.remove()
    assert seen == [(False, False)]  # eval during the measurement
    assert net.training and net.drop.training and not net.bn.training
    assert net.lif1.v == 0.0 and net.lif2.v == 0.0  # reset afterwards
    assert r.sops > 0


# --------------------------------------------------------------------------------------
# matmuls outside Conv/Linear: spiking self-attention, fused attention


class SpikeAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d, d))

    def forward(self, q, k, v):
        attn = q @ k.transpose(-2, -1)  # spikes x spikes
        out = (attn * 0.125) @ v  # real x spikes
        return out @ self.w  # real x real


class Wrapper(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.attn = SpikeAttention(d)

    def forward(self, x):  # x: [B, 3, N, D] binary
        return self.attn(x[:, 0], x[:, 1], x[:, 2])


def test_spiking_attention_matmuls_are_sops():
    b, n, d = 2, 5, 4
    x = spikes(b, 3, n, d, p=0.5, seed=4)
    q, k, v = x[:, 0], x[:, 1], x[:, 2]
    r = measure(Wrapper(d), x)
    by = {lay.name: lay for lay in r.layers}
    assert list(by) == ["attn:bmm0", "attn:bmm1", "attn:mm0"]
    pairs = sum(
        int(q[bb, i, c] and k[bb, j, c])
        for bb in range(b)
        for i in range(n)
        for j in range(n)
        for c in range(d)
    )
    assert by["attn:bmm0"].sops == pairs / b and by["attn:bmm0"].input_is_spike
    assert by["attn:bmm1"].sops == v.count_nonzero().item() * n / b  # each spike feeds n rows
    assert by["attn:bmm1"].firing_rate == pytest.approx(v.mean().item())
    real = [lay for lay in r.layers if lay.name not in ("attn:bmm0", "attn:bmm1")]
    assert sum(lay.macs for lay in real) == n * d * d and all(lay.sops == 0 for lay in real)


# the two association orders of spiking self-attention, by hand on tiny tensors:
# Q = [[1,0],[1,1],[0,1]], K = [[1,1],[0,1],[1,0]], V = [[1,0],[1,1],[0,1]] (N = 3, d = 2)
Q_T = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
K_T = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
V_T = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


class TwoOrders(nn.Module):
    def __init__(self, kv_first: bool) -> None:
        super().__init__()
        self.kv_first = kv_first

    def forward(self, x):  # x: [B, 3, N, d]
        q, k, v = x[:, 0], x[:, 1], x[:, 2]
        if self.kv_first:
            return q @ (k.transpose(-2, -1) @ v)
        return (q @ k.transpose(-2, -1)) @ v


def hand_product_sops(a, b):
    """a @ b of activations (one sample): spike-meets-spike products when both are binary,
    else one accumulate per spike of the binary operand and column/row of the other."""
    a, b = a.tolist(), b.tolist()
    m, k, n = len(a), len(b), len(b[0])
    a_bin = all(x in (0.0, 1.0) for row in a for x in row)
    b_bin = all(x in (0.0, 1.0) for row in b for x in row)
    total = 0
    for i in range(m):
        for c in range(k):
            for j in range(n):
                if a_bin and b_bin:
                    total += int(a[i][c] != 0 and b[c][j] != 0)
                elif a_bin:
                    total += int(a[i][c] != 0)  # a's spike accumulates b's row into out[i, :]
                elif b_bin:
                    total += int(b[c][j] != 0)  # b's spike accumulates a's column
    return total


@pytest.mark.parametrize("convention", ["exact", "paper"])
@pytest.mark.parametrize("kv_first", [False, True])
def test_attention_orders_count_their_true_products(convention, kv_first):
    x = torch.stack([Q_T, K_T, V_T]).unsqueeze(0)  # [1, 3, N, d]
    r = measure(TwoOrders(kv_first), x, convention=convention)
    by = {lay.name: lay.sops for lay in r.layers}
    kt = K_T.t()
    if kv_first:  # K^T V = [[1,1],[2,1]] holds a 2: a sum of products, not spikes
        inner, outer = (kt, V_T), (Q_T, kt @ V_T)
        hand = (5, 8)  # 2*1 + 1*2 + 1*1 token pairs; nnz(Q) x d = 4 x 2
    else:  # Q K^T = [[1,0,1],[2,1,1],[1,1,0]]
        inner, outer = (Q_T, kt), (Q_T @ kt, V_T)
        hand = (8, 12)  # 2*2 + 2*2 channel pairs; nnz(V) x N = 4 x 3
    assert (hand_product_sops(*inner), hand_product_sops(*outer)) == hand
    assert by == {"bmm0": hand[0], "bmm1": hand[1]} and r.macs == 0
    assert r.layers[1].firing_rate == pytest.approx(4 / 6)  # Q or V: the binary operand


def test_attention_product_count_is_the_same_under_both_conventions():
    x = spikes(2, 3, 16, 4, p=0.6, seed=7)  # N = 16 > d = 4: K^T V sums many products
    exact = measure(TwoOrders(True), x, convention="exact")
    paper = measure(TwoOrders(True), x, convention="paper")
    q = x[:, 0]
    assert exact.layers[1].sops == paper.layers[1].sops == q.count_nonzero().item() * 4 / 2


def test_integer_activation_products():
    """Two non-binary activations cost MACs under both conventions (``paper`` counts an
    integer *input to weights* as spikes, not an operand of an activation product); an
    integer input times a weight keeps the layer rule; an ANN counts MACs only."""
    sew = spikes(2, 5, 3, seed=1) + spikes(2, 5, 3, seed=2)  # SEW ADD output: 0, 1, 2
    assert sew.max() == 2

    class Prod(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))

        def forward(self, x):
            real = torch.bmm(x, x.transpose(-2, -1).mul(0.3))  # integer x real: MACs
            spk = x.transpose(-2, -1) @ (x > 1).float()  # integer x binary: nnz(binary) x 3
            return real.sum() + spk.sum() + (x @ self.w).sum()  # integer x weight

    for conv in ("exact", "paper"):
        by = {lay.name: lay for lay in measure(Prod(), sew, convention=conv).layers}
        assert by["bmm0"].sops == 0 and by["bmm0"].macs == 5 * 3 * 5
        assert by["bmm1"].sops == (sew > 1).count_nonzero().item() * 3 / 2
        if conv == "paper":  # each count of the input meets the weight row: sum x 4
            assert by["mm0"].sops == sew.sum().item() * 4 / 2 and by["mm0"].macs == 0
        else:
            assert by["mm0"].sops == 0 and by["mm0"].macs == 5 * 3 * 4
    ann = measure(TwoOrders(True), torch.stack([Q_T, K_T, V_T]).unsqueeze(0), ann=True)
    assert ann.sops == 0 and ann.macs == 2 * 3 * 2 + 3 * 2 * 2


def test_spikformer_attention_counts_nnz_q_times_head_width():
    from bkd_sweep.models.students._registry import create_student

    torch.manual_seed(0)
    net = create_student("spikformer_2_256", num_classes=10, image_size=32, timesteps=2)
    for m in net.modules():  # force firing: lower every threshold
        if isinstance(m, neuron.BaseNode):
            m.v_threshold = m.v_threshold * 0.05
    attn = net.blocks[0].attn
    assert attn.heads == 16  # 64 tokens > d_head 16: q @ (k^T @ v)
    seen = []
    h = attn.qkv_neuron.register_forward_hook(lambda m, a, o: seen.append(o[:, :, :256]))
    x = torch.randn(2, 3, 32, 32)
    paper = {lay.name: lay.sops for lay in measure(net, x, timesteps=2, convention="paper").layers}
    exact = {lay.name: lay.sops for lay in measure(net, x, timesteps=2, convention="exact").layers}
    h.remove()
    nnz_q = seen[0].count_nonzero().item()
    assert nnz_q > 0 and seen[0].max() == 1
    assert paper["blocks.0.attn:bmm1"] == exact["blocks.0.attn:bmm1"] == nnz_q * 16 / 2


def test_fused_attention_counts_macs():
    class SDPA(nn.Module):
        def forward(self, x):
            return F.scaled_dot_product_attention(x, x, x)

    bsz, h, length, e = 2, 3, 6, 8
    r = measure(SDPA(), torch.randn(bsz, h, length, e))
    assert r.sops == 0 and r.macs == h * length * length * (e + e)


# --------------------------------------------------------------------------------------
# ANN teacher through the same path


def conv_macs(cin, cout, k, hw):
    return cin * cout * k * k * hw * hw


def resnet18_macs_32(num_classes):
    """Conv/linear MACs of torchvision resnet18 at 32x32 (16 after conv1, 8 after maxpool)."""
    total = conv_macs(3, 64, 7, 16)
    total += 4 * conv_macs(64, 64, 3, 8)
    cin, hw = 64, 8
    for cout in (128, 256, 512):
        hw //= 2
        total += conv_macs(cin, cout, 3, hw) + 3 * conv_macs(cout, cout, 3, hw)
        total += conv_macs(cin, cout, 1, hw)  # downsample
        cin = cout
    return total + 512 * num_classes


def test_ann_resnet18_analytical_macs():
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    net.train()
    r = measure(net, torch.randn(2, 3, 32, 32), first_layer_once=True)
    expect = resnet18_macs_32(10)
    assert r.macs == expect and r.sops == 0
    assert r.energy_mj == pytest.approx(4.6 * expect * 1e-9)
    assert len(r.layers) == 21 and not any(lay.input_is_spike for lay in r.layers)
    assert r.mean_firing_rate is None and r.firing_rates == {}
    assert net.training


def test_invalid_arguments():
    with pytest.raises(ValueError):
        measure(nn.Linear(2, 2), torch.zeros(1, 2), timesteps=0)


# --------------------------------------------------------------------------------------
# conventions: paper vs exact


def brute_weighted_conv2d_sops(x, cout, k, pad=1):
    """A conv fed by spike counts: every count c at an input triggers c accumulates per tap."""
    n_, c, h, w = x.shape
    total = 0.0
    for n, ci, hh, ww in (x != 0).nonzero().tolist():
        taps = sum(1 for ki in range(k) for kj in range(k)
                   if 0 <= hh + pad - ki < h and 0 <= ww + pad - kj < w)
        total += float(x[n, ci, hh, ww]) * taps * cout
    return total


def test_spike_sum_costs_macs_when_exact_and_accumulates_when_paper():
    # a SEW ADD output: the sum of two spike maps holds 0, 1 and 2
    x = spikes(2, 3, 6, 6, seed=1) + spikes(2, 3, 6, 6, seed=2)
    assert x.max() == 2
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    exact = measure(conv, x, convention="exact")
    paper = measure(conv, x, convention="paper")
    assert exact.sops == 0 and exact.macs == 2 * 5 * 36 * 27 / 2  # dense MACs per sample
    assert paper.macs == 0
    assert paper.sops == pytest.approx(brute_weighted_conv2d_sops(x, 5, 3) / 2)
    assert paper.convention == "paper" and exact.convention == "exact"


def test_paper_convention_leaves_real_valued_layers_as_macs():
    x = torch.randn(2, 3, 6, 6)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    assert measure(conv, x, convention="paper").macs == measure(conv, x).macs > 0


def test_first_layer_rule_follows_the_input_kind():
    from bkd_sweep.config import EnergyConfig

    paper = EnergyConfig()
    assert paper.convention == "paper"
    assert paper.first_layer_counted_once(event_input=False) is True
    assert paper.first_layer_counted_once(event_input=True) is False
    exact = EnergyConfig(convention="exact", first_layer_once=False)
    assert exact.first_layer_counted_once(event_input=False) is False


def test_event_frames_are_synaptic_operations_under_paper():
    frames = torch.randint(0, 3, (2, 2, 8, 8)).float()  # integrated event counts, 2 polarities
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    report = measure(conv, frames, convention="paper")
    assert report.macs == 0
    assert report.sops == pytest.approx(brute_weighted_conv2d_sops(frames, 4, 3) / 2)


def test_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="energy convention 'rough' unknown"):
        measure(nn.Linear(2, 2), torch.ones(1, 2), convention="rough")


def test_ann_macs_agree_with_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    net = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    report = measure(net, x)
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        net(x)
    # torch counts 2 FLOPs per multiply-accumulate, for the whole batch
    assert report.macs == pytest.approx(flops.get_total_flops() / 2 / 2)


def test_ann_teacher_fed_event_counts_costs_macs_only():
    # doc: "The ANN teacher's energy is 4.6 pJ x its MACs" -- even when its input holds
    # integer event counts, which the paper convention would otherwise count as accumulates
    from bkd_sweep.config import TrialConfig
    from bkd_sweep.energy import measure_with

    frames = torch.randint(0, 3, (2, 2, 8, 8)).float()  # summed event frames (counts)
    ann = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.ReLU())
    config = TrialConfig()
    assert config.energy.convention == "paper"
    report = measure_with(config, ann, frames, True, timesteps=1)
    macs = 4 * 8 * 8 * 2 * 9  # per sample: outputs x (C_in x k x k)
    assert report.sops == 0 and report.macs == macs
    assert report.energy_mj == pytest.approx(4.6 * macs * 1e-9)
    # an SNN (it has a neuron) keeps the convention: its counts are accumulates
    snn = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), neuron.IFNode())
    spiking = measure_with(config, snn, frames, True, timesteps=1)
    assert spiking.macs == 0
    assert spiking.sops == pytest.approx(brute_weighted_conv2d_sops(frames, 4, 3) / 2)
