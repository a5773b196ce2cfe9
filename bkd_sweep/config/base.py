"""What every config section shares: strict models, the seed type, dotted paths."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Seed = Annotated[int, Field(ge=0, lt=2**31)]


class Strict(BaseModel):
    """Unknown keys are errors: a misspelled setting must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def stable_hash(tree: Any) -> str:
    """16 hex digits identifying a JSON-able value (key order does not matter)."""
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def config_id_of(config: dict[str, Any]) -> str:
    """One configuration whatever its seed: the hash of a trial config without ``seed``."""
    return stable_hash({k: v for k, v in config.items() if k != "seed"})
