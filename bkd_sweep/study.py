"""The study schema (pydantic v2), YAML loading with line numbers, and one-line errors.

A study file declares the base trial configuration (data, teacher, student, train, distill,
energy) and a search over dotted parameter paths. The same dotted path (``distill.blur_ratio``)
names a parameter everywhere: in the study, in Optuna, in MLflow and in Parquet.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

# --------------------------------------------------------------------------------------
# Errors


class StudyError(Exception):
    """A bad study: one line naming file:line, the dotted field and what is allowed."""

    def __init__(self, message: str, *, file: str | os.PathLike | None = None,
                 line: int | None = None, field: str | None = None):
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{self.field}: " if self.field else ""
        return " ".join(f"{where}{field}{self.message}".split())


# --------------------------------------------------------------------------------------
# Trial configuration sections


Seed = Annotated[int, Field(ge=0, lt=2**31)]


class Strict(BaseModel):
    """Unknown keys are errors: a misspelled setting must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AugmentConfig(Strict):
    crop_flip: bool = False  # random crop (padding 4 on small images) + horizontal flip
    randaugment: str | None = None  # timm rand-augment spec, e.g. "rand-m9-mstd0.5-inc1"
    mixup: float = Field(0.0, ge=0)  # mixup alpha (timm Mixup); 0 = off
    cutmix: float = Field(0.0, ge=0)  # cutmix alpha; 0 = off
    mixup_off_epoch: int | None = Field(None, ge=0)  # mixup/cutmix switched off from this epoch
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


class OptimizerConfig(Strict):
    name: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(5e-4, gt=0, le=100)
    weight_decay: float = Field(0.06, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only


class TeacherTrainConfig(Strict):
    """The recipe for ``checkpoint: train``: the teacher is trained once and cached."""

    epochs: int = Field(10, ge=1, le=100_000)
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig(name="adamw", lr=1e-3, weight_decay=1e-4))
    batch_size: int | None = Field(None, ge=1, le=65536)  # None = data.batch_size


class TeacherConfig(Strict):
    arch: str = "cnn_small"  # a registered teacher, a torchvision ResNet or any timm name
    checkpoint: str | None = None  # a local file, or "train" (train once on the study's data)
    input_size: int | None = Field(None, ge=1, le=4096)  # resize inputs for the teacher (e.g. 224)
    feature: str = "pre_logits"  # "pre_logits" (vector) or a named module whose output is a map
    timesteps: int | None = Field(None, ge=1, le=256)  # set for an SNN teacher (arch from the students)
    accuracy: float | None = Field(None, ge=0, le=100)  # known top-1 of the checkpoint, if any
    train: TeacherTrainConfig = Field(default_factory=TeacherTrainConfig)


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1, le=100_000)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: Literal["cosine", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0, le=100_000)
    min_lr: float = Field(0.0, ge=0)
    amp: bool = True  # used on CUDA only
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
    first_layer_once: bool = False  # count the direct-encoded first layer once instead of x T


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
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """Dotted path -> value for every leaf, e.g. {'distill.blur_ratio': 0.15}."""
        return flatten(self.model_dump(mode="json"))


LINKED_PREFIX = "linked."
TRIAL_SECTIONS = ("data", "teacher", "student", "train", "distill", "energy")


# --------------------------------------------------------------------------------------
# Search space


class CategoricalParam(Strict):
    values: list[Any] = Field(min_length=1)
    when: dict[str, list[Any]] | None = None


