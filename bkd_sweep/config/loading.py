"""Loading a study file: YAML with line numbers, interpolation, relative paths, validation."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from bkd_sweep.config.checks import (check_linked, check_report, check_search_values,
                                     validation_error_to_study_error)
from bkd_sweep.config.errors import StudyError
from bkd_sweep.config.study import Study
from bkd_sweep.config.yaml_tree import interpolate, node_tree, protect_variables
from bkd_sweep.settings import settings
from bkd_sweep.storage import Location, is_remote


class LoadedStudy(BaseModel):
    """A validated study plus where it came from (for errors and relative paths)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    study: Study
    path: Path
    raw: dict[str, Any]
    lines: dict[str, int | None]  # dotted path -> line in the file (None: given by --set)
    unresolved: list[str]  # ${VARS} that were unset (an error for `run`, not for `validate`)
    storage_flag: str | None = None  # `--storage` of run/submit/status/report: wins over the rest

    def line_of(self, dotted: str) -> int | None:
        parts = dotted.split(".")
        while parts:
            key = ".".join(parts)
            if key in self.lines:
                return self.lines[key]
            parts.pop()
        return None

    def error(self, message: str, field: str | None = None) -> StudyError:
        return StudyError(message, file=self.path, line=self.line_of(field) if field else None,
                          field=field)

    def storage_uri(self) -> str:
        """The storage root, absolute: --storage > BKD_STORAGE > the study's ``storage:`` >
        BKD_RESULTS_DIR > tracking.results_dir > ./results (the last three: the older names)."""
        env = settings()
        chosen = (self.storage_flag or env.storage or self.study.storage
                  or (str(env.results_dir) if env.results_dir else None)
                  or self.study.tracking.results_dir)
        if not chosen:
            return str((Path.cwd() / "results").resolve())
        if is_remote(chosen):
            return chosen.rstrip("/")
        return str(Path(chosen.removeprefix("file://")).expanduser().resolve())

    def storage_root(self) -> Location:
        return Location.of(self.storage_uri())

    def results_location(self) -> Location:
        """<storage root>/<name>: the journal, Parquet, trial records and checkpoints."""
        return self.storage_root().child(self.study.name)

    def results_dir(self) -> Path:
        """<storage root>/<name> as a local (or shared-filesystem) path."""
        location = self.results_location()
        if not location.is_local:
            raise self.error(f"storage {location.uri}: this command needs a filesystem path "
                             "(object-store roots are read by `results`, `report` and "
                             "`status`)", "storage")
        return location.local_path

    def with_storage(self, uri: str | None) -> "LoadedStudy":
        """This study with ``--storage`` applied (None: unchanged)."""
        return self if uri is None else self.model_copy(update={"storage_flag": uri})


_RELATIVE_PATH_FIELDS = (("data", "root"), ("teacher", "checkpoint"), ("tracking", "results_dir"))


def resolve_relative_paths(raw: dict[str, Any], study_dir: Path) -> dict[str, Any]:
    """A copy of a study tree with its relative paths made absolute against ``study_dir``."""
    tree = copy.deepcopy(raw)
    _resolve_relative(tree, study_dir)
    return tree


def _refuse_nul_paths(raw: dict[str, Any], path: Path, lines: dict[str, int | None]) -> None:
    """A NUL byte cannot be in a file name (the OS refuses it; pathlib raises ValueError)."""
    for dotted in ("storage", *(".".join(f) for f in _RELATIVE_PATH_FIELDS)):
        node: Any = raw
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and "\x00" in node:
            raise StudyError("a path cannot contain a NUL byte", file=path,
                             line=lines.get(dotted), field=dotted)


def _resolve_relative(raw: dict[str, Any], study_dir: Path) -> None:
    storage = raw.get("storage")
    if isinstance(storage, str):
        raw["storage"] = _absolute(storage, study_dir)
    tracking = raw.get("tracking")
    if isinstance(tracking, dict) and isinstance(tracking.get("mlflow_uri"), str):
        tracking["mlflow_uri"] = absolute_tracking_uri(tracking["mlflow_uri"], study_dir)
    fields = {".".join(field) for field in _RELATIVE_PATH_FIELDS}
    for section, key in _RELATIVE_PATH_FIELDS:
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = _absolute(node[key], study_dir)
    # the same fields where a search gives them: a list of values, or a linked bundle's
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    params = search.get("params") if isinstance(search.get("params"), dict) else {}
    for dotted, spec in params.items():
        if dotted in fields:  # [a.pt, b.pt] or {values: [a.pt, b.pt], ...}
            params[dotted] = _absolute_values(spec, study_dir)
        when = spec.get("when") if isinstance(spec, dict) else None
        for path in (fields & set(when) if isinstance(when, dict) else ()):
            when[path] = _absolute_values(when[path], study_dir)  # compared with the values
    groups = search.get("linked") if isinstance(search.get("linked"), dict) else {}
    for bundles in groups.values():
        for bundle in (bundles.values() if isinstance(bundles, dict) else ()):
            for dotted in (fields & set(bundle) if isinstance(bundle, dict) else ()):
                if isinstance(bundle[dotted], str):
                    bundle[dotted] = _absolute(bundle[dotted], study_dir)


