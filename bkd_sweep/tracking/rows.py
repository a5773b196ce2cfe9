"""The rows of one trial: its trials.parquet row and its epochs.parquet rows, values coerced
to the schema's types (no I/O here)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from bkd_sweep.config import flatten
from bkd_sweep.records import EpochMetrics, TrialRecord, result_metrics
from bkd_sweep.redact import redact_params, redact_value
from bkd_sweep.tracking.schema import (
    LOSS_TERMS,
    PARAM_PREFIX,
    SCHEMA_VERSION,
    arrow_type_for_value,
    coerce,
    param_types,
)


def trial_row(record: TrialRecord, *, study: str, mlflow_run_id: str | None = None,
              finished_at: datetime | None = None) -> dict[str, Any]:
    """The trials.parquet row of one record, values coerced to the schema's types."""
    result = record.result
    config = result.config or {}
    leaves = redact_params({**record.params, **flatten(config)})
    leaves.setdefault("seed", record.seed)
    types = param_types()
    params = {PARAM_PREFIX + path: coerce(value, types.get(path) or arrow_type_for_value(value))
              for path, value in leaves.items()}
    energy = result.energy
    train = config.get("train")
    planned = train.get("epochs") if isinstance(train, dict) else None
    return {
        "trial_id": record.trial_id,
        "trial_number": int(record.trial_number),
        "study": study,
        "status": result.status,
        "reason": result.reason,
        "seed": int(record.seed),
        **params,
        **{f"metric.{k}": _float(v) for k, v in result_metrics(result).items()},
        "epochs_run": int(result.epochs_run),
        "epochs_planned": planned,
        "pruned_epoch": record.pruned_epoch,
        "wall_seconds": float(result.wall_seconds),
        "device_seconds": float(result.device_seconds),
        "device": result.device,
        "config_hash": result.config_hash,
        "config_id": result.config_id,
        "selection_on_test": bool(result.selection_on_test),
        "split_rule": result.split_rule,
        "code_version": result.code_version,
        "mlflow_run_id": mlflow_run_id,
        "config_json": json.dumps(redact_value(config)),
        "firing_rates_json": json.dumps(energy.firing_rates if energy else {}, sort_keys=True),
        "finished_at": finished_at or datetime.now(UTC),
        "schema_version": SCHEMA_VERSION,
    }


def epoch_rows(record: TrialRecord) -> list[dict[str, Any]]:
    """One epochs.parquet row per epoch of the record's history (the last report of an epoch
    wins if a retry reported it twice)."""
    by_epoch: dict[int, EpochMetrics] = {m.epoch: m for m in record.result.history}
    return [
        {
            "trial_id": record.trial_id,
            "epoch": m.epoch,
            "metric.top1": m.top1,
            "metric.top5": m.top5,
            "metric.val_loss": m.val_loss,
            "metric.loss": m.loss,
            **{f"loss.{t}": _float(m.loss_terms.get(t)) for t in LOSS_TERMS},
            "lr": m.lr,
            "wall_seconds": m.wall_seconds,
            "schema_version": SCHEMA_VERSION,
        }
        for _, m in sorted(by_epoch.items())
    ]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
