"""Checks that need the registries: every dataset, student and teacher a study names exists.

Kept apart from the config package so the schema itself imports no torch. `validate` and `plan` call
``check_references``; checks of the machine (paths, variables) belong to `run`/`train`.
"""

from __future__ import annotations

from pathlib import Path

from bkd_sweep.registry import UnknownNameError
from bkd_sweep.config import CategoricalParam, LoadedStudy, StudyError, TrialConfig

_REGISTRY_FIELDS = ("data.dataset", "student.arch", "teacher.arch")


def _known(field: str):
    if field == "data.dataset":
        from bkd_sweep.data import list_datasets
        return set(list_datasets()), "datasets"
    from bkd_sweep.models import list_students
    if field == "student.arch":
        return set(list_students()), "students"
    return None, "teachers"


def _check_teacher(name: str) -> bool:
    from bkd_sweep.models import list_students, list_teachers
    if name in list_teachers() or name in list_students():
        return True
    import timm
    return name in timm.list_models()


def check_references(loaded: LoadedStudy) -> None:
    """Raise StudyError (file:line: field: ...) for a name no registry knows."""
    study = loaded.study
    base = study.base_config().flat()
    for field in _REGISTRY_FIELDS:
        values = [(base[field], field)]
        spec = study.search.params.get(field)
        if isinstance(spec, CategoricalParam):
            values += [(v, f"search.params.{field}") for v in spec.values]
        for value, where in values:
            _check_name(loaded, field, value, where)
    _check_distill_needs_teacher(loaded)


def check_config_references(loaded: LoadedStudy, config: TrialConfig) -> None:
    """The same name checks for one resolved trial config (e.g. after --set overrides)."""
    flat = config.flat()
    for field in _REGISTRY_FIELDS:
        _check_name(loaded, field, flat[field], field)


def _check_name(loaded: LoadedStudy, field: str, value, where: str) -> None:
    known, kind = _known(field)
    ok = _check_teacher(value) if known is None else value in known
    if ok:
        return
    import difflib
    pool = sorted(known) if known is not None else _teacher_names()
    close = difflib.get_close_matches(str(value), pool, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listing = "" if known is None else f"; valid: {', '.join(pool)}"
    raise loaded.error(f"unknown {kind[:-1]} {value!r}{hint}{listing}", where)


def _teacher_names() -> list[str]:
    from bkd_sweep.models import list_teachers
    return sorted(list_teachers())


def _check_distill_needs_teacher(loaded: LoadedStudy) -> None:
    study = loaded.study
    modes = {study.distill.mode}
    spec = study.search.params.get("distill.mode")
    if isinstance(spec, CategoricalParam):
        modes = set(spec.values)
    if modes - {"none"} and study.teacher.checkpoint is None:
        raise loaded.error(
            f"required when distill.mode is {sorted(modes - {'none'})[0]!r}: a local weights "
            "file or 'train' (train once on the study's data)", "teacher.checkpoint")


def check_trial_runnable(loaded: LoadedStudy, config: TrialConfig) -> None:
    """What `train` needs: known names, variables set, checkpoint files present."""
    check_config_references(loaded, config)
    if loaded.unresolved:
        raise loaded.error(f"environment variable {loaded.unresolved[0]} is not set")
    ckpt = config.teacher.checkpoint
    if config.distill.mode != "none":
        if ckpt is None:
            raise loaded.error(f"required when distill.mode is {config.distill.mode!r}",
                               "teacher.checkpoint")
        if ckpt != "train" and not Path(ckpt).is_file():
            raise loaded.error(f"file not found: {ckpt}", "teacher.checkpoint")


def is_input_error(exc: BaseException) -> bool:
    """Errors that mean bad input (print one line, exit 2) rather than a bug."""
    from bkd_sweep.data import DataError

    return isinstance(exc, (DataError, UnknownNameError, StudyError))
