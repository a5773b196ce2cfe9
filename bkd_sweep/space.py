"""The search space of a study, for Optuna: define-by-run suggestion, full grids, counts,
and the sampler / pruner tables.

A parameter is a dotted path (``distill.blur_ratio``) or a linked group (``linked.backbone``,
a categorical over bundle labels). ``when: {distill.mode: [bkd, mixed]}`` makes a parameter
active only when every listed parameter is active and took one of the listed values;
an inactive parameter is absent from the trial's params (the base config value applies).

Trial counting: one trial is one (configuration, seed) pair. A grid runs every configuration
once per seed (``len(grid) x len(seeds)``, cut to ``n_trials`` when that is set); the other
samplers run ``n_trials`` trials, each sampled configuration followed by its repeats with the
other seeds (the last configuration may get fewer seeds when n_trials is not a multiple).
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import optuna
from pydantic import TypeAdapter, ValidationError

from bkd_sweep.registry import Registry
from bkd_sweep.config import (
    LINKED_PREFIX,
    CategoricalParam,
    AutoPrunerConfig,
    HyperbandPrunerConfig,
    MedianPrunerConfig,
    NoPrunerConfig,
    PercentilePrunerConfig,
    PrunerConfig,
    RangeParam,
    SearchConfig,
    StudyError,
    SuccessiveHalvingPrunerConfig,
    ThresholdPrunerConfig,
)

ParamSpec = CategoricalParam | RangeParam
_PRIMITIVE = (type(None), bool, int, float, str)
GRID_LIMIT = 1_000_000  # refuse to expand grids larger than this (a typo, not a study)


# --------------------------------------------------------------------------------------
# Parameters and their order


def all_params(search: SearchConfig) -> dict[str, ParamSpec]:
    """Every searched parameter: linked groups (as categoricals over labels) first, then
    ``search.params`` in file order."""
    linked: dict[str, ParamSpec] = {
        LINKED_PREFIX + name: CategoricalParam(values=list(bundles))
        for name, bundles in search.linked.items()}
    return {**linked, **search.params}


def param_order(search: SearchConfig) -> list[str]:
    """Parameters ordered so each comes after the parameters its ``when`` names (file order
    otherwise). A cycle raises StudyError naming it."""
    params = all_params(search)
    order: list[str] = []
    done: set[str] = set()

    def visit(path: str, stack: list[str]) -> None:
        if path in done:
            return
        if path in stack:
            cycle = stack[stack.index(path):] + [path]
            raise StudyError(f"when: dependency cycle {' -> '.join(cycle)}",
                             field=f"search.params.{path}.when")
        for ref in (params[path].when or {}):
            if ref not in params:
                raise StudyError(f"when: unknown parameter {ref!r}",
                                 field=f"search.params.{path}.when")
            visit(ref, stack + [path])
        done.add(path)
        order.append(path)

    for path in params:
        visit(path, [])
    return order


def is_active(spec: ParamSpec, chosen: dict[str, Any]) -> bool:
    """Active when every ``when`` parameter is active and took one of its listed values."""
    return all(ref in chosen and chosen[ref] in allowed
               for ref, allowed in (spec.when or {}).items())


def _needs_encoding(values: list[Any]) -> bool:
    return not all(isinstance(v, _PRIMITIVE) for v in values)


def _encode(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def to_optuna_params(params: dict[str, Any], search: SearchConfig) -> dict[str, Any]:
    """Params as Optuna stores them (non-scalar categorical values become JSON text), e.g.
    for ``Study.enqueue_trial``."""
    specs = all_params(search)
    out = {}
    for path, value in params.items():
        spec = specs[path]
        encode = isinstance(spec, CategoricalParam) and _needs_encoding(spec.values)
        out[path] = _encode(value) if encode else value
    return out


def from_optuna_params(params: dict[str, Any], search: SearchConfig) -> dict[str, Any]:
    """Inverse of ``to_optuna_params`` (e.g. for ``FrozenTrial.params``)."""
    specs = all_params(search)
    out = {}
    for path, value in params.items():
        spec = specs.get(path)
        if isinstance(spec, CategoricalParam) and _needs_encoding(spec.values):
            value = json.loads(value)
        out[path] = value
    return out


# --------------------------------------------------------------------------------------
# Define-by-run


def suggest(trial: optuna.Trial, search: SearchConfig) -> dict[str, Any]:
    """Suggest one configuration on an Optuna trial: only active parameters are suggested,
    dependencies first. Returns dotted path -> value (inactive parameters absent)."""
    specs = all_params(search)
    chosen: dict[str, Any] = {}
    for path in param_order(search):
        spec = specs[path]
        if not is_active(spec, chosen):
            continue
        if isinstance(spec, CategoricalParam):
            if _needs_encoding(spec.values):
                choices = list(dict.fromkeys(_encode(v) for v in spec.values))
                chosen[path] = json.loads(trial.suggest_categorical(path, choices))
            else:
                chosen[path] = trial.suggest_categorical(path, list(dict.fromkeys(spec.values)))
        elif spec.is_int:
            chosen[path] = trial.suggest_int(path, int(spec.low), int(spec.high),
                                             step=int(spec.step or 1), log=spec.log)
        else:
            chosen[path] = trial.suggest_float(path, float(spec.low), float(spec.high),
                                               step=float(spec.step) if spec.step else None,
                                               log=spec.log)
    return chosen


# --------------------------------------------------------------------------------------
# Grids and counts


def range_values(spec: RangeParam) -> list[int | float]:
    """The points of a stepped range, low..high inclusive (an int range without step: every
    integer). A float range without step has no grid: ValueError."""
    if spec.is_int:
        return list(range(int(spec.low), int(spec.high) + 1, int(spec.step or 1)))
    if spec.step is None:
        raise ValueError("a float range needs a step to be enumerated")
    n = math.floor((spec.high - spec.low) / spec.step + 1e-9)
    return [round(spec.low + i * spec.step, 12) for i in range(n + 1)]


def param_values(spec: ParamSpec) -> list[Any]:
    if isinstance(spec, CategoricalParam):
        unique: dict[str, Any] = {}
        for value in spec.values:
            unique.setdefault(_encode(value), value)
        return list(unique.values())
    return range_values(spec)


def is_finite(search: SearchConfig) -> bool:
    """True when every parameter has a finite list of values (lists, stepped/int ranges)."""
    return all(isinstance(s, CategoricalParam) or s.is_int or s.step is not None
               for s in all_params(search).values())


def grid(search: SearchConfig) -> list[dict[str, Any]]:
    """The full factorial that respects ``when``: inactive parameters are absent and
    identical configurations appear once. Order: the first parameter varies slowest."""
    specs = all_params(search)
    configs: list[dict[str, Any]] = [{}]
    for path in param_order(search):
        spec = specs[path]
        try:
            values = param_values(spec)
        except ValueError:
            raise StudyError("a grid needs a list or a range with step",
                             field=f"search.params.{path}") from None
        expanded: list[dict[str, Any]] = []
        for config in configs:
            if is_active(spec, config):
                expanded.extend({**config, path: value} for value in values)
            else:
                expanded.append(config)
        if len(expanded) > GRID_LIMIT:
            raise StudyError(f"the grid has more than {GRID_LIMIT:,} configurations",
                             field="search.params")
        configs = expanded
    seen: set[str] = set()
    unique = []
    for config in configs:
        key = _encode(config)
        if key not in seen:
            seen.add(key)
            unique.append(config)
    return unique


def grid_trials(search: SearchConfig) -> list[tuple[dict[str, Any], int]]:
    """(params, seed) for every trial of a grid sweep: each configuration with every seed,
    cut to ``n_trials`` when set."""
    trials = [(config, seed) for config in grid(search) for seed in search.seeds]
    return trials[:search.n_trials] if search.n_trials else trials


def count_trials(search: SearchConfig) -> int:
    """How many (configuration, seed) trials the sweep runs.

    grid: ``len(grid) x len(seeds)`` (at most n_trials); other samplers: ``n_trials``, or the
    full grid x seeds when the space is finite and n_trials is unset.
    """
    if search.sampler == "grid":
        return len(grid_trials(search))
    if search.n_trials is not None:
        return search.n_trials
    if is_finite(search):
        return len(grid(search)) * len(search.seeds)
    raise StudyError(f"sampler {search.sampler!r} over a continuous space needs a budget "
                     "(n_trials)", field="search.n_trials")


# --------------------------------------------------------------------------------------
# Samplers (by name)

SAMPLERS: Registry[optuna.samplers.BaseSampler] = Registry("sampler")


@SAMPLERS.register("grid")
def _grid_sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    # Every grid point is enqueued (GridSampler cannot express conditionals), so the
    # sampler is never consulted; a seeded random sampler keeps that harmless.
    return optuna.samplers.RandomSampler(seed=search.sampler_seed)


@SAMPLERS.register("random")
def _random_sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=search.sampler_seed)


@SAMPLERS.register("tpe")
def _tpe_sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    conditional = any(spec.when for spec in all_params(search).values())
    with warnings.catch_warnings():  # multivariate/group are flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=search.sampler_seed, multivariate=True,
                                          group=conditional, constant_liar=True)


@SAMPLERS.register("nsga2")
def _nsga2_sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=search.sampler_seed)


def make_sampler(search: SearchConfig, name: str | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named ``name`` (default ``search.sampler``); an unknown name lists
    the valid ones."""
    return SAMPLERS.get(name or search.sampler)(search)


