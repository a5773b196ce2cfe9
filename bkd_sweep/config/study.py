"""The study sections: search space, pruners, objectives, resources, tracking, report;
and Study, the validated study file."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from bkd_sweep.config.base import Seed, Strict
from bkd_sweep.config.overrides import apply_overrides
from bkd_sweep.config.trial import (DataConfig, DistillConfig, EnergyConfig, StudentConfig,
                                    TeacherConfig, TrainConfig, TrialConfig)

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
    metric: str = "val_top1"
    mode: Literal["max", "min"] = "max"

    @field_validator("metric")
    @classmethod
    def _selection_metric(cls, metric: str) -> str:
        if metric == "top1":  # studies written before three splits: top-1 that selects = val
            return "val_top1"
        if metric.startswith("test_"):
            raise ValueError(f"{metric}: the test split is measured once and never selects; "
                             "use val_top1")
        return metric


class NoPrunerConfig(Strict):
    name: Literal["none"] = "none"


class AutoPrunerConfig(Strict):
    """The default: Hyperband (asynchronous successive halving in brackets, as ASHA) with
    rungs derived from train.epochs for random/tpe single-objective searches; no pruning for
    grid ablations (every cell is reported) and multi-objective searches. Resolved when the
    study loads, so everything downstream sees the concrete pruner."""

    name: Literal["auto"] = "auto"


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
    min_resource: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    reduction_factor: int = Field(4, ge=2)
    min_early_stopping_rate: int = Field(0, ge=0)


class HyperbandPrunerConfig(Strict):
    name: Literal["hyperband"]
    min_resource: int = Field(1, ge=1)
    max_resource: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    reduction_factor: int = Field(3, ge=2)

    @model_validator(mode="after")
    def _min_below_max(self) -> "HyperbandPrunerConfig":
        # Optuna takes it, then divides by zero at the first prune (no bracket fits)
        if isinstance(self.max_resource, int) and self.max_resource < self.min_resource:
            raise ValueError(f"max_resource ({self.max_resource}) must be >= min_resource "
                             f"({self.min_resource})")
        return self


class ThresholdPrunerConfig(Strict):
    name: Literal["threshold"]
    lower: float | None = None
    upper: float | None = None
    warmup_epochs: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "ThresholdPrunerConfig":
        if self.lower is None and self.upper is None:
            raise ValueError("threshold pruner needs lower or upper")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) must be <= upper ({self.upper})")
        return self


PrunerConfig = Annotated[
    Union[AutoPrunerConfig, NoPrunerConfig, MedianPrunerConfig, PercentilePrunerConfig,
          SuccessiveHalvingPrunerConfig, HyperbandPrunerConfig, ThresholdPrunerConfig],
    Field(discriminator="name"),
]

PRUNER_CLASSES: dict[str, type[BaseModel]] = {
    cls.model_fields["name"].annotation.__args__[0]: cls
    for cls in (AutoPrunerConfig, NoPrunerConfig, MedianPrunerConfig, PercentilePrunerConfig,
                SuccessiveHalvingPrunerConfig, HyperbandPrunerConfig, ThresholdPrunerConfig)
}

# objective metrics: what may select (never test_top1: test is measured once, for reporting)
KNOWN_METRICS = ("val_top1", "final_top1", "energy_mj", "sops", "macs", "firing_rate", "loss",
                 "wall_seconds")


def auto_pruner(search: "SearchConfig", epochs: int) -> "PrunerConfig":
    """What ``pruner: auto`` means for this search (see AutoPrunerConfig): Hyperband with
    reduction factor 3 from a first rung of max(1, epochs // 27) epochs up to all epochs."""
    if search.sampler == "grid" or len(search.objectives) > 1 or epochs < 3:
        return NoPrunerConfig()
    return HyperbandPrunerConfig(name="hyperband", min_resource=max(1, epochs // 27),
                                 max_resource=epochs, reduction_factor=3)


class BudgetConfig(Strict):
    """What a sweep may spend: no new trial starts once the projection passes a limit."""

    device_hours: float | None = Field(None, gt=0)  # GPU-hours (CPU-process-hours on CPU)
    wall_hours: float | None = Field(None, gt=0)  # since the sweep first started


class SearchConfig(Strict):
    sampler: Literal["grid", "random", "tpe", "nsga2"] = "grid"
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=1000)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    # Linked choices keep paths together (a student with its own teacher): group -> label ->
    # overrides. In Optuna, MLflow and Parquet the choice is the parameter "linked.<group>".
    linked: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()], min_length=1)
    pruner: PrunerConfig = Field(default_factory=AutoPrunerConfig)
    n_trials: int | None = Field(None, ge=1, le=1_000_000)  # budget; grid: None = the full factorial x seeds
    sampler_seed: int = Field(0, ge=0, lt=2**32)  # what Optuna's samplers accept
    pruned_metric: str = "top1"  # the per-epoch value pruners compare
    budget: BudgetConfig = Field(default_factory=BudgetConfig)

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
        if multi and self.pruner.name not in ("none", "threshold", "auto"):
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

    @model_validator(mode="after")
    def _one_process_per_device(self) -> "TrialResources":
        # DDP runs one process per device: a worker shares no GPU with another and drives
        # exactly one (a trial that wants two GPUs asks for two workers)
        if self.workers > 1 and 0 < self.gpu < 1:
            raise ValueError(f"gpu {self.gpu} with workers {self.workers}: data-parallel workers "
                             "need a whole GPU each (gpu: 1), or use workers: 1 to share a GPU")
        if self.gpu > 1:
            raise ValueError(f"gpu {self.gpu:g}: one process drives one GPU; for {self.gpu:g} GPUs "
                             f"per trial set workers: {self.gpu:g} and gpu: 1")
        if 0 < self.gpu < 1 and abs(1 / self.gpu - round(1 / self.gpu)) > 1e-6:
            raise ValueError(f"gpu {self.gpu}: a shared GPU must split evenly (0.5, 0.25, ...)")
        return self


