"""Dotted-path overrides (``--set distill.mode=bkd``) applied to a TrialConfig."""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from pydantic import ValidationError

from bkd_sweep.config.errors import StudyError
from bkd_sweep.config.trial import TrialConfig


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
    if not all(part.strip() for part in path.split(".")):
        raise StudyError(f"--set {text!r}: expected path=value, the path dotted names "
                         "(e.g. train.epochs=2)")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return path.strip(), value