def list_samplers() -> list[str]:
    return SAMPLERS.names()


# --------------------------------------------------------------------------------------
# Pruners (by name, strict arguments)
#
# Steps are epochs (1-based). ``warmup_epochs: W`` means epochs 1..W are never pruned, so
# Optuna's n_warmup_steps (pruning allowed from step == n_warmup_steps) is W + 1.

PRUNERS: Registry[optuna.pruners.BasePruner] = Registry("pruner")
_PRUNER_CONFIGS = {"auto": AutoPrunerConfig, "none": NoPrunerConfig, "median": MedianPrunerConfig,
                   "percentile": PercentilePrunerConfig,
                   "successive_halving": SuccessiveHalvingPrunerConfig,
                   "hyperband": HyperbandPrunerConfig, "threshold": ThresholdPrunerConfig}


@PRUNERS.register("auto")
def _auto_pruner(cfg: AutoPrunerConfig) -> optuna.pruners.BasePruner:
    raise StudyError("pruner 'auto' is resolved when the study loads (it depends on the "
                     "sampler and train.epochs): build from the loaded study's search.pruner",
                     field="search.pruner")


@PRUNERS.register("none")
def _no_pruner(cfg: NoPrunerConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


@PRUNERS.register("median")
def _median_pruner(cfg: MedianPrunerConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials,
                                       n_warmup_steps=cfg.warmup_epochs + 1,
                                       interval_steps=cfg.interval_epochs)


@PRUNERS.register("percentile")
def _percentile_pruner(cfg: PercentilePrunerConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.PercentilePruner(cfg.percentile, n_startup_trials=cfg.startup_trials,
                                           n_warmup_steps=cfg.warmup_epochs + 1,
                                           interval_steps=cfg.interval_epochs)


@PRUNERS.register("successive_halving")
def _sh_pruner(cfg: SuccessiveHalvingPrunerConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=cfg.min_resource, reduction_factor=cfg.reduction_factor,
        min_early_stopping_rate=cfg.min_early_stopping_rate)


@PRUNERS.register("hyperband")
def _hyperband_pruner(cfg: HyperbandPrunerConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=cfg.min_resource,
                                          max_resource=cfg.max_resource,
                                          reduction_factor=cfg.reduction_factor)


@PRUNERS.register("threshold")
def _threshold_pruner(cfg: ThresholdPrunerConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.ThresholdPruner(lower=cfg.lower, upper=cfg.upper,
                                          n_warmup_steps=cfg.warmup_epochs + 1)


_PRUNER_ADAPTER = TypeAdapter(PrunerConfig)


def pruner_config(spec: Any) -> Any:
    """A validated pruner config from a config object or a ``{"name": ..., args}`` dict.
    Unknown names list the valid ones; unknown or bad arguments raise StudyError."""
    if not isinstance(spec, dict):
        return spec
    name = spec.get("name", "none")
    PRUNERS.get(name)  # unknown name -> UnknownNameError listing the valid ones
    try:
        return _PRUNER_ADAPTER.validate_python(spec)
    except ValidationError as err:
        first = err.errors()[0]
        arg = str(first["loc"][-1]) if first["loc"] else name
        if first["type"] == "extra_forbidden":
            allowed = [f for f in _PRUNER_CONFIGS[name].model_fields if f != "name"]
            raise StudyError(f"pruner {name!r}: unknown argument {arg!r}; allowed: "
                             f"{', '.join(allowed) or 'none'}", field="search.pruner") from None
        raise StudyError(f"pruner {name!r}: {arg}: {first['msg']}",
                         field="search.pruner") from None


def make_pruner(spec: Any) -> optuna.pruners.BasePruner:
    """The Optuna pruner for a pruner config (or dict); see the module notes on warmup."""
    cfg = pruner_config(spec)
    return PRUNERS.get(cfg.name)(cfg)


def list_pruners() -> list[str]:
    return PRUNERS.names()


def study_directions(search: SearchConfig) -> list[str]:
    """Optuna directions in objective order ('maximize' / 'minimize')."""
    return ["maximize" if o.mode == "max" else "minimize" for o in search.objectives]
