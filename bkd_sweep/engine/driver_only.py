"""What Tune must not write out: it pickles the Tuner's searcher, scheduler, callbacks and
stopper into ``tuner.pkl`` in the results folder (for a ``Tuner.restore`` this engine never
does: a resumed sweep starts a new Tune session from the Optuna journal). Ours hold the study,
its SweepBook and the tracker, where a data root or a tracking URI may carry a credential, and
a heartbeat thread; they live only in the driver process, so nothing of them is pickled."""

from __future__ import annotations


class DriverOnly:
    """Pickles as an empty object (see the module's docstring)."""

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
