"""The trial sections (data, teacher, student, train, distill, energy) and TrialConfig.

A TrialConfig is everything one trial needs; the same dotted path (``distill.blur_ratio``)
names a field in the study, in Optuna, in MLflow and in Parquet.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from bkd_sweep.config.base import Seed, Strict, config_id_of, flatten, stable_hash


class AugmentConfig(Strict):
    crop_flip: bool = False  # random crop (padding 4 on small images) + horizontal flip
    randaugment: str | None = None  # timm rand-augment spec, e.g. "rand-m9-mstd0.5-inc1"
    mixup: float = Field(0.0, ge=0)  # mixup alpha (timm Mixup); 0 = off
    cutmix: float = Field(0.0, ge=0)  # cutmix alpha; 0 = off
    mixup_off_epoch: int | None = Field(None, ge=0)  # last epoch (from 1) that mixes; 0: none
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    random_erasing: float = Field(0.0, ge=0, le=1)


class DataConfig(Strict):
    """Three splits: train, val (selection: pruning, objective, checkpoint) and test (reported
    once). val is carved per class from the training data with the fixed data seed; 0 makes
    val the test split (the papers' practice, selection on test). test_fraction carves test
    out of datasets that have no test split (None: the dataset's default, see bkd_sweep.data)."""

    dataset: str = "digits"
    root: str | None = None  # local root in the dataset's usual on-disk format
    batch_size: int = Field(64, ge=1, le=65536)
    eval_batch_size: int | None = Field(None, ge=1, le=65536)
    val_fraction: float = Field(0.1, ge=0, lt=1)  # of the training data; 0 = select on test
    test_fraction: float | None = Field(None, gt=0, lt=1)  # only datasets without a test split
    num_workers: int = Field(0, ge=0, le=256)
    image_size: int | None = Field(None, ge=1, le=4096)  # resize; None keeps the native size
    frames: int | None = Field(None, ge=1, le=1024)  # event data: frames per sample (None = student T)
    limit_train: int | None = Field(None, ge=1)  # subsample for quick runs
    limit_val: int | None = Field(None, ge=1)
    limit_test: int | None = Field(None, ge=1)
    num_classes: int | None = Field(None, ge=2, le=100_000)  # synthetic data only
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class NeuronConfig(Strict):
    type: Literal["lif", "if", "plif"] = "lif"
    tau: float = Field(2.0, gt=1.0, le=1e4)  # membrane time constant (lif, initial value for plif)
    v_threshold: float = Field(1.0, gt=0)
    v_reset: float | None = 0.0  # None = soft reset (subtract threshold)
    surrogate: Literal["atan", "sigmoid"] = "sigmoid"
    surrogate_alpha: float | None = Field(None, gt=0)  # None: atan 2.0, sigmoid 4.0
    detach_reset: bool = True


class StudentConfig(Strict):
    arch: str = "spiking_cnn_small"
    timesteps: int = Field(4, ge=1, le=64)
    neuron: NeuronConfig = Field(default_factory=NeuronConfig)
    # transformer students only; None = the registered size's reference value (e.g. the
    # CIFAR-100 reference configs use 8 heads at width 384 where CIFAR-10 uses 12)
    heads: int | None = Field(None, ge=1, le=1024)

    def arch_options(self) -> dict[str, int]:
        """Builder overrides the study sets (none: the registered reference defaults)."""
        return {"heads": self.heads} if self.heads is not None else {}


class OptimizerConfig(Strict):
    """The optimizer timm's ``create_optimizer_v2`` (the reference recipes' factory) builds."""

    name: Literal["sgd", "adamw", "adam", "lamb"] = "adamw"  # sgd = momentum SGD, no Nesterov
    lr: float = Field(5e-4, gt=0, le=100)
    weight_decay: float = Field(0.06, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    # timm's rule: biases and every 1-D parameter (norm weights, neuron constants) get no
    # weight decay, as in the reference recipes
    filter_bias_and_bn: bool = True


class ScheduleConfig(Strict):
    """Epochs and the per-update LR schedule (timm's formulas, stepped every update)."""

    epochs: int = Field(10, ge=1, le=100_000)
    scheduler: Literal["cosine", "step", "none"] = "cosine"  # none = constant after warm-up
    warmup_epochs: int = Field(0, ge=0, le=100_000)
    warmup_lr: float = Field(1e-6, ge=0)  # LR at the first update of the warm-up
    min_lr: float = Field(0.0, ge=0)  # the cosine floor
    cooldown_epochs: int = Field(0, ge=0, le=100_000)  # last epochs held at min_lr
    # warm-up and cool-down are clipped to the epochs a trial has (a searched short run)
    decay_epochs: int = Field(30, ge=1)  # step: decay every N epochs by decay_rate
    decay_rate: float = Field(0.1, gt=0, le=1)


class TeacherTrainConfig(ScheduleConfig):
    """The recipe for ``checkpoint: train``: the teacher is trained once and cached."""

    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig(name="adamw", lr=1e-3, weight_decay=1e-4))
    batch_size: int | None = Field(None, ge=1, le=65536)  # None = data.batch_size
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # also smooths the teacher's mixup targets
    # the teacher's own augmentation (transforms, mixup/cutmix); None = the study's data.augment
    augment: AugmentConfig | None = None

    @field_validator("augment", mode="before")
    @classmethod
    def _null_entries_are_unset(cls, value: Any) -> Any:
        # dumps show an inherited augmentation as null leaves (below), so flat views (Parquet
        # columns, MLflow params, --set paths) have one column per leaf: all null = None
        if isinstance(value, dict) and value and all(v is None for v in value.values()):
            return None
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None}
        return value

    @field_validator("augment")
    @classmethod
    def _one_label_smoothing(cls, augment: AugmentConfig | None) -> AugmentConfig | None:
        # one field says the teacher's smoothing; a second one, ignored, would mislead
        if augment is not None and augment.label_smoothing:
            raise ValueError("label_smoothing: the teacher's is teacher.train.label_smoothing")
        return augment

    @field_serializer("augment")
    def _as_leaves(self, augment: AugmentConfig | None) -> dict[str, Any]:
        if augment is None:
            return dict.fromkeys(AugmentConfig.model_fields)
        return augment.model_dump(mode="json")


class TeacherConfig(Strict):
    arch: str = "cnn_small"  # a registered teacher, a torchvision ResNet or any timm name
    checkpoint: str | None = None  # a local file, or "train" (train once on the study's data)
    input_size: int | None = Field(None, ge=1, le=4096)  # resize inputs for the teacher (e.g. 224)
    feature: str = "pre_logits"  # "pre_logits" (vector) or a named module whose output is a map
    timesteps: int | None = Field(None, ge=1, le=256)  # set for an SNN teacher (arch from the students)
    accuracy: float | None = Field(None, ge=0, le=100)  # known top-1 of the checkpoint, if any
    # the input normalization the teacher's weights expect (per channel); None: timm's
    # pretrained config for a timm model loaded from a file, else the data's own
    mean: list[float] | None = Field(None, min_length=1, max_length=4)
    std: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=1, max_length=4)
    train: TeacherTrainConfig = Field(default_factory=TeacherTrainConfig)

    @model_validator(mode="after")
    def _mean_with_std(self) -> "TeacherConfig":
        if (self.mean is None) != (self.std is None) or (
                self.mean is not None and len(self.mean) != len(self.std or [])):
            raise ValueError("teacher.mean and teacher.std go together, one value per channel")
        return self


