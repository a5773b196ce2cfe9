"""What every config section shares: strict models, the seed type, dotted paths."""

from __future__ import annotations

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