class RangeParam(Strict):
    low: int | float  # int | float keeps YAML ints as ints: all ints -> an integer range
    high: int | float
    log: bool = False
    step: int | float | None = Field(None, gt=0)
    when: dict[str, list[Any]] | None = None

    @model_validator(mode="after")
    def _check(self) -> "RangeParam":
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError("log ranges need low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))


def _param_kind(value: Any) -> str:
    if isinstance(value, RangeParam) or (isinstance(value, dict)
                                         and ("low" in value or "high" in value)):
        return "range"
    return "categorical"


def _listify(value: Any) -> Any:
    return {"values": value} if isinstance(value, list) else value


ParamSpec = Annotated[
    Union[Annotated[CategoricalParam, Tag("categorical")], Annotated[RangeParam, Tag("range")]],
    Discriminator(_param_kind),
]


class Objective(Strict):
    metric: str = "top1"
    mode: Literal["max", "min"] = "max"


class NoPrunerConfig(Strict):
    name: Literal["none"] = "none"


class MedianPrunerConfig(Strict):
    name: Literal["median"]
    warmup_epochs: int = Field(0, ge=0)
    startup_trials: int = Field(5, ge=0)
    interval_epochs: int = Field(1, ge=1)


class PercentilePrunerConfig(Strict):
    name: Literal["percentile"]
    percentile: float = Field(25.0, gt=0, lt=100)
    warmup_epochs: int = Field(0, ge=0)
    startup_trials: int = Field(5, ge=0)
    interval_epochs: int = Field(1, ge=1)


class SuccessiveHalvingPrunerConfig(Strict):
    name: Literal["successive_halving"]
    min_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(4, ge=2)
    min_early_stopping_rate: int = Field(0, ge=0)


class HyperbandPrunerConfig(Strict):
    name: Literal["hyperband"]
    min_resource: int = Field(1, ge=1)
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(3, ge=2)


class ThresholdPrunerConfig(Strict):
    name: Literal["threshold"]
    lower: float | None = None
    upper: float | None = None
    warmup_epochs: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "ThresholdPrunerConfig":
        if self.lower is None and self.upper is None:
            raise ValueError("threshold pruner needs lower or upper")
        return self


PrunerConfig = Annotated[
    Union[NoPrunerConfig, MedianPrunerConfig, PercentilePrunerConfig,
          SuccessiveHalvingPrunerConfig, HyperbandPrunerConfig, ThresholdPrunerConfig],
    Field(discriminator="name"),
]

_PRUNER_CLASSES: dict[str, type[BaseModel]] = {
    cls.model_fields["name"].annotation.__args__[0]: cls
    for cls in (NoPrunerConfig, MedianPrunerConfig, PercentilePrunerConfig,
                SuccessiveHalvingPrunerConfig, HyperbandPrunerConfig, ThresholdPrunerConfig)
}

KNOWN_METRICS = ("top1", "top5", "final_top1", "energy_mj", "sops", "macs", "firing_rate",
                 "loss", "wall_seconds")


class SearchConfig(Strict):
    sampler: Literal["grid", "random", "tpe", "nsga2"] = "grid"
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=1000)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    # Linked choices keep paths together (a student with its own teacher): group -> label ->
    # overrides. In Optuna, MLflow and Parquet the choice is the parameter "linked.<group>".
    linked: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()], min_length=1)
    pruner: PrunerConfig = Field(default_factory=NoPrunerConfig)
    n_trials: int | None = Field(None, ge=1, le=1_000_000)  # budget; grid: None = the full factorial x seeds
    sampler_seed: int = 0
    pruned_metric: str = "top1"  # the per-epoch value pruners compare

    @field_validator("params", mode="before")
    @classmethod
    def _lists_are_categorical(cls, params: Any) -> Any:
        if isinstance(params, dict):
            return {k: _listify(v) for k, v in params.items()}
        return params

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be unique")
        return seeds

    @model_validator(mode="after")
    def _check(self) -> "SearchConfig":
        for obj in self.objectives:
            if obj.metric not in KNOWN_METRICS:
                raise ValueError(f"objective metric {obj.metric!r} unknown; allowed: "
                                 + ", ".join(KNOWN_METRICS))
        multi = len(self.objectives) > 1
        if multi and self.pruner.name not in ("none", "threshold"):
            raise ValueError(f"pruner {self.pruner.name!r}: multi-objective studies allow only "
                             "'threshold' or 'none' pruning")
        if self.sampler == "nsga2" and not multi:
            raise ValueError("sampler nsga2 needs two or more objectives")
        if self.sampler == "grid":
            for path, spec in self.params.items():
                if isinstance(spec, RangeParam) and spec.step is None:
                    raise ValueError(f"params.{path}: grid needs a list or a range with step")
        return self


