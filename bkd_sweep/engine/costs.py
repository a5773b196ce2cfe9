"""The coarse FLOP model ``plan`` costs trials with (and grids are ordered by).

    FLOPs(trial) = epochs x [ n_train x (3 x F_s x T_s  +  F_t x T_t  +  3 x F_g)
                              +  n_val x F_s x T_s ]  +  n_test x F_s x T_s
                 (+ once per distinct teacher with ``checkpoint: train``:
                    teacher epochs x (3 x n_train + n_val) x F_t x T_t)

F = forward GFLOPs per image at time-step 1 (a dense, MAC x 2 count from the table below,
scaled by (image size / reference size)^2), 3 = forward + backward, T = time-steps (T_t = 1
for an ANN teacher; the teacher term only when distilling). F_g is BKD's own network (modes
bkd and mixed): the 1x1 align conv and the restoration block G (two 3x3 convs at the
teacher's width) on the feature map the loss compares, once per image (it runs on the
time-averaged student feature). On a small student it is most of the step (the quickstart
pair: 1.8x the step of mode none), on SEW-ResNet-18 a few percent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bkd_sweep.config import TrialConfig

# Forward GFLOPs per image at T=1 and the reference image side (coarse constants: dense
# conv/linear MACs x 2, rounded; spike sparsity not credited).
ARCH_COSTS: dict[str, tuple[float, int]] = {
    # students (spikingjelly SNNs, per time-step)
    "spiking_cnn_small": (0.011, 32),
    "spiking_resnet19": (4.8, 32),
    "sew_resnet18": (3.6, 224), "sew_resnet34": (7.3, 224), "sew_resnet50": (8.2, 224),
    "sew_resnet18_cifar": (1.1, 32), "sew_resnet34_cifar": (2.3, 32),
    "sew_resnet50_cifar": (2.6, 32),
    "sew_resnet_dvs": (3.2, 128),
    # teachers (ANNs)
    "cnn_small": (0.011, 32),
    "resnet18": (3.6, 224), "resnet34": (7.3, 224), "resnet50": (8.2, 224),
    "resnet101": (15.6, 224),
    "vit_tiny_patch16_224": (2.5, 224), "vit_small_patch16_224": (9.2, 224),
    "vit_base_patch16_224": (35.1, 224),
}
DEFAULT_COST = (1.0, 32)  # an architecture missing from the table (noted in the plan)
_TRANSFORMER = re.compile(r"^(spikformer|spikingformer)_(\d+)_(\d+)(_dvs)?$")

# name -> (labelled training images, official test images or None, native side); without a
# test split, test is carved first (DEFAULT_TEST_FRACTION), then val from the rest
DATASET_SIZES: dict[str, tuple[int, int | None, int]] = {
    "digits": (1797, None, 8),
    "synthetic": (480, None, 32),  # 48 per class x 10 classes
    "mnist": (60000, 10000, 28), "fashion_mnist": (60000, 10000, 28),
    "cifar10": (50000, 10000, 32), "cifar100": (50000, 10000, 32),
    "imagenet": (1281167, 50000, 224),
    "cifar10_dvs": (10000, None, 128),
}
DEFAULT_DATASET = (50000, 10000, 32)
DEFAULT_TEST_FRACTION = {"cifar10_dvs": 0.1}  # else 0.2 (see bkd_sweep.data)


def _halved(side: int, times: int) -> int:
    """The side after up to ``times`` halvings that keep it at 8 or more (the transformers'
    patch stem)."""
    for _ in range(times):
        if -(-side // 2) < 8:
            break
        side = -(-side // 2)
    return side


def transformer_gflops(depth: int, dim: int, image_size: int) -> float:
    """Spikformer-style cost: stem convs + depth x tokens x (12 dim^2 + 2 tokens dim) MACs."""
    side = _halved(image_size, 4)  # the stem halves the map while it keeps >= 8 tokens a side
    tokens = side * side
    blocks = depth * tokens * (12 * dim * dim + 2 * tokens * dim)
    stem = 9 * image_size * image_size * (dim // 8) * (dim // 4)  # first two convs dominate
    return 2 * (blocks + stem) / 1e9


def arch_gflops(arch: str, image_size: int) -> tuple[float, str | None]:
    """(forward GFLOPs per image at T=1, a note when the table had to guess)."""
    match = _TRANSFORMER.match(arch)
    if match:
        return transformer_gflops(int(match.group(2)), int(match.group(3)), image_size), None
    cost, ref = ARCH_COSTS.get(arch, DEFAULT_COST)
    note = None if arch in ARCH_COSTS else (
        f"{arch}: not in the cost table; assumed {DEFAULT_COST[0]} GFLOPs at "
        f"{DEFAULT_COST[1]}px")
    return cost * (image_size / ref) ** 2, note


def dataset_sizes(config: TrialConfig) -> tuple[int, int, int, int, str | None]:
    """(train images per epoch, val images per epoch, test images (once), image side, note)
    honouring the three-split rule, limits and caps."""
    data = config.data
    total, test, native = DATASET_SIZES.get(data.dataset, DEFAULT_DATASET)
    note = None if data.dataset in DATASET_SIZES else (
        f"{data.dataset}: size unknown; assumed {DEFAULT_DATASET[0]} train images")
    if test is None:
        test = round(total * (data.test_fraction or DEFAULT_TEST_FRACTION.get(data.dataset, 0.2)))
        total -= test
    val = round(total * data.val_fraction) if data.val_fraction else test
    total -= val if data.val_fraction else 0
    train = min(total, data.limit_train or total)
    if config.train.max_batches_per_epoch:
        train = min(train, config.train.max_batches_per_epoch * data.batch_size)
    val = min(val, data.limit_val or val)
    test = min(test, data.limit_test or test)
    return train, val, test, data.image_size or native, note


# --------------------------------------------------------------------------------------
# BKD's align + restoration block: the feature maps it runs on

# Teachers' pre-logits widths (a vector feature: G then runs at the student's map).
VECTOR_WIDTHS: dict[str, int] = {
    "cnn_small": 128, "resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048,
    "resnet18_cifar": 512, "resnet34_cifar": 512, "resnet50_cifar": 2048,
    "vit_tiny_patch16_224": 192, "vit_small_patch16_224": 384, "vit_base_patch16_224": 768,
}
_RESNET = re.compile(r"^(?:sew_)?resnet(\d+)(_cifar)?$")


def _pooled(side: int, blocks: int) -> int:
    """The side after the small CNNs' ``blocks`` conv blocks: each pools 2x2 while the map
    is still >= 16 px (8 stays 8, 28 -> 14, 32 -> 8; cnn_small's third block: 64 -> 8)."""
    for _ in range(blocks):
        if side >= 16:
            side //= 2
    return side


def _resnet_map(arch: str, stage: int, side: int) -> tuple[int, int] | None:
    """(channels, side) after ResNet stage ``stage`` (1-4); ImageNet stem stride 4, CIFAR 1."""
    match = _RESNET.match(arch)
    if not match:
        return None
    expansion = 4 if int(match.group(1)) >= 50 else 1
    stride = 2 ** (stage - 1) * (1 if match.group(2) else 4)
    return 64 * 2 ** (stage - 1) * expansion, -(-side // stride)


def student_map(arch: str, side: int) -> tuple[int, int] | None:
    """(channels, side) of a student's pre-classifier feature map, None when unknown."""
    transformer = _TRANSFORMER.match(arch)
    if transformer:
        return int(transformer.group(3)), _halved(side, 4)
    if arch == "spiking_cnn_small":
        return 64, _pooled(side, 2)
    if arch == "spiking_resnet19":
        return 512, -(-side // 4)
    if arch == "sew_resnet_dvs":
        return 128, 1
    return _resnet_map(arch, 4, side)


def teacher_map(arch: str, feature: str, side: int) -> tuple[int, int | None] | None:
    """(channels, side) of the teacher feature BKD restores; side None for a vector."""
    if feature == "pre_logits":
        transformer = _TRANSFORMER.match(arch)
        width = int(transformer.group(3)) if transformer else VECTOR_WIDTHS.get(arch)
        return None if width is None else (width, None)
    if arch == "cnn_small" and feature == "features":
        return 128, _pooled(side, 3)
    stage = re.fullmatch(r"layer([1-4])", feature)
    return _resnet_map(arch, int(stage.group(1)), side) if stage else None


def bkd_gflops(config: TrialConfig, size: int) -> tuple[float, str | None]:
    """(forward GFLOPs per image of BKD's align conv + restoration block, a note when a
    feature map is unknown)."""
    teacher, student = config.teacher, config.student
    s_map = student_map(student.arch, size)
    t_map = teacher_map(teacher.arch, teacher.feature, teacher.input_size or size)
    if s_map is None or t_map is None:
        return 0.0, (f"BKD's restoration block not costed: the feature map of "
                     f"{student.arch if s_map is None else teacher.arch} is not in the "
                     "cost model")
    width, side = t_map[0], t_map[1] or s_map[1]  # a vector teacher: G at the student's map
    align = s_map[0] * width if s_map[0] != width else 0
    return 2 * side * side * (align + 2 * 9 * width * width) / 1e9, None


@dataclass
class TrialCost:
    gflop: float  # total GFLOPs of the trial (teacher training excluded)
    teacher_train_gflop: float  # the teacher's one-off training, if this trial needs it
    teacher_key: str | None
    notes: list[str] = field(default_factory=list)


def trial_cost(config: TrialConfig) -> TrialCost:
    n_train, n_val, n_test, size, data_note = dataset_sizes(config)
    notes = [data_note] if data_note else []
    f_s, note = arch_gflops(config.student.arch, size)
    notes += [note] if note else []
    t_s = config.student.timesteps
    per_epoch = n_train * 3 * f_s * t_s + n_val * f_s * t_s
    teacher_train = 0.0
    key = None
    if config.distill.mode != "none":
        f_t, note = arch_gflops(config.teacher.arch, config.teacher.input_size or size)
        notes += [note] if note else []
        t_t = config.teacher.timesteps or 1
        per_epoch += n_train * f_t * t_t
        if config.teacher.checkpoint == "train":
            key = f"{config.teacher.arch}@{config.data.dataset}"
            teacher_train = config.teacher.train.epochs * (3 * n_train + n_val) * f_t * t_t
    if config.distill.mode in ("bkd", "mixed"):
        f_g, note = bkd_gflops(config, size)
        notes += [note] if note else []
        per_epoch += n_train * 3 * f_g
    return TrialCost(per_epoch * config.train.epochs + n_test * f_s * t_s, teacher_train, key,
                     notes)
