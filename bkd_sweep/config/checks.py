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


_SCALAR_TAGS = ("int", "float", "str", "bool", "none")
_TAG_PREFIXES = ("constrained-", "literal[", "function-", "list[", "dict[", "tuple[")


def _is_union_tag(part: Any) -> bool:
    """A pydantic union member's tag in an error location ('int', "literal['auto']")."""
    return isinstance(part, str) and (part in _SCALAR_TAGS or part.startswith(_TAG_PREFIXES))


def _union_alternatives(errors: list[dict[str, Any]]) -> tuple[list[Any], str]:
    """The first error's location without a trailing union tag, and its message: with a tag,
    what each member of the union wanted ('... integer or ... number'), said once."""
    first = errors[0]
    loc = list(first["loc"])
    members = [e for e in errors if len(e["loc"]) == len(loc) and loc
               and list(e["loc"][:-1]) == loc[:-1] and _is_union_tag(e["loc"][-1])]
    if first["type"] == "extra_forbidden" or len(members) < 2 or first not in members:
        return loc, _pydantic_message(first)  # a key the user wrote, not a union's tag
    wants = list(dict.fromkeys(e["msg"].removeprefix("Input should be ").split(", ")[0]
                               for e in members))
    message = _pydantic_message({**first, "msg": "Input should be " + " or ".join(wants)})
    return loc[:-1], message


def validation_error_to_study_error(err: ValidationError, path: Path,
                                   lines: dict[str, int | None]) -> StudyError:
    first = err.errors()[0]
    loc, message = _union_alternatives(err.errors())
    # drop pydantic's union tags: ('search','params',P,'range','low') -> search.params.P.low
    if loc[:2] == ["search", "params"] and len(loc) > 3 and loc[3] in ("categorical", "range"):
        del loc[3]
    pruner_class = None
    if loc[:2] == ["search", "pruner"] and len(loc) > 2 and str(loc[2]) in PRUNER_CLASSES:
        pruner_class = PRUNER_CLASSES.get(str(loc.pop(2)))  # the union's tag, not a key
    loc = tuple(loc)
    dotted = ".".join(str(p) for p in loc)
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
            _check_when_values(loaded, ref, allowed, f"{field}.when")


def _check_when_values(loaded: LoadedStudy, ref: str, allowed: list[Any], field: str) -> None:
    """Each value ``when`` lists is one ``ref`` can take: a listed value, or a point of an
    int or stepped range (a float range without step takes no exact value again)."""
    from bkd_sweep.space import param_values

    spec = loaded.study.search.params[ref]
    if isinstance(spec, CategoricalParam):
        takes, shown = param_values(spec), f"its values: {spec.values}"
    else:
        try:
            takes = param_values(spec)
        except ValueError:
            raise loaded.error(f"when: {ref} is a float range without step, which never "
                               "takes a listed value; use a list, an int range or a step",
                               field) from None
        shown = f"its range: {spec.low}..{spec.high}" + (f" step {spec.step}" if spec.step
                                                          else "")
    bad = [v for v in allowed if v not in takes]
    if bad:
        raise loaded.error(f"when: {ref} never takes {bad[0]!r}; {shown}", field)


def check_linked(loaded: LoadedStudy) -> None:
    study = loaded.study
    base = study.base_config()
    owner: dict[str, str] = {}  # path -> the linked group that sets it
    for group, bundles in study.search.linked.items():
        if not bundles:
            raise loaded.error("a linked group needs at least one labelled bundle",
                               f"search.linked.{group}")
        for label, overrides in bundles.items():
            field = f"search.linked.{group}.{label}"
            for path in overrides:
                if path in study.search.params:
                    raise loaded.error(f"{path} is both searched and linked", field)
                if path == "seed":  # each trial's seed is search.seeds' (it would be ignored)
                    raise loaded.error("seed: search seeds with search.seeds", field)
                if owner.setdefault(path, group) != group:  # one group's value would be lost
                    raise loaded.error(f"{path} is set by linked groups {owner[path]!r} and "
                                       f"{group!r}; set it in one group", field)
            try:
                apply_overrides(base, overrides)
            except StudyError as exc:
                raise loaded.error(f"{exc.field}: {exc.message}", field) from None


# what the report may show besides the result metrics (bkd_sweep.records.RESULT_METRICS)
REPORT_ALIASES = ("top1", "top5", "teacher_top1", "wall_seconds", "device_seconds")


def check_report(loaded: LoadedStudy) -> None:
    """The report section's tables and Pareto plot name known parameters and metrics."""
    from bkd_sweep.records import RESULT_METRICS  # records imports this package

    study = loaded.study
    paths = set(study.base_config().flat()) | set(study.linked_params())
    metrics = (*REPORT_ALIASES, *RESULT_METRICS)
    for i, spec in enumerate(study.report.tables):
        field = f"report.tables.{i}"
        for key in ("rows", "cols"):
            path = getattr(spec, key)
            if path is not None and path not in paths:
                close = difflib.get_close_matches(path, sorted(paths), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise loaded.error(f"unknown parameter path {path!r}{hint}", f"{field}.{key}")
        _check_report_metric(loaded, spec.metric, f"{field}.metric", metrics)
    if study.report.pareto is not None:
        for key in ("x", "y"):
            _check_report_metric(loaded, getattr(study.report.pareto, key),
                                 f"report.pareto.{key}", metrics)


def _check_report_metric(loaded: LoadedStudy, metric: str, field: str,
                         known: tuple[str, ...]) -> None:
    if metric not in known:
        close = difflib.get_close_matches(metric, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise loaded.error(f"unknown metric {metric!r}{hint}; known: {', '.join(known)}",
                           field)


def device_problems(loaded: LoadedStudy) -> list[StudyError]:
    """``train.device: cuda`` in a sweep whose trials ask for no GPU: Ray hides the GPUs from
    such a trial (engine/worker.py), so every trial would fail once the sweep has started."""
    study = loaded.study
    if study.resources.per_trial.gpu > 0:
        return []
    spec = study.search.params.get("train.device")
    places = ([("search.params.train.device", v) for v in spec.values]
              if isinstance(spec, CategoricalParam) else [("train.device", study.train.device)])
    places += [(f"search.linked.{group}.{label}", bundle.get("train.device"))
               for group, bundles in study.search.linked.items()
               for label, bundle in bundles.items()]
    return [loaded.error("device 'cuda' but resources.per_trial.gpu is 0: a trial given no "
                         "GPU sees none; set resources.per_trial.gpu (e.g. 1) or use device "
                         "auto", field) for field, device in places if device == "cuda"][:1]