def absolute_tracking_uri(uri: str, base: Path) -> str:
    """An MLflow URI whose local database or folder is given relative (``sqlite:///mlflow.db``,
    ``mlruns``) made absolute against ``base``: it would otherwise follow the current
    directory, a temporary one under Ray Jobs. Servers and absolute paths pass unchanged."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(base / uri.removeprefix('sqlite:///')).resolve()}"
    # a path is MLflow's file store; a bare word may name a scheme (databricks)
    if ":" not in uri and (uri.startswith((".", "~")) or "/" in uri):
        return str((base / Path(uri).expanduser()).resolve())
    return uri


def _absolute_values(spec: Any, study_dir: Path) -> Any:
    """A searched path's values (a list, ``{values: [...]}`` or one value) made absolute."""
    if isinstance(spec, list):
        return [_absolute(v, study_dir) if isinstance(v, str) else v for v in spec]
    if isinstance(spec, dict) and isinstance(spec.get("values"), list):
        return {**spec, "values": _absolute_values(spec["values"], study_dir)}
    return _absolute(spec, study_dir) if isinstance(spec, str) else spec


def _absolute(value: str, study_dir: Path) -> str:
    """A relative path made absolute against the study's folder; URIs (``s3://``), the
    ``train`` keyword and values still holding ``${VARS}`` are left as they are."""
    if value in ("", "train") or "${" in value or is_remote(value) or "://" in value:
        return value
    path = Path(value).expanduser()
    return value if path.is_absolute() else str((study_dir / path).resolve())


def load_study(path: str | os.PathLike, overrides: dict[str, Any] | None = None
               ) -> LoadedStudy:
    """Read, interpolate and validate a study file. Raises StudyError (one line) on any fault.

    ``overrides`` (``--set train.epochs=2``) replace values of the file before validation, as
    if they had been written in it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"cannot read: {exc.__class__.__name__}", file=path) from None
    return load_study_text(text, path, overrides)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, path: Path) -> None:
    node = raw
    keys = _set_keys(raw, dotted.split("."))
    for part in keys[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise StudyError(f"--set {dotted}: {part} is not a section", file=path, field=dotted)
        node = child
    node[keys[-1]] = value


def _set_keys(raw: dict[str, Any], parts: list[str]) -> list[str]:
    """The keys a --set path names. Under search.params and in a search.linked bundle the keys
    are parameter paths, dotted themselves (``search.params.distill.mode``): the longest key
    already there that the rest starts with, else the whole rest (a new parameter)."""
    keys: list[str] = []
    node: Any = raw
    i = 0
    while i < len(parts):
        rest, step = parts[i:], 1
        if keys == ["search", "params"] or (len(keys) == 4 and keys[:2] == ["search", "linked"]):
            there = [j for j in range(len(rest), 0, -1)
                     if isinstance(node, dict) and ".".join(rest[:j]) in node]
            step = there[0] if there else len(rest)
        keys.append(".".join(rest[:step]))
        node = node.get(keys[-1]) if isinstance(node, dict) else None
        i += step
    return keys


def _parse(text: str, path: Path) -> tuple[dict[str, Any], dict[str, int | None], dict]:
    """Safe YAML to (tree, dotted path -> line, the ${VAR} tokens to interpolate)."""
    lines_by_tuple: dict[tuple, int] = {}
    text, variables = protect_variables(text)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        if node is None:
            raise StudyError("empty study file", file=path)
        raw = node_tree(node, (), lines_by_tuple, set(), [0])
    except StudyError as exc:
        raise StudyError(exc.message, file=path, line=exc.line, field=exc.field) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyError(f"invalid YAML: {problem}", file=path, line=line) from None
    except RecursionError:
        raise StudyError("YAML nested too deeply", file=path) from None
    if not isinstance(raw, dict):
        raise StudyError("a study must be a mapping of sections (name, data, student, ...)",
                         file=path, line=1)
    lines = {".".join(str(p) for p in k): v for k, v in lines_by_tuple.items() if k}
    return raw, lines, variables


def _blame_set(exc: StudyError, overrides: dict[str, Any]) -> StudyError:
    """A fault in a value ``--set`` gave says so: the file's line holds another value."""
    field = exc.field or ""
    for dotted in overrides:
        if field and (field == dotted or f"{field}.".startswith(f"{dotted}.")
                      or dotted.startswith(f"{field}.")):
            return StudyError(f"{exc.message} (given by --set {dotted})", file=exc.file,
                              line=exc.line, field=exc.field)
    return exc


def load_study_text(text: str, path: str | os.PathLike = "<study>",
                    overrides: dict[str, Any] | None = None) -> LoadedStudy:
    path = Path(path)
    raw, lines, variables = _parse(text, path)
    unresolved: set[str] = set()
    raw = interpolate(raw, variables, unresolved)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, path)
        # the value is the command line's: no line of the file holds it
        lines.update({k: None for k in lines if k == dotted or k.startswith(f"{dotted}.")})
        lines[dotted] = None
    try:
        return _validated(raw, path, lines, sorted(unresolved))
    except StudyError as exc:
        raise _blame_set(exc, overrides or {}) from None


def _validated(raw: dict[str, Any], path: Path, lines: dict[str, int | None],
               unresolved: list[str]) -> LoadedStudy:
    _refuse_nul_paths(raw, path, lines)
    resolved = copy.deepcopy(raw)
    _resolve_relative(resolved, path.parent.resolve() if path.name != "<study>" else Path.cwd())
    try:
        study = Study.model_validate(resolved)
    except ValidationError as err:
        raise validation_error_to_study_error(err, path, lines) from None
    loaded = LoadedStudy(study=study, path=path, raw=raw, lines=lines, unresolved=unresolved)
    check_search_values(loaded)
    check_linked(loaded)
    check_report(loaded)
    return loaded


def study_json_schema() -> dict[str, Any]:
    """JSON Schema of a study file, for editor completion."""
    schema = Study.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bkd-sweep study"
    return schema
