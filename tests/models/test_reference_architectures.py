"""Every registered Spikformer / Spikingformer / SEW size against its reference configuration:
heads, depth, width, MLP ratio, stem down-sampling and parameter count, at the reference input.

The pinned numbers are the reference code's: parameter counts printed in the authors' logs
(zhouchenlin2096/Spikingformer-CML ``origin_logs``: 9,330,874 CML-Spikformer CIFAR-10,
9,326,266 / 16,828,312 / 29,705,768 / 66,363,208 / 2,568,714 CML-Spikingformer) or, for sizes
without a log, the count of the reference model code built with its neurons stubbed out
(neurons have no parameters there). Models are built on the meta device: counting 66 M
parameters then takes milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

import pytest
import torch
from torch import nn

from bkd_sweep.models import create_student, list_students
from bkd_sweep.models.students import sew_resnet, spikformer
from bkd_sweep.config import NeuronConfig

TRANSFORMERS = [n for n in list_students() if n.startswith(("spikformer_", "spikingformer_"))]
SEWS = [n for n in list_students() if n.startswith("sew_")]


@dataclass(frozen=True)
class Setting:
    """The reference input: image side, channels, classes, and the patch size it implies."""

    image_size: int
    in_channels: int
    num_classes: int
    patch: int
    tokens: int  # number of tokens the reference code's (unused) position embedding would hold


CIFAR10 = Setting(32, 3, 10, 4, 64)
IMAGENET = Setting(224, 3, 1000, 16, 196)
CIFAR10_DVS = Setting(128, 2, 10, 16, 64)


@dataclass(frozen=True)
class Reference:
    depth: int
    dim: int
    heads: int
    setting: Setting
    paper_params: float  # Spikformer / Spikingformer paper tables
    spikformer_params: int  # parameters of the reference code
    spikingformer_params: int


REFERENCES = {
    # heads 12: spikformer and Spikingformer(-CML) cifar10/cifar10.yml, spikingjelly
    # spikformer_cifar10; BKDSNN cifar10/config/*/vit-s*.yml, vit-st*.yml.
    "4_384": Reference(4, 384, 12, CIFAR10, 9.32e6, 9_330_874, 9_326_266),
    "2_384": Reference(2, 384, 12, CIFAR10, 5.76e6, 5_768_122, 5_765_818),
    # heads 16: BKDSNN vit-ti-300-mixed.yml / baseline vit-ti.yml (256 % 12 != 0 rules out 12).
    "4_256": Reference(4, 256, 16, CIFAR10, 4.15e6, 4_159_274, 4_156_202),
    # No static 2-256 reference: the CIFAR10-DVS net's heads (16) and paper size (2.57 M).
    "2_256": Reference(2, 256, 16, CIFAR10, 2.57e6, 2_570_538, 2_569_002),
    "2_256_dvs": Reference(2, 256, 16, CIFAR10_DVS, 2.57e6, 2_585_610, 2_568_714),
    # heads 8: spikformer imagenet/model.py, Spikingformer(-CML) imagenet.yml, BKDSNN
    # imagenet/config/mixed/vit-{s,m,b}-mixed.yml; the two families count the same.
    "8_384": Reference(8, 384, 8, IMAGENET, 16.81e6, 16_828_312, 16_828_312),
    "8_512": Reference(8, 512, 8, IMAGENET, 29.68e6, 29_705_768, 29_705_768),
    "8_768": Reference(8, 768, 8, IMAGENET, 66.34e6, 66_363_208, 66_363_208),
}


def unused_reference_params(family: str, ref: Reference) -> int:
    """Parameters the reference code builds that cannot change its output (so ours omit them):
    - per block, LayerNorms ``norm1``/``norm2`` that are constructed and never called: 4*dim;
    - biases of the convs/linears that feed a BatchNorm (BN subtracts any per-channel
      constant, so their gradient is 0): proj, fc1 (4*dim), fc2 = 6*dim per block, and q, k, v
      as well (9*dim) in the Spikformer CIFAR code, whose nn.Linear layers keep their bias;
    - Spikformer's CIFAR10-DVS code also builds a position embedding and a final LayerNorm that
      its forward never uses.
    """
    d = ref.dim
    biases = 9 * d if (family == "spikformer" and ref.setting is CIFAR10) else 6 * d
    unused = ref.depth * (4 * d + biases)
    if family == "spikformer" and ref.setting is CIFAR10_DVS:
        unused += ref.setting.tokens * d + 2 * d
    return unused


def _build(name: str, setting: Setting, **kw) -> nn.Module:
    """Shapes only: on the meta device nothing is allocated; weight init is skipped because on
    meta tensors it imports torch's compiler stack (~8 s, once) and counts do not need it."""
    no_init = [mock.patch.object(family, "init_weights", lambda model: None)
               for family in (spikformer, sew_resnet)]
    with torch.device("meta"), no_init[0], no_init[1]:
        return create_student(name, num_classes=setting.num_classes, timesteps=1,
                              in_channels=setting.in_channels, image_size=setting.image_size,
                              **kw)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_registered_transformer_has_a_reference() -> None:
    for name in TRANSFORMERS:
        assert name.split("_", 1)[1] in REFERENCES, f"{name}: add its reference configuration"
    assert len(TRANSFORMERS) == 2 * len(REFERENCES)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_matches_its_reference(name: str) -> None:
    family, size = name.split("_", 1)
    ref = REFERENCES[size]
    model = _build(name, ref.setting)
    assert (model.depth, model.dim, model.heads) == (ref.depth, ref.dim, ref.heads)
    assert len(model.blocks) == ref.depth
    for block in model.blocks:
        assert block.attn.heads == ref.heads
        hidden = [m.out_channels for m in block.mlp.modules() if isinstance(m, nn.Conv2d)]
        assert hidden == [4 * ref.dim, ref.dim]  # MLP ratio 4
    stem_convs = [m for m in model.patch_embed.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in stem_convs] == \
        [ref.dim // 8, ref.dim // 4, ref.dim // 2, ref.dim, ref.dim]
    assert stem_convs[0].in_channels == ref.setting.in_channels
    pools = [m for m in model.patch_embed.modules() if isinstance(m, nn.MaxPool2d)]
    assert 2 ** len(pools) == ref.setting.patch  # patch 4 on CIFAR, 16 on ImageNet and DVS
    assert model.head.out_features == ref.setting.num_classes

    n = _n_params(model)
    assert n + unused_reference_params(family, ref) == getattr(ref, f"{family}_params")
    # The papers round the same count (some without the unused LayerNorms): within 0.3 %.
    assert abs(n / ref.paper_params - 1) < 3e-3


def test_heads_and_mlp_ratio_stay_overridable() -> None:
    # the CIFAR-100 reference files use 8 heads at width 384
    model = _build("spikingformer_4_384", Setting(32, 3, 100, 4, 64), heads=8, mlp_ratio=2.0)
    assert model.heads == 8 and {b.attn.heads for b in model.blocks} == {8}
    hidden = {m.out_channels for b in model.blocks for m in b.mlp.modules()
              if isinstance(m, nn.Conv2d)}
    assert hidden == {2 * 384, 384}  # fc1 at ratio 2, fc2 back to the width
    with pytest.raises(ValueError, match="not divisible by heads 7"):
        _build("spikformer_4_384", CIFAR10, heads=7)
    with pytest.raises(TypeError, match="head"):
        _build("spikformer_4_384", CIFAR10, head=8)


def test_stems_and_heads_follow_the_reference_code() -> None:
    """Spikformer's stem adds its RPE conv residually and Spikingformer's does not (reference
    ``proj4``); neither puts a neuron before the classifier."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    for family, residual in (("spikformer", True), ("spikingformer", False)):
        model = create_student(f"{family}_2_256", num_classes=5, image_size=8, timesteps=2)
        seen = {}
        stem = model.patch_embed
        for label, module in (("stages", stem.stages), ("rpe", stem.rpe), ("stem", stem)):
            module.register_forward_hook(lambda m, i, o, label=label: seen.setdefault(label, o))
        with torch.no_grad():
            features = model.forward_features(x)
            logits = model.forward_head(features)
        expected = seen["stages"] + seen["rpe"] if residual else seen["rpe"]
        torch.testing.assert_close(seen["stem"], expected)
        tokens = features.mean(dim=(-2, -1))  # [T,B,C]
        torch.testing.assert_close(logits, model.head(tokens).mean(0))


SEW_REFERENCES = {
    # torchvision ResNet counts (fangwei123456/Spike-Element-Wise-ResNet imagenet/sew_resnet.py
    # keeps ResNet's convs, BNs and FC); paper: 11.69 / 21.79 / 25.56 M.
    "sew_resnet18": (IMAGENET, 11_689_512, 11.69e6),
    "sew_resnet34": (IMAGENET, 21_797_672, 21.79e6),
    "sew_resnet50": (IMAGENET, 25_557_032, 25.56e6),
}


def _resnet(depth: int, **kw) -> nn.Module:
    import torchvision

    with torch.device("meta"):
        return getattr(torchvision.models, f"resnet{depth}")(weights=None, **kw)


@pytest.mark.parametrize("name", [n for n in SEWS if n in SEW_REFERENCES])
def test_sew_resnet_matches_its_reference(name: str) -> None:
    """SEW-ResNet has the ResNet's convs, BNs and FC exactly (IF neurons add no parameters)."""
    setting, code_params, paper_params = SEW_REFERENCES[name]
    n = _n_params(_build(name, setting, neuron=NeuronConfig(type="if")))
    assert n == code_params == _n_params(_resnet(int(name.removeprefix("sew_resnet"))))
    assert abs(n / paper_params - 1) < 1e-3


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_sew_resnet_cifar_is_the_resnet_with_a_cifar_stem(depth: int) -> None:
    """The CIFAR stem (3x3/1 conv, no max-pool) of the usual CIFAR ResNets: torchvision's ResNet
    with conv1 swapped and a 10-way FC."""
    ann = _resnet(depth, num_classes=10)
    ann.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False, device="meta")
    sew = _build(f"sew_resnet{depth}_cifar", CIFAR10)
    assert _n_params(sew) == _n_params(ann)


def test_sew_dvs_net_matches_the_reference_code() -> None:
    """``cifar10dvs/smodels.py`` SEWResNet('ADD'): 1x1 convs change the width (2->64, 64->128),
    PLIF neurons (one learnable parameter each, 16 of them): 1,192,218 parameters."""
    model = _build("sew_resnet_dvs", CIFAR10_DVS, neuron=NeuronConfig(type="plif"))
    assert _n_params(model) == 1_192_218
    width_changes = [m for m in model.modules() if isinstance(m, nn.Conv2d)
                     and m.in_channels != m.out_channels]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in width_changes] == \
        [(2, 64, (1, 1)), (64, 128, (1, 1))]
