"""Turning pydantic errors into one-line StudyErrors, and the cross-field checks a schema
cannot express (searched paths exist, `when` references, linked bundles)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from bkd_sweep.config.errors import StudyError
from bkd_sweep.config.overrides import apply_overrides
from bkd_sweep.config.study import PRUNER_CLASSES, CategoricalParam, Study

if TYPE_CHECKING:
    from bkd_sweep.config.loading import LoadedStudy


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
        pruner_class = PRUNER_CLASSES.get(str(loc.pop(2)))
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


def check_search_values(loaded: LoadedStudy) -> None:
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


def check_linked(loaded: LoadedStudy) -> None:
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
