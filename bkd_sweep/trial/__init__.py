"""The trial stage: one (student, teacher, distillation) configuration trained end to end.

``run_trial(config, report)`` runs without Ray (tests, ``bkd-sweep train``) and under Ray
(the engine passes a ``report`` that forwards to ``ray.tune.report``). It reports once per
epoch after writing that epoch's checkpoint, so a killed trial continues where it was.
Named parts: ``state`` (build, resume, checkpoint), ``step`` (train_step, train_epoch),
``evaluate``, ``run`` (run_trial and the result), ``teacher`` (prepare and cache the teacher),
``optim`` (optimizer and schedule), ``environment`` (device, DDP group, seeds).
"""

import importlib
from typing import Any

# name -> module: imported on first use, so the driver can import a light part (e.g.
# ``bkd_sweep.trial.teacher_cache``) without torch models and timm (~2 s per process)
_EXPORTS = {
    "evaluate": "evaluate", "DistillationModel": "model", "ReportFn": "run",
    "run_trial": "run", "CHECKPOINT_FILE": "state", "TrialState": "state",
    "build_state": "state", "load_checkpoint": "state", "NonFiniteLoss": "step",
    "StepLosses": "step", "train_epoch": "step", "train_step": "step",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
