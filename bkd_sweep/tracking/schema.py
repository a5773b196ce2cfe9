"""The Parquet schema of results/<study>/ (version 2), built explicitly so dtypes never drift.

Version 2 (three splits): ``metric.val_top1`` (what selected), ``metric.test_top1`` (measured
once on the selected weights), ``config_id``, ``split_rule``, ``selection_on_test``. Version 1
files still load: ``upgrade_v1`` maps their best-on-held-out ``top1`` to ``test_top1`` and
marks the rows ``selection_on_test`` (their top-1 was selected on the split it reports).

Param column types come from the TrialConfig field annotations, not from values: a leaf that
is None in every trial (``param.data.root``) is still a string column, ``param.student.timesteps``
is int64 even in a file with one trial. Documented in docs/results-schema.md.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel

from bkd_sweep.records import RESULT_METRICS

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
SCHEMA_VERSION_KEY = b"bkd_sweep.schema_version"
PARAM_PREFIX = "param."

# trials.parquet: metric.<name> (all float64, nullable): records.RESULT_METRICS, one home
TRIAL_METRICS = RESULT_METRICS
V1_RENAMES = {"metric.top1": "metric.test_top1", "metric.top5": "metric.test_top5",
              "metric.teacher_top1": "metric.teacher_test_top1"}
V1_SPLIT_RULE = "schema v1: top-1 is the best epoch on the held-out split (selected on test)"
LOSS_TERMS = ("task", "logit", "bkd")

_HEAD = [
    pa.field("trial_id", pa.string(), nullable=False),
    pa.field("trial_number", pa.int64(), nullable=False),
    pa.field("study", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("seed", pa.int64(), nullable=False),
]
_TAIL = [
    *(pa.field(f"metric.{m}", pa.float64()) for m in TRIAL_METRICS),
    pa.field("epochs_run", pa.int64(), nullable=False),
    pa.field("epochs_planned", pa.int64()),
    pa.field("pruned_epoch", pa.int64()),
    pa.field("wall_seconds", pa.float64()),
    pa.field("device_seconds", pa.float64()),
    pa.field("device", pa.string()),
    pa.field("config_hash", pa.string()),
    pa.field("config_id", pa.string()),  # equal for every seed of one configuration
    pa.field("selection_on_test", pa.bool_()),
    pa.field("split_rule", pa.string()),
    pa.field("code_version", pa.string()),
    pa.field("mlflow_run_id", pa.string()),
    pa.field("config_json", pa.string()),
    pa.field("firing_rates_json", pa.string()),
    pa.field("finished_at", pa.timestamp("us", tz="UTC")),
    pa.field("schema_version", pa.int32(), nullable=False),
]

EPOCHS_SCHEMA = pa.schema(
    [
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("epoch", pa.int64(), nullable=False),
        pa.field("metric.top1", pa.float64()),
        pa.field("metric.top5", pa.float64()),
        pa.field("metric.val_loss", pa.float64()),
        pa.field("metric.loss", pa.float64()),
        *(pa.field(f"loss.{t}", pa.float64()) for t in LOSS_TERMS),
        pa.field("lr", pa.float64()),
        pa.field("wall_seconds", pa.float64()),
        pa.field("schema_version", pa.int32(), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)


def _scalar_type(tp: Any) -> pa.DataType:
    """Arrow type of one non-None annotation member; containers and unknowns are JSON strings."""
    if tp is bool:
        return pa.bool_()
    if tp is int:
        return pa.int64()
    if tp is float:
        return pa.float64()
    if typing.get_origin(tp) is Literal:
        kinds = {_scalar_type(type(v)) for v in typing.get_args(tp)}
        return kinds.pop() if len(kinds) == 1 else pa.string()
    return pa.string()


def arrow_type_for_annotation(annotation: Any) -> pa.DataType:
    """``int | None`` -> int64, ``Literal['a','b']`` -> string, ``int | float`` -> float64."""
    args = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    kinds = {_scalar_type(a) for a in args if a is not type(None)}
    if len(kinds) == 1:
        return kinds.pop()
    if kinds == {pa.int64(), pa.float64()}:
        return pa.float64()
    return pa.string()


def arrow_type_for_value(value: Any) -> pa.DataType:
    """Fallback for a leaf the TrialConfig does not declare (a config from another version)."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``Model`` or ``Model | None``, else None (a leaf)."""
    args = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _leaf_types(model: type[BaseModel], prefix: str = "") -> dict[str, pa.DataType]:
    out: dict[str, pa.DataType] = {}
    for name, field in model.model_fields.items():
        sub = _submodel(field.annotation)
        if sub is not None:
            out.update(_leaf_types(sub, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = arrow_type_for_annotation(field.annotation)
    return out


@functools.cache
def param_types() -> dict[str, pa.DataType]:
    """Dotted leaf path -> Arrow type for every TrialConfig leaf, in declaration order."""
    from bkd_sweep.config import TrialConfig

    return _leaf_types(TrialConfig)


def trials_schema(extra_params: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """The trials.parquet schema: fixed head, one column per TrialConfig leaf, fixed tail.

    ``extra_params`` (dotted path -> type) keeps leaves that an older or newer TrialConfig had.
    """
    params = dict(param_types())
    for path, tp in sorted((extra_params or {}).items()):
        params.setdefault(path, tp)
    fields = [*_HEAD, *(pa.field(PARAM_PREFIX + p, t) for p, t in params.items()), *_TAIL]
    return pa.schema(fields, metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()})


def coerce(value: Any, tp: pa.DataType) -> Any:
    """A Python value fit for a column of type ``tp`` (None stays None)."""
    if value is None:
        return None
    if pa.types.is_string(tp):
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if pa.types.is_boolean(tp):
        return bool(value)
    if pa.types.is_integer(tp):
        return int(value)
    if pa.types.is_floating(tp):
        return float(value)
    return value


def file_schema_version(schema: pa.Schema) -> int | None:
    """The schema version recorded in a Parquet file's metadata (None if absent)."""
    raw = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    return int(raw) if raw is not None else None


def upgrade_v1(table: pa.Table) -> pa.Table:
    """A version 1 trials table in version 2 terms (see the module docstring)."""
    names = [V1_RENAMES.get(n, n) for n in table.column_names]
    table = table.rename_columns(names)
    n = table.num_rows
    for name, array in (("selection_on_test", pa.array([True] * n, pa.bool_())),
                        ("split_rule", pa.array([V1_SPLIT_RULE] * n, pa.string()))):
        if name not in table.column_names:
            table = table.append_column(name, array)
    return table
