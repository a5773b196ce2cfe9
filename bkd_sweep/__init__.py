"""bkd-sweep: declarative sweeps for spiking networks with blurred knowledge distillation.

The public surface is small: ``load_study`` and the typed configs, ``run_trial`` (one
trial, no Ray needed), ``run_study`` (a sweep on Ray Tune) and ``load_results``. Heavy
modules load lazily so reading results never imports torch or Ray.
"""

from bkd_sweep.records import EpochMetrics, TrialResult
from bkd_sweep.config import Study, StudyError, TrialConfig, load_study

__version__ = "0.1.0"

_LAZY = {
    "run_trial": ("bkd_sweep.trial", "run_trial"),
    "run_study": ("bkd_sweep.engine", "run_study"),
    "load_results": ("bkd_sweep.results", "load"),
    "build_report": ("bkd_sweep.report", "build_report"),
}

__all__ = ["EpochMetrics", "Study", "StudyError", "TrialConfig", "TrialResult", "load_study",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'bkd_sweep' has no attribute {name!r}")