class ResourcesConfig(Strict):
    per_trial: TrialResources = Field(default_factory=TrialResources)
    # auto (or null): as many trials as the cluster fits, growing as nodes join
    max_concurrent: Annotated[int, Field(ge=1, le=100_000)] | Literal["auto"] | None = "auto"
    max_failures: int = Field(2, ge=0, le=1000)  # retries of a crashed trial (from its checkpoint)
    object_store_mb: int | None = Field(None, ge=64)

    @property
    def concurrency_cap(self) -> int | None:
        """A fixed number of trials at once, or None (auto: what the cluster fits)."""
        return self.max_concurrent if isinstance(self.max_concurrent, int) else None


class TrackingConfig(Strict):
    results_dir: str | None = None  # default: ./results (absolute at start)
    mlflow_uri: str | None = None  # default: sqlite:///<results_dir>/mlflow.db


# metrics where less is better: a table or plot of one ranks its lowest value first
LOWER_IS_BETTER = frozenset({"energy_mj", "sops", "macs", "firing_rate", "loss", "val_loss",
                             "wall_seconds", "device_seconds", "teacher_energy_mj"})


class TableSpec(Strict):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    rows: str
    cols: str | None = None
    metric: str = "top1"
    # which end is best (bold) in each column; unset: min for LOWER_IS_BETTER metrics, else max
    mode: Literal["max", "min"] | None = None

    @model_validator(mode="after")
    def _mode_from_metric(self) -> "TableSpec":
        if self.mode is None:
            self.mode = "min" if self.metric in LOWER_IS_BETTER else "max"
        return self
    baseline: str | None = "none"  # distill.mode each other mode is tested against; null: none


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
    # the storage root: a shared path (NFS, Lustre) or s3://bucket/prefix; default ./results
    storage: str | None = None
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

    @model_validator(mode="after")
    def _resolve_auto_pruner(self) -> "Study":
        if isinstance(self.search.pruner, AutoPrunerConfig):
            self.search.pruner = auto_pruner(self.search, self.train.epochs)
        return self

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
