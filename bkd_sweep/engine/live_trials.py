"""The trials one driver session runs: Ray Tune's trial id <-> the Optuna trial number, and per
number the spec handed to the worker, the live ``optuna.Trial`` and the epochs seen so far.

Only the driver holds this (in memory); after a restart the book rebuilds it from the journal
and the per-trial files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna

from bkd_sweep.config import TrialConfig
from bkd_sweep.records import EpochMetrics, trial_id_of


@dataclass(frozen=True)
class TrialSpec:
    """One trial as the engine hands it to a worker."""

    number: int
    params: dict[str, Any]  # searched params (dotted paths, linked.<group> labels)
    seed: int
    config: TrialConfig
    rerun: bool = False  # an interrupted trial run again from its checkpoint

    @property
    def trial_id(self) -> str:
        return trial_id_of(self.number)

    def ray_config(self) -> dict[str, Any]:
        """What travels to the worker (plain JSON, kept by Tune in its experiment state): the
        params and seed, from which the worker builds the config (the study travels with the
        trainable, never written out: a data root may hold a credential)."""
        return {"trial_id": self.trial_id, "number": self.number, "params": self.params,
                "seed": self.seed}


@dataclass
class LiveTrial:
    spec: TrialSpec
    trial: optuna.Trial
    epochs: dict[int, EpochMetrics] = field(default_factory=dict)

    def history(self) -> list[EpochMetrics]:
        """The epochs seen, in order."""
        return [m for _, m in sorted(self.epochs.items())]


class LiveTrials:
    """Ray trial ids and live Optuna trials of this session, by Optuna trial number."""

    def __init__(self) -> None:
        self._by_number: dict[int, LiveTrial] = {}
        self._numbers: dict[str, int] = {}  # Ray trial id -> Optuna number

    def add(self, spec: TrialSpec, trial: optuna.Trial,
            epochs: dict[int, EpochMetrics] | None = None) -> None:
        self._by_number[spec.number] = LiveTrial(spec, trial, dict(epochs or {}))

    def __contains__(self, number: object) -> bool:
        return number in self._by_number

    def numbers(self) -> list[int]:
        return list(self._by_number)

    def get(self, number: int) -> LiveTrial:
        return self._by_number[number]

    def bind(self, ray_trial_id: str, number: int) -> None:
        """Remember that Ray's trial ``ray_trial_id`` runs Optuna trial ``number``."""
        self._numbers[ray_trial_id] = number

    def number_for(self, ray_trial_id: str) -> int | None:
        return self._numbers.get(ray_trial_id)

    def spec(self, number: int) -> TrialSpec:
        return self._by_number[number].spec
