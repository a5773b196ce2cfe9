"""The seeds of one configuration are one unit.

What Optuna is told, what pruning compares and what "best" means are seed means, so the
sampler does not fit seed noise and "best" is not the luckiest seed:

- a completed seed is told the mean objective of its configuration's completed seeds so far
  (the last seed to finish carries the mean of all of them);
- at each epoch the pruner sees the mean over the configuration's seeds that reached it;
- the best configuration is the one whose mean is best (single objective).

Recording must cost the same at trial 10,000 as at trial 10, and the pruning value is asked
for on every epoch report: so the configurations are an index (configuration key -> trial
numbers), brought up to date from what changed since the last look, read trial by trial
from the Optuna storage: trials created since (probed by number), the oldest enqueued ones
(Optuna hands enqueued trials out oldest first; their params are known once asked) and the
running ones (for completion). A trial's key is computed once; the study is listed whole only
the first time (a resumed sweep).
"""

from __future__ import annotations

import bisect
import json
import math
from collections import deque
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from bkd_sweep.engine.objectives import objective_values, pruning_value
from bkd_sweep.records import EpochMetrics

if TYPE_CHECKING:
    import optuna

    from bkd_sweep.engine.book import SweepBook


def unit_key(trial: FrozenTrial) -> str:
    """Trials with the same params (any seed) are one configuration."""
    return params_key(trial.params)


def params_key(params: dict) -> str:
    """A configuration's key from its Optuna params (or an enqueued trial's fixed params)."""
    return json.dumps(params, sort_keys=True, default=str)


def _completion_order(trial: FrozenTrial) -> tuple[float, int]:
    """Later-completed first when compared with max (ties: the higher number)."""
    done = trial.datetime_complete
    return (done.timestamp() if done is not None else 0.0, trial.number)


class _Index:
    """Configuration key -> trial numbers, and per key the seed that completed last."""

    def __init__(self, study: "optuna.Study | None", study_id: int | None) -> None:
        self.study, self.study_id = study, study_id
        self.seen = 0  # trials 0 .. seen-1 have been looked at
        self.members: dict[str, list[int]] = {}  # key -> trial numbers, ascending
        self.key_of: dict[int, str] = {}
        self.waiting: deque[int] = deque()  # enqueued, not asked yet (ascending)
        self.open: set[int] = set()  # indexed, not finished: watched for completion
        self.latest: dict[str, FrozenTrial] = {}  # key -> its last completed seed
        self.changed: set[str] = set()  # keys whose latest changed since best() last ran
        self.best: FrozenTrial | None = None
        self.keys_computed = 0  # trials whose key was computed (each once)
        self.trials_read = 0  # trials read from the storage (tests check both stay flat)

    def add(self, trial: FrozenTrial) -> None:
        key = unit_key(trial)
        self.keys_computed += 1
        self.key_of[trial.number] = key
        bisect.insort(self.members.setdefault(key, []), trial.number)
        self.open.add(trial.number)
        self.finish(trial)

    def finish(self, trial: FrozenTrial) -> None:
        """Take note of a watched trial that is finished (a completed one may be the latest
        seed of its configuration)."""
        if not trial.state.is_finished():
            return
        self.open.discard(trial.number)
        if trial.state != TrialState.COMPLETE:
            return
        key = self.key_of[trial.number]
        current = self.latest.get(key)
        if current is None or _completion_order(trial) >= _completion_order(current):
            self.latest[key] = trial
            self.changed.add(key)