class TrialResources(Strict):
    """Resources of one trial; with workers > 1, cpu and gpu are per worker."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)  # fractional values share a GPU
    workers: int = Field(1, ge=1, le=4096)  # > 1: data-parallel training inside the trial


class ResourcesConfig(Strict):
    per_trial: TrialResources = Field(default_factory=TrialResources)
    max_concurrent: int | None = Field(None, ge=1, le=100_000)
    max_failures: int = Field(1, ge=0, le=1000)  # retries of a crashed trial (from its checkpoint)
    object_store_mb: int | None = Field(None, ge=64)


class TrackingConfig(Strict):
    results_dir: str | None = None  # default: ./results (absolute at start)
    mlflow_uri: str | None = None  # default: sqlite:///<results_dir>/mlflow.db


class TableSpec(Strict):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    rows: str
    cols: str | None = None
    metric: str = "top1"
    mode: Literal["max", "min"] = "max"  # which end is best (bold) in each column


class ParetoSpec(Strict):
    x: str = "energy_mj"
    y: str = "top1"
    color: str = "distill.mode"
    label: str | None = "student.timesteps"


class ReportConfig(Strict):
    tables: list[TableSpec] = Field(default_factory=list)
    pareto: ParetoSpec | None = Field(default_factory=ParetoSpec)
    main_results: bool = True  # the paper's baseline (none) vs BKDSNN (mixed) table


class Study(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    def base_config(self) -> TrialConfig:
        return TrialConfig(**{s: getattr(self, s) for s in TRIAL_SECTIONS},
                           seed=self.search.seeds[0])

    def trial_config(self, params: dict[str, Any], seed: int) -> TrialConfig:
        """The base config with dotted overrides applied, validated.

        ``params`` holds searched paths and ``linked.<group>: label`` choices, which expand
        into their bundle of overrides.
        """
        overrides: dict[str, Any] = {}
        for path, value in params.items():
            if path.startswith(LINKED_PREFIX):
                overrides.update(self.search.linked[path[len(LINKED_PREFIX):]][value])
            else:
                overrides[path] = value
        return apply_overrides(self.base_config(), {**overrides, "seed": seed})

    def linked_params(self) -> dict[str, list[str]]:
        """Linked groups as categorical parameters: 'linked.<group>' -> labels."""
        return {LINKED_PREFIX + name: list(bundles) for name, bundles in self.search.linked.items()}


# --------------------------------------------------------------------------------------
# Dotted paths


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def apply_overrides(config: TrialConfig, overrides: dict[str, Any]) -> TrialConfig:
    """Return a new TrialConfig with ``{'distill.mode': 'bkd', ...}`` applied and validated.

    An unknown path raises StudyError naming it; a bad value raises with pydantic's reason.
    """
    tree = config.model_dump(mode="json")
    for path, value in overrides.items():
        node: Any = tree
        parts = path.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if not isinstance(node, dict) or part not in node:
                known = sorted(node) if isinstance(node, dict) else []
                close = difflib.get_close_matches(part, known, n=1)
                hint = f" (did you mean {'.'.join(parts[:i] + [close[0]])!r}?)" if close else ""
                raise StudyError(f"unknown parameter path{hint}", field=path)
            if last:
                node[part] = value
            else:
                if node[part] is None:
                    node[part] = {}
                node = node[part]
    try:
        return TrialConfig.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise StudyError(f"{first['msg']} (got {first.get('input')!r})", field=field) from None


def parse_override(text: str) -> tuple[str, Any]:
    """``distill.mode=mixed`` -> ('distill.mode', 'mixed'); the value is parsed as YAML."""
    if "=" not in text:
        raise StudyError(f"--set {text!r}: expected path=value")
    path, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return path.strip(), value


# --------------------------------------------------------------------------------------
# YAML loading with line numbers, interpolation and relative paths

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_NODES = 100_000


def _node_tree(node: yaml.Node, path: tuple, lines: dict[tuple, int], stack: set[int],
               counter: list[int]) -> Any:
    """Build plain data from a composed YAML node, recording each key's line.

    Aliases are followed (anchors are fine) but recursion and alias bombs are refused.
    """
    counter[0] += 1
    if counter[0] > _MAX_NODES:
        raise StudyError("too many YAML nodes (alias expansion?)", line=node.start_mark.line + 1)
    if id(node) in stack:
        raise StudyError("recursive YAML anchor", line=node.start_mark.line + 1)
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in (_MAP_TAG,
                                                                                    _SEQ_TAG):
        raise StudyError(f"YAML tag {node.tag!r} is not allowed", line=node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        stack.add(id(node))
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise StudyError("YAML merge keys (<<) are not supported",
                                 line=key_node.start_mark.line + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                raise StudyError("mapping keys must be plain strings",
                                 line=key_node.start_mark.line + 1)
            key = str(_scalar(key_node))
            if key in out:
                raise StudyError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1,
                                 field=".".join(map(str, path + (key,))))
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _node_tree(value_node, path + (key,), lines, stack, counter)
        stack.discard(id(node))
        return out
    if isinstance(node, yaml.SequenceNode):
        stack.add(id(node))
        items = [_node_tree(item, path + (i,), lines, stack, counter)
                 for i, item in enumerate(node.value)]
        stack.discard(id(node))
        return items
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode) or node.tag not in _SAFE_SCALAR_TAGS:
        raise StudyError(f"YAML tag {node.tag!r} is not allowed", line=node.start_mark.line + 1)
    return yaml.constructor.SafeConstructor().construct_object(node)


_SAFE_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")}
_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def _protect_variables(text: str) -> tuple[str, dict[str, re.Match]]:
    """Swap each ${VAR} for a plain token before parsing.

    ``{root: ${BKD_DATA}/x}`` is not valid YAML (braces inside a flow mapping), yet it is the
    natural way to write a study; tokens keep lines intact and are swapped back in strings.
    """
    found: dict[str, re.Match] = {}

    def token(match: re.Match) -> str:
        key = f"BKDVAR{len(found)}X"
        found[key] = match
        return key

    return _VAR.sub(token, text), found


_TOKEN = re.compile(r"BKDVAR\d+X")


def _interpolate(value: Any, variables: dict[str, re.Match], unresolved: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, variables, unresolved) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, variables, unresolved) for v in value]
    if not isinstance(value, str) or "BKDVAR" not in value:
        return value

    def sub(found: re.Match) -> str:
        match = variables.get(found.group(0))
        if match is None:
            return found.group(0)
        name, default = match.group(1), match.group(2)
        if os.environ.get(name):
            return os.environ[name]
        if default is not None:
            return default
        unresolved.add(name)
        return match.group(0)

    return _TOKEN.sub(sub, value)


class LoadedStudy(BaseModel):
    """A validated study plus where it came from (for errors and relative paths)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    study: Study
    path: Path
    raw: dict[str, Any]
    lines: dict[str, int]  # dotted path -> line in the file
    unresolved: list[str]  # ${VARS} that were unset (an error for `run`, not for `validate`)

    def line_of(self, dotted: str) -> int | None:
        parts = dotted.split(".")
        while parts:
            key = ".".join(parts)
            if key in self.lines:
                return self.lines[key]
            parts.pop()
        return None

    def error(self, message: str, field: str | None = None) -> StudyError:
        return StudyError(message, file=self.path, line=self.line_of(field) if field else None,
                          field=field)

    def results_dir(self) -> Path:
        """results/<name>, absolute: BKD_RESULTS_DIR (set for Ray jobs, whose working dir is a
        temporary copy) > tracking.results_dir > ./results."""
        base = os.environ.get("BKD_RESULTS_DIR") or self.study.tracking.results_dir
        root = Path(base).expanduser() if base else Path.cwd() / "results"
        return (root / self.study.name).resolve()