class TrainConfig(ScheduleConfig):
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    # which checkpoint a trial reports: the epoch best on val, or the last; test accuracy and
    # energy are measured once, on those weights
    select: Literal["best", "last"] = "best"
    # auto: bf16 autocast on a GPU that has it (fp16 with loss scaling on older GPUs), fp32 on CPU
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False  # torch.compile the student step; falls back with one warning
    log_every_steps: int = Field(50, ge=1)  # one host sync (finite check, logged terms) per N
    grad_clip: float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, le=1024)  # torch CPU threads per trial
    max_batches_per_epoch: int | None = Field(None, ge=1)  # cap for smoke runs


class DistillConfig(Strict):
    mode: Literal["none", "logit", "bkd", "mixed"] = "mixed"
    logit_loss: Literal["wsld", "kl"] = "wsld"
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(1.0, ge=0)  # weight of the logit term
    beta: float = Field(2e-3, ge=0)  # weight of the BKD term
    blur_ratio: float = Field(0.15, ge=0, lt=1)  # probability that a mask entry is zero
    granularity: Literal["channel", "pixel"] = "channel"
    warn_ratio: float = Field(10.0, gt=0)  # warn when a distillation term exceeds task x this


class EnergyConfig(Strict):
    e_mac_pj: float = Field(4.6, gt=0)  # 45 nm MAC (Horowitz, ISSCC 2014)
    e_ac_pj: float = Field(0.9, gt=0)  # 45 nm accumulate
    samples: int = Field(32, ge=1, le=100_000)  # validation samples the energy is measured on
    # paper: what published SNN energy tables count (integer spike sums such as SEW additions
    # and event frames are accumulates; a static image's first layer counted once);
    # exact: only binary inputs are spikes, every layer x T unless first_layer_once
    convention: Literal["paper", "exact"] = "paper"
    first_layer_once: bool = False  # exact only: count the first layer once instead of x T

    def first_layer_counted_once(self, event_input: bool) -> bool:
        """paper: once for static images, never for events (their first layer takes SOPs)."""
        return not event_input if self.convention == "paper" else self.first_layer_once


class TrialConfig(Strict):
    """Everything one trial needs; its hash identifies the trial's science (not its paths)."""

    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    seed: Seed = 0

    def config_hash(self) -> str:
        return stable_hash(self.model_dump(mode="json"))

    def config_id(self) -> str:
        """Equal for every seed of one configuration (the unit of seed-aware results)."""
        return config_id_of(self.model_dump(mode="json"))

    def flat(self) -> dict[str, Any]:
        """Dotted path -> value for every leaf, e.g. {'distill.blur_ratio': 0.15}."""
        return flatten(self.model_dump(mode="json"))