class SeedUnits:
    def __init__(self, book: "SweepBook"):
        self.book = book
        self._index = _Index(None, None)
        self._finished_epochs: dict[int, dict[int, EpochMetrics]] = {}
        self._seeds: dict[int, int] = {}  # trial number -> its seed (never changes)

    # ---------------------------------------------------------------- the index

    def _refresh(self) -> _Index:
        """Bring the index up to date: new trials, trials asked since, trials finished since.
        Reads only those from the storage (the whole study once, on the first look)."""
        index = self._index
        if index.study is not self.book.optuna:  # first look, or a study started afresh
            study_id = self.book.storage.get_study_id_from_name(self.book.study.name)
            index = self._index = _Index(self.book.optuna, study_id)
            self._finished_epochs.clear()
            self._seeds.clear()
            first = self.book.optuna.get_trials(deepcopy=False)
            index.trials_read += len(first)
        else:
            first = None
        for trial in first if first is not None else self._new_trials(index):
            index.seen += 1
            if trial.state == TrialState.WAITING:
                index.waiting.append(trial.number)
            else:
                index.add(trial)
        while index.waiting:
            trial = self._read(index, index.waiting[0])
            if trial.state == TrialState.WAITING:
                break
            index.waiting.popleft()
            index.add(trial)
        for number in sorted(index.open):
            index.finish(self._read(index, number))
        return index

    def _new_trials(self, index: _Index):
        while True:
            try:
                yield self._read(index, index.seen)
            except KeyError:
                return

    def _read(self, index: _Index, number: int) -> FrozenTrial:
        storage = self.book.storage
        index.trials_read += 1
        trial_id = storage.get_trial_id_from_study_id_trial_number(index.study_id, number)
        return storage.get_trial(trial_id)

    @property
    def keys_computed(self) -> int:
        """How many trials' configuration keys were computed so far (each trial once)."""
        return self._index.keys_computed

    @property
    def trials_read(self) -> int:
        """How many trials were read from the Optuna storage so far."""
        return self._index.trials_read

    # ---------------------------------------------------------------- queries

    def siblings(self, number: int) -> list[int]:
        """The other seeds' trial numbers of ``number``'s configuration."""
        index = self._refresh()
        key = index.key_of.get(number)
        if key is None:  # not asked yet: no params, no configuration
            return []
        return [n for n in index.members[key] if n != number]

    def seed_of(self, number: int) -> int:
        if number not in self._seeds:
            self._seeds[number] = self.book.seed_of(number)
        return self._seeds[number]

    def other_seeds(self, number: int) -> dict[int, list[int]]:
        """The configuration's other seeds -> their trial numbers, latest first. A rerun of
        this trial's own seed (a retried failure, a configuration sampled twice) is not
        another seed: a mean counts each seed once."""
        own, out = self.seed_of(number), {}
        for other in reversed(self.siblings(number)):
            if (seed := self.seed_of(other)) != own:
                out.setdefault(seed, []).append(other)
        return out

    def claimed_seeds(self, number: int, params: dict, frozen: list[FrozenTrial]) -> set[int]:
        """The seeds a configuration already has, besides ``number``'s: its other asked
        trials' (the index) and its queued ones' (an enqueued trial's params are known only
        as its fixed params until it is asked)."""
        key = params_key(params)
        claimed = {self.seed_of(n) for n in self.siblings(number)}
        claimed.update(self.seed_of(t.number) for t in frozen
                       if t.state == TrialState.WAITING and t.number != number
                       and params_key(t.system_attrs.get("fixed_params", {})) == key)
        return claimed

    def told_values(self, number: int, values: list[float]) -> list[float]:
        """The seed mean of the objective values: this trial and, per other seed, its latest
        completed trial."""
        rows = [values]
        for numbers in self.other_seeds(number).values():
            for other in numbers:
                found = self.book.files.read_result(other)
                if found is None or found[0].status != "completed":
                    continue
                other_values, missing = objective_values(found[0], self.book.search)
                if not missing:
                    rows.append(other_values)
                    break
        return [math.fsum(column) / len(rows) for column in zip(*rows)]

    def pruning_value(self, number: int, metrics: EpochMetrics) -> float:
        """The epoch's pruning value, averaged over the seeds that reached this epoch (each
        seed once)."""
        search = self.book.search
        values = [pruning_value(search, metrics)]
        for numbers in self.other_seeds(number).values():
            seen = next((e for n in numbers if (e := self._epochs(n).get(metrics.epoch))
                         is not None), None)
            if seen is not None:
                values.append(pruning_value(search, seen))
        return math.fsum(values) / len(values)

    def best(self) -> list[FrozenTrial]:
        """The completed seed that finished last in the configuration with the best mean
        (its told value is that mean)."""
        index = self._refresh()
        if not index.latest:
            return []
        sign = 1 if self.book.search.objectives[0].mode == "max" else -1
        best = index.best
        if best is None or index.key_of[best.number] in index.changed:
            candidates = list(index.latest.values())  # the best's own mean moved: all again
        else:
            candidates = [best] + [index.latest[key] for key in index.changed]
        index.best = max(candidates, key=lambda t: (sign * t.value, -t.number))
        index.changed.clear()
        return [index.best]

    def pareto_front(self, modes: list[str]) -> list[FrozenTrial]:
        """Multi-objective: the configurations (each as its seed that completed last, told
        the seed means) that no other configuration dominates. Optuna's own front would take
        every completed seed, a first seed's lone value among them."""
        signs = [1.0 if mode == "max" else -1.0 for mode in modes]

        def signed(trial: FrozenTrial) -> tuple[float, ...]:
            return tuple(s * v for s, v in zip(signs, trial.values))

        def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
            return a != b and all(x >= y for x, y in zip(a, b))

        # best first: any dominator of a point comes before it, and a dominated point's
        # dominator is itself dominated by the front, so checking the front suffices
        front: list[FrozenTrial] = []
        for trial in sorted(self._refresh().latest.values(),
                            key=lambda t: tuple(-v for v in signed(t))):
            if not any(dominates(signed(f), signed(trial)) for f in front):
                front.append(trial)
        return sorted(front, key=lambda t: t.number)

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