_RELATIVE_PATH_FIELDS = (("data", "root"), ("teacher", "checkpoint"), ("tracking", "results_dir"))


def _resolve_relative(raw: dict[str, Any], study_dir: Path) -> None:
    for section, key in _RELATIVE_PATH_FIELDS:
        node = raw.get(section)
        if not isinstance(node, dict):
            continue
        value = node.get(key)
        if not isinstance(value, str) or value == "" or value == "train" or "${" in value:
            continue
        path = Path(value).expanduser()
        if not path.is_absolute():
            node[key] = str((study_dir / path).resolve())


def _pydantic_message(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    given = err.get("input")
    if kind not in ("missing",) and not isinstance(given, (dict, list)):
        shown = repr(given)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg += f" (got {shown})"
    return msg


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model that owns ``loc[-1]``, for 'did you mean'."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = _model_in(field.annotation)
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def validation_error_to_study_error(err: ValidationError, path: Path,
                                   lines: dict[str, int]) -> StudyError:
    first = err.errors()[0]
    # drop pydantic's union tags: ('search','params',P,'range','low') -> search.params.P.low
    loc = list(first["loc"])
    if loc[:2] == ["search", "params"] and len(loc) > 3 and loc[3] in ("categorical", "range"):
        del loc[3]
    pruner_class = None
    if loc[:2] == ["search", "pruner"] and len(loc) > 3:
        pruner_class = _PRUNER_CLASSES.get(str(loc.pop(2)))
    loc = tuple(loc)
    dotted = ".".join(str(p) for p in loc)
    message = _pydantic_message(first)
    if first["type"] == "extra_forbidden":
        known = list(pruner_class.model_fields) if pruner_class else _known_keys(Study, loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        elif known:
            message += f"; allowed: {', '.join(known)}"
    line = None
    parts = list(loc)
    while parts:
        key = ".".join(str(p) for p in parts)
        if key in lines:
            line = lines[key]
            break
        parts.pop()
    return StudyError(message, file=path, line=line, field=dotted or None)


def load_study(path: str | os.PathLike) -> LoadedStudy:
    """Read, interpolate and validate a study file. Raises StudyError (one line) on any fault."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"cannot read: {exc.__class__.__name__}", file=path) from None
    return load_study_text(text, path)


def load_study_text(text: str, path: str | os.PathLike = "<study>") -> LoadedStudy:
    path = Path(path)
    lines_by_tuple: dict[tuple, int] = {}
    text, variables = _protect_variables(text)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        if node is None:
            raise StudyError("empty study file", file=path)
        raw = _node_tree(node, (), lines_by_tuple, set(), [0])
    except StudyError as exc:
        exc.file = str(path)
        raise StudyError(exc.message, file=path, line=exc.line, field=exc.field) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyError(f"invalid YAML: {problem}", file=path, line=line) from None
    except RecursionError:
        raise StudyError("YAML nested too deeply", file=path) from None
    if not isinstance(raw, dict):
        raise StudyError("a study must be a mapping of sections (name, data, student, ...)",
                         file=path, line=1)
    lines = {".".join(str(p) for p in k): v for k, v in lines_by_tuple.items() if k}
    unresolved: set[str] = set()
    raw = _interpolate(raw, variables, unresolved)
    resolved = copy.deepcopy(raw)
    _resolve_relative(resolved, path.parent.resolve() if path.name != "<study>" else Path.cwd())
    try:
        study = Study.model_validate(resolved)
    except ValidationError as err:
        raise validation_error_to_study_error(err, path, lines) from None
    loaded = LoadedStudy(study=study, path=path, raw=raw, lines=lines,
                         unresolved=sorted(unresolved))
    _check_search_values(loaded)
    _check_linked(loaded)
    return loaded


def _check_search_values(loaded: LoadedStudy) -> None:
    """Every searched path must exist and every listed value must be valid for its field."""
    study = loaded.study
    base = study.base_config()
    base_paths = set(base.flat())
    for path, spec in study.search.params.items():
        field = f"search.params.{path}"
        if path == "seed":
            raise loaded.error("search seeds with search.seeds, not a parameter", field)
        if path not in base_paths and not any(p.startswith(path + ".") for p in base_paths):
            close = difflib.get_close_matches(path, sorted(base_paths), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise loaded.error(f"unknown parameter path{hint}", field)
        samples = spec.values if isinstance(spec, CategoricalParam) else [spec.low, spec.high]
        for value in samples:
            try:
                apply_overrides(base, {path: value})
            except StudyError as exc:
                raise loaded.error(f"value {value!r}: {exc.message}", field) from None
        linked = study.linked_params()
        for ref, allowed in (spec.when or {}).items():
            if ref in linked:
                bad = [v for v in allowed if v not in linked[ref]]
                if bad:
                    raise loaded.error(f"when: {ref} has no label {bad[0]!r}; labels: "
                                       f"{linked[ref]}", f"{field}.when")
                continue
            if ref not in study.search.params or ref == path:
                known = sorted((set(study.search.params) | set(linked)) - {path})
                raise loaded.error(f"when: unknown parameter {ref!r}; known: "
                                   f"{', '.join(known) or 'none'}", f"{field}.when")
            ref_spec = study.search.params[ref]
            if isinstance(ref_spec, CategoricalParam):
                bad = [v for v in allowed if v not in ref_spec.values]
                if bad:
                    raise loaded.error(
                        f"when: {ref} never takes {bad[0]!r}; its values: {ref_spec.values}",
                        f"{field}.when")


def _check_linked(loaded: LoadedStudy) -> None:
    study = loaded.study
    base = study.base_config()
    for group, bundles in study.search.linked.items():
        if not bundles:
            raise loaded.error("a linked group needs at least one labelled bundle",
                               f"search.linked.{group}")
        for label, overrides in bundles.items():
            field = f"search.linked.{group}.{label}"
            for path in overrides:
                if path in study.search.params:
                    raise loaded.error(f"{path} is both searched and linked", field)
            try:
                apply_overrides(base, overrides)
            except StudyError as exc:
                raise loaded.error(f"{exc.field}: {exc.message}", field) from None


def study_json_schema() -> dict[str, Any]:
    """JSON Schema of a study file, for editor completion."""
    schema = Study.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bkd-sweep study"
    return schema
