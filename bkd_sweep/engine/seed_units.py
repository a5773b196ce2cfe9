"""The seeds of one configuration are one unit.

What Optuna is told, what pruning compares and what "best" means are seed means, so the
sampler does not fit seed noise and "best" is not the luckiest seed:

- a completed seed is told the mean objective of its configuration's completed seeds so far
  (the last seed to finish carries the mean of all of them);
- at each epoch the pruner sees the mean over the configuration's seeds that reached it;
- the best configuration is the one whose mean is best (single objective).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from bkd_sweep.engine.objectives import objective_values, pruning_value
from bkd_sweep.records import EpochMetrics

if TYPE_CHECKING:
    from bkd_sweep.engine.book import SweepBook


def unit_key(trial: FrozenTrial) -> str:
    """Trials with the same params (any seed) are one configuration."""
    return json.dumps(trial.params, sort_keys=True, default=str)


class SeedUnits:
    def __init__(self, book: "SweepBook"):
        self.book = book

    def siblings(self, number: int) -> list[int]:
        """The other seeds' trial numbers of ``number``'s configuration."""
        trials = self.book.optuna.get_trials(deepcopy=False)
        key = unit_key(trials[number])
        return [t.number for t in trials if t.number != number and unit_key(t) == key]

    def told_values(self, number: int, values: list[float]) -> list[float]:
        """The seed mean of the objective values, over this trial and its completed siblings."""
        rows = [values]
        for other in self.siblings(number):
            found = self.book.files.read_result(other)
            if found is None or found[0].status != "completed":
                continue
            other_values, missing = objective_values(found[0], self.book.search)
            if not missing:
                rows.append(other_values)
        return [math.fsum(column) / len(rows) for column in zip(*rows)]

    def pruning_value(self, number: int, metrics: EpochMetrics) -> float:
        """The epoch's pruning value, averaged over the seeds that reached this epoch."""
        search = self.book.search
        values = [pruning_value(search, metrics)]
        for other in self.siblings(number):
            seen = self._epochs(other).get(metrics.epoch)
            if seen is not None:
                values.append(pruning_value(search, seen))
        return math.fsum(values) / len(values)

    def best(self) -> list[FrozenTrial]:
        """The completed seed that finished last in the configuration with the best mean
        (its told value is that mean)."""
        latest: dict[str, FrozenTrial] = {}
        for trial in self.book.optuna.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            key = unit_key(trial)
            if key not in latest or (trial.datetime_complete or 0) >= (
                    latest[key].datetime_complete or 0):
                latest[key] = trial
        if not latest:
            return []
        sign = 1 if self.book.search.objectives[0].mode == "max" else -1
        return [max(latest.values(), key=lambda t: (sign * t.value, -t.number))]

    def _epochs(self, number: int) -> dict[int, EpochMetrics]:
        if number in self.book.live:
            return self.book.live.get(number).epochs
        return self.book.files.read_epochs(number)
