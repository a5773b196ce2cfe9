"""The numbers Optuna sees: a finished trial's objective values and each epoch's pruning value."""

from __future__ import annotations

import math

from bkd_sweep.config import KNOWN_METRICS, SearchConfig
from bkd_sweep.records import EPOCH_METRIC_MODES, EpochMetrics, TrialResult, epoch_metric, \
    result_metrics


def objective_value(result: TrialResult, metric: str) -> float | None:
    """A finished trial's value for an objective metric (top1 = best top-1; loss = the last
    epoch's validation loss; energy metrics per sample); None when missing or not finite."""
    if metric not in KNOWN_METRICS:
        raise KeyError(f"unknown objective metric {metric!r}; known: {', '.join(KNOWN_METRICS)}")
    history = result.history
    values = {**result_metrics(result), "wall_seconds": result.wall_seconds,
              "loss": history[-1].val_loss if history else None}
    value = values[metric]
    return None if value is None or not math.isfinite(float(value)) else float(value)


def objective_values(result: TrialResult, search: SearchConfig) -> tuple[list[float], list[str]]:
    """(the values in objective order, the objectives that have no finite value)."""
    values = [objective_value(result, o.metric) for o in search.objectives]
    missing = [o.metric for o, v in zip(search.objectives, values) if v is None]
    return [v for v in values if v is not None], missing


def pruning_value(search: SearchConfig, metrics: EpochMetrics) -> float:
    """The value reported to Optuna at each epoch: ``search.pruned_metric``, negated when
    its direction is opposite to the study's (so median-type pruners compare it the right
    way round); threshold pruners see the raw value (their bounds are in its units)."""
    value = epoch_metric(metrics, search.pruned_metric)
    if search.pruner.name in ("none", "threshold") or len(search.objectives) > 1:
        return value
    metric_mode = EPOCH_METRIC_MODES.get(search.pruned_metric.split(".")[0], "min")
    return value if metric_mode == search.objectives[0].mode else -value
