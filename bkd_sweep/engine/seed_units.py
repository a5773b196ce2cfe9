"""The seeds of one configuration are one unit.

What Optuna is told, what pruning compares and what "best" means are seed means, so the
sampler does not fit seed noise and "best" is not the luckiest seed:

- a completed seed is told the mean objective of its configuration's completed seeds so far
  (the last seed to finish carries the mean of all of them);
- at each epoch the pruner sees the mean over the configuration's seeds that reached it;
- the best configuration is the one whose mean is best (single objective).

Recording must cost the same at trial 10,000 as at trial 10, and the pruning value is asked
for on every epoch report: so the configurations are an index (configuration key -> trial
numbers), brought up to date from what changed since the last look. A trial's key is computed
once, when its params are known (enqueued trials get theirs when asked); only trials not yet
indexed or still running are looked at again.
"""

from __future__ import annotations

import bisect
import json
import math
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from bkd_sweep.engine.objectives import objective_values, pruning_value
from bkd_sweep.records import EpochMetrics

if TYPE_CHECKING:
    import optuna

    from bkd_sweep.engine.book import SweepBook


def unit_key(trial: FrozenTrial) -> str:
    """Trials with the same params (any seed) are one configuration."""
    return json.dumps(trial.params, sort_keys=True, default=str)


def _completion_order(trial: FrozenTrial) -> tuple[float, int]:
    """Later-completed first when compared with max (ties: the higher number)."""
    done = trial.datetime_complete
    return (done.timestamp() if done is not None else 0.0, trial.number)


class _Index:
    """Configuration key -> trial numbers, and per key the seed that completed last."""

    def __init__(self, study: "optuna.Study | None") -> None:
        self.study = study
        self.seen = 0  # trials 0 .. seen-1 have been looked at
        self.members: dict[str, list[int]] = {}  # key -> trial numbers, ascending
        self.key_of: dict[int, str] = {}
        self.waiting: set[int] = set()  # params not known yet (enqueued, not asked)
        self.open: set[int] = set()  # indexed, not finished: watched for completion
        self.latest: dict[str, FrozenTrial] = {}  # key -> its last completed seed
        self.keys_computed = 0  # trials whose key was computed (tests check it stays flat)

    def add(self, trial: FrozenTrial) -> None:
        key = unit_key(trial)
        self.keys_computed += 1
        self.key_of[trial.number] = key
        bisect.insort(self.members.setdefault(key, []), trial.number)
        self.open.add(trial.number)

    def complete(self, trial: FrozenTrial) -> None:
        key = self.key_of[trial.number]
        current = self.latest.get(key)
        if current is None or _completion_order(trial) >= _completion_order(current):
            self.latest[key] = trial


class SeedUnits:
    def __init__(self, book: "SweepBook"):
        self.book = book
        self._index = _Index(None)
        self._finished_epochs: dict[int, dict[int, EpochMetrics]] = {}

    # ---------------------------------------------------------------- the index

    def _refresh(self) -> _Index:
        """Bring the index up to date: new trials, trials asked since, trials finished since.
        Touches only those (plus one listing of the study's trials, without copies)."""
        trials = self.book.optuna.get_trials(deepcopy=False)
        index = self._index
        if index.study is not self.book.optuna or len(trials) < index.seen:
            index = self._index = _Index(self.book.optuna)  # a study started afresh
            self._finished_epochs.clear()
        index.waiting.update(range(index.seen, len(trials)))
        index.seen = len(trials)
        for number in sorted(n for n in index.waiting if trials[n].state != TrialState.WAITING):
            index.waiting.discard(number)
            index.add(trials[number])
        for number in sorted(n for n in index.open if trials[n].state.is_finished()):
            index.open.discard(number)
            if trials[number].state == TrialState.COMPLETE:
                index.complete(trials[number])
        return index

    @property
    def keys_computed(self) -> int:
        """How many trials' configuration keys were computed so far (each trial once)."""
        return self._index.keys_computed

    # ---------------------------------------------------------------- queries

    def siblings(self, number: int) -> list[int]:
        """The other seeds' trial numbers of ``number``'s configuration."""
        index = self._refresh()
        key = index.key_of.get(number)
        if key is None:  # not asked yet: no params, no configuration
            return []
        return [n for n in index.members[key] if n != number]

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
        latest = self._refresh().latest
        if not latest:
            return []
        sign = 1 if self.book.search.objectives[0].mode == "max" else -1
        return [max(latest.values(), key=lambda t: (sign * t.value, -t.number))]

    def _epochs(self, number: int) -> dict[int, EpochMetrics]:
        """A sibling's epochs: this session's live ones, else its epoch log (read once for
        a finished trial, whose log no longer changes)."""
        if number in self.book.live:
            return self.book.live.get(number).epochs
        cached = self._finished_epochs.get(number)
        if cached is not None:
            return cached
        epochs = self.book.files.read_epochs(number)
        if number in self._index.key_of and number not in self._index.open:
            self._finished_epochs[number] = epochs
        return epochs
