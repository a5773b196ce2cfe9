"""The driver's ledger of a sweep: it decides, in one place, what happens to each trial.

Everything that decides a trial's fate goes through one ``SweepBook`` in the driver process:
asking Optuna for the next trial (or handing back an interrupted one), the epochs seen, and
the final word (COMPLETE / PRUNED / FAIL). The outcome is written to the trial's
``result.json`` *before* Optuna is told, so a driver killed at any point can finish the
bookkeeping on ``--resume`` without running the trial again (see runner.py).
The book only coordinates its parts: the Optuna study (journal.py), the per-trial files
(trial_files.py), the objective values (objectives.py) and this session's live trials with
their Ray ids (live_trials.py). It uses Optuna's public API only. No Ray here: the searcher,
scheduler and callbacks are thin adapters over this class.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bkd_sweep import space
from bkd_sweep.config import Study, StudyError
from bkd_sweep.engine.budget import STARTED_AT_ATTR, SweepBudget
from bkd_sweep.engine.journal import (STUDY_HASH_ATTR, WORLD_SIZE_ATTR, world_size_change,
                                      journal_storage, open_study,
                                      study_fingerprint)
from bkd_sweep.engine.live_trials import LiveTrials, TrialSpec
from bkd_sweep.engine.objectives import objective_values
from bkd_sweep.engine.plan import grid_run_order
from bkd_sweep.engine.seed_units import SeedUnits
from bkd_sweep.engine.trial_files import TrialFiles
from bkd_sweep.storage import Location
from bkd_sweep.records import EpochMetrics, TrialRecord, TrialResult, TrialStatus, trial_id_of

log = logging.getLogger(__name__)

SEED_ATTR = "seed"
_INVALID = object()  # _start: the schema rejected the combination; take the next one
PROMOTE_ATTR = "promote_seeds"  # a sampled configuration's other seeds wait for its first
PRUNED_EPOCH_ATTR = "pruned_epoch"
RETRY_OF_ATTR = "retry_of"  # `--retry-failed`: the failed trial this one runs again
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_STATE_NAMES = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned",
                TrialState.FAIL: "failed", TrialState.RUNNING: "running",
                TrialState.WAITING: "waiting"}


class SweepBook:
    """The Optuna study of one sweep plus the files that make finishing a trial atomic."""

    def __init__(self, study: Study, results_dir: Path, *, storage: Any = None,
                 device: str = "cpu", devices_per_trial: float = 1.0):
        self.study = study
        self.search = study.search
        self.location = Location.of(results_dir)  # a local/shared path or an object store
        self.results_dir = (self.location.local_path if self.location.is_local
                            else self.location.uri)
        self.planned = space.count_trials(self.search)  # the study's trials
        self.device = device
        self.devices_per_trial = devices_per_trial
        self.multi_objective = len(self.search.objectives) > 1
        self.storage = (optuna.storages.get_storage(storage) if storage is not None
                        else journal_storage(self.location, repair=True))  # the driver
        self.optuna = open_study(study, self.storage)
        self.files = TrialFiles(self.location)
        self.live = LiveTrials()
        self.units = SeedUnits(self)  # seeds of one configuration are one unit
        self._reruns: list[int] = []
        self._check_fingerprint()
        started_at = self.optuna.user_attrs.get(STARTED_AT_ATTR) or time.time()
        self.budget = SweepBudget(study, float(started_at), devices_per_trial)

    def _check_fingerprint(self) -> None:
        """A new sweep stores the study's fingerprint; an old one must match it."""
        fingerprint = study_fingerprint(self.study)
        stored = self.optuna.user_attrs.get(STUDY_HASH_ATTR)
        if not any(t.state != TrialState.WAITING for t in self._frozen()):
            # nothing ran yet (a start that failed early): start afresh, queue included
            if self._frozen():
                optuna.delete_study(study_name=self.study.name, storage=self.storage)
                self.optuna = open_study(self.study, self.storage)
            self.optuna.set_user_attr(STUDY_HASH_ATTR, fingerprint)
            self.optuna.set_user_attr(WORLD_SIZE_ATTR, self.study.resources.per_trial.workers)
            self.optuna.set_user_attr(STARTED_AT_ATTR, time.time())
            return
        changed = world_size_change(self.study, self.optuna.user_attrs.get(WORLD_SIZE_ATTR))
        if changed:
            raise StudyError(changed, field="resources.per_trial.workers")
        if stored != fingerprint:
            raise StudyError(f"{self.results_dir} holds a sweep of a different version of "
                             f"study {self.study.name!r} (search or base config changed); "
                             "restore the study file or use a new results directory")

    # ---------------------------------------------------------------- opening

    def _frozen(self) -> list[FrozenTrial]:
        return self.optuna.get_trials(deepcopy=False)

    def _trial(self, number: int) -> FrozenTrial:
        """One trial by number, without listing the study (per epoch report: O(1))."""
        storage = self.optuna._storage  # the study's own (cached) storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.optuna._study_id,
                                                                   number)
        return storage.get_trial(trial_id)

    def is_empty(self) -> bool:
        return not self._frozen()

    def open(self) -> None:
        """Prepare a session: a new sweep enqueues its grid (in ``grid_run_order``); an old
        one queues its interrupted (RUNNING) trials to run again under their own numbers."""
        trials = self._frozen()
        if not trials and self.search.sampler == "grid":
            for params, seed in grid_run_order(self.study, space.grid_trials(self.search)):
                self.optuna.enqueue_trial(space.to_optuna_params(params, self.search),
                                          user_attrs={SEED_ATTR: seed})
        self._reruns = sorted(t.number for t in trials if t.state == TrialState.RUNNING
                              and t.number not in self.live)
        for t in trials:  # a driver stopped between telling a first seed and promoting it
            if (t.state == TrialState.COMPLETE and t.user_attrs.get(PROMOTE_ATTR)
                    and not self.units.other_seeds(t.number)):
                self._promote(t.number)
        if self.budget.active:  # what earlier sessions spent (read once per session)
            for number in self.finished_numbers():
                found = self.files.read_result(number)
                if found is not None:
                    self.budget.tally.add_finished(number, found[0].device_seconds,
                                                   found[0].wall_seconds)

    @property
    def total(self) -> int:
        """Trials to hand out: the study's, plus the reruns of failed ones."""
        return self.planned + sum(RETRY_OF_ATTR in t.user_attrs for t in self._frozen())

    def retry_failed(self) -> list[int]:
        """Queue every failed trial not yet retried again, same params and seed (a new
        Optuna trial: a finished one cannot be reopened). Returns the failed numbers."""
        frozen = self._frozen()
        retried = {t.user_attrs.get(RETRY_OF_ATTR) for t in frozen}
        failed = [t for t in frozen if t.state == TrialState.FAIL and t.number not in retried]
        for trial in failed:
            promote = {PROMOTE_ATTR: True} if trial.user_attrs.get(PROMOTE_ATTR) else {}
            self.optuna.enqueue_trial(dict(trial.params), user_attrs={  # a first seed's rerun
                SEED_ATTR: int(trial.user_attrs.get(SEED_ATTR, self.search.seeds[0])),
                RETRY_OF_ATTR: trial.number, **promote})  # still promotes its configuration
        return [t.number for t in failed]

    def remaining(self) -> int:
        """Trials still to run this session (interrupted ones included)."""
        started = sum(1 for t in self._frozen() if t.state != TrialState.WAITING)
        return len(self._reruns) + max(0, self.total - started)

    # ---------------------------------------------------------------- asking

    def next_trial(self) -> TrialSpec | None:
        """The next trial to run, or None when the sweep has handed out all of them. A
        combination the schema rejects fails at once and the next one is taken (a loop: a
        grid may hold hundreds of them)."""
        while (spec := self._next_trial()) is _INVALID:
            pass
        return spec  # type: ignore[return-value]

    def _next_trial(self) -> TrialSpec | object | None:
        if self._reruns:
            number = self._reruns.pop(0)
            params, seed = self._params_and_seed(self._trial(number))
            return self._start(number, self._trial_of(number), params, seed, rerun=True)
        frozen = self._frozen()
        if sum(1 for t in frozen if t.state != TrialState.WAITING) >= self.total:
            return None
        if self.budget.stop_reason():
            return None  # the budget is spent: no new trial (the summary says why)
        trial = self.optuna.ask()
        params = space.suggest(trial, self.search)
        seed = trial.user_attrs.get(SEED_ATTR)
        if seed is None:
            claimed = self.units.claimed_seeds(trial.number, trial.params, frozen)
            if claimed:  # drawn again: its next seed, not a second run of a seed it has
                free = [s for s in self.search.seeds if s not in claimed]
                seed = free[0] if free else self.search.seeds[0]
                trial.set_user_attr(SEED_ATTR, seed)
            else:  # sampled (not enqueued): first seed now, the others after it
                seed = self.search.seeds[0]
                trial.set_user_attr(SEED_ATTR, seed)
                if self.search.pruner.name == "none" or len(self.search.seeds) == 1:
                    self._enqueue_seeds(params, self.search.seeds[1:], created=len(frozen) + 1)
                else:  # seed promotion: only a configuration its first seed survives gets more
                    trial.set_user_attr(PROMOTE_ATTR, True)
        return self._start(trial.number, trial, params, int(seed), rerun=False)

    def _enqueue_seeds(self, params: dict[str, Any], seeds: list[int], created: int) -> None:
        """Queue a sampled configuration under these seeds, within the study's trial count."""
        for other in seeds:
            if created >= self.total:
                break
            self.optuna.enqueue_trial(space.to_optuna_params(params, self.search),
                                      user_attrs={SEED_ATTR: other})
            created += 1

    def _start(self, number: int, trial: optuna.Trial, params: dict[str, Any], seed: int,
               *, rerun: bool) -> TrialSpec | object:
        try:
            config = self.study.trial_config(params, seed)
        except StudyError as exc:  # a combination the schema rejects: the trial fails
            self.live.add(TrialSpec(number, params, seed, self.study.base_config(), rerun), trial)
            self.fail(number, f"invalid configuration: {exc.one_line()}")
            return _INVALID
        spec = TrialSpec(number, params, seed, config, rerun)
        self.live.add(spec, trial, self.files.read_epochs(number))
        self.budget.trial_started(number)
        return spec

    def seed_of(self, number: int) -> int:
        if number in self.live:
            return self.live.spec(number).seed
        return int(self._trial(number).user_attrs.get(SEED_ATTR, self.search.seeds[0]))

    def _params_and_seed(self, frozen: FrozenTrial) -> tuple[dict[str, Any], int]:
        params = space.from_optuna_params(frozen.params, self.search)
        return params, int(frozen.user_attrs.get(SEED_ATTR, self.search.seeds[0]))

    def _trial_of(self, number: int) -> optuna.Trial:
        """A live ``optuna.Trial`` for an existing trial number (a rerun or a late tell)."""
        study_id = self.storage.get_study_id_from_name(self.study.name)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
        return optuna.Trial(self.optuna, trial_id)

    def _spec_from_optuna(self, number: int) -> TrialSpec:
        params, seed = self._params_and_seed(self._trial(number))
        try:
            config = self.study.trial_config(params, seed)
        except StudyError:
            config = self.study.base_config()
        return TrialSpec(number, params, seed, config)

    # ---------------------------------------------------------------- epochs

    def observe_epoch(self, number: int, metrics: EpochMetrics) -> None:
        """Remember an epoch (memory + the epoch log, so a resumed driver still has it)."""
        self.live.get(number).epochs[metrics.epoch] = metrics
        self.files.append_epoch(number, metrics)

    # ---------------------------------------------------------------- finishing

    def state(self, number: int) -> TrialState:
        return self._trial(number).state

    def is_finished(self, number: int) -> bool:
        return self.state(number) in FINISHED

    def complete(self, number: int, result: TrialResult) -> TrialState:
        """A worker's final TrialResult: COMPLETE with the objective values (in objective
        order), or FAIL for a failed result or a missing objective value."""
        if result.status == "failed":
            return self._finish(number, result, TrialState.FAIL)
        if result.status == "pruned":
            return self._finish(number, result, TrialState.PRUNED)
        values, missing = objective_values(result, self.search)
        if missing:  # failed everywhere (Optuna, Parquet, MLflow, --retry-failed), not only
            reason = f"no finite value for objective {', '.join(missing)}"  # in Optuna
            log.warning("%s: %s; recorded as failed", trial_id_of(number), reason)
            failed = result.model_copy(update={"status": "failed", "reason": reason})
            return self._finish(number, failed, TrialState.FAIL)
        state = self._finish(number, result, TrialState.COMPLETE,
                             self.units.told_values(number, values))
        self._promote(number)
        return state

    def _promote(self, number: int) -> None:
        """The first seed of a sampled configuration completed (it survived every pruning
        rung): queue the configuration's other seeds now, within the budget."""
        frozen = self._frozen()
        if not frozen[number].user_attrs.get(PROMOTE_ATTR):
            return  # not a promoted first seed
        claimed = self.units.claimed_seeds(number, frozen[number].params, frozen)
        claimed.add(self.units.seed_of(number))
        missing = [s for s in self.search.seeds if s not in claimed]  # none: already queued
        params, _ = self._params_and_seed(frozen[number])
        self._enqueue_seeds(params, missing, created=len(frozen))

    def prune(self, number: int, epoch: int, reason: str) -> TrialResult:
        """Record a scheduler-stopped trial: a pruned TrialResult from the epochs seen."""
        result = self._result_from_history(number, "pruned", reason)
        self._finish(number, result, TrialState.PRUNED, pruned_epoch=epoch)
        return result

    def fail(self, number: int, reason: str | None) -> TrialResult:
        """Record a trial that raised (after its retries). Calling again with a better reason
        rewrites result.json; Optuna keeps its first FAIL."""
        previous = self.files.read_result(number)
        if previous is not None and previous[0].status != "failed":
            return previous[0]
        result = self._result_from_history(number, "failed", reason or "failed (see Ray logs)")
        self._finish(number, result, TrialState.FAIL)
        return result

    def _finish(self, number: int, result: TrialResult, state: TrialState,
                values: list[float] | None = None, pruned_epoch: int | None = None
                ) -> TrialState:
        """Write result.json, then tell Optuna (the order that makes resume exact)."""
        current = self.state(number)
        if current in FINISHED:
            if state == TrialState.FAIL and current == TrialState.FAIL:
                self._write_result(number, result, pruned_epoch)  # a better reason
            return current
        self._write_result(number, result, pruned_epoch)
        self.budget.trial_finished(number, result.device_seconds, result.wall_seconds)
        trial = self.live.get(number).trial if number in self.live else self._trial_of(number)
        if pruned_epoch is not None:
            trial.set_user_attr(PRUNED_EPOCH_ATTR, pruned_epoch)
        self.optuna.tell(trial, values, state=state, skip_if_finished=True)
        return state

    def _write_result(self, number: int, result: TrialResult, pruned_epoch: int | None) -> None:
        """result.json with the trial's params and seed (what `results --rebuild` needs), its
        config and reason without credentials: Parquet and MLflow take the result from it."""
        result = result.without_credentials()
        spec = self.live.spec(number) if number in self.live else self._spec_from_optuna(number)
        self.files.write_result(number, result, pruned_epoch, params=spec.params, seed=spec.seed)

    def _result_from_history(self, number: int, status: TrialStatus, reason: str
                             ) -> TrialResult:
        """The result the epochs seen imply (wall time: the sum of the epochs')."""
        if number in self.live:
            live = self.live.get(number)
            spec, history = live.spec, live.history()
        else:
            spec, history = self._spec_from_optuna(number), []
        return TrialResult.from_history(
            status, history, reason=reason, config=spec.config.model_dump(mode="json"),
            config_hash=spec.config.config_hash(),
            wall_seconds=sum(m.wall_seconds for m in history),
            devices=self.devices_per_trial, device=self.device)

    # ---------------------------------------------------------------- records

    def record(self, number: int) -> TrialRecord | None:
        """The finished trial's record for tracking (None while it is not finished)."""
        if not self.is_finished(number):
            return None
        spec = self.live.spec(number) if number in self.live else self._spec_from_optuna(number)
        found = self.files.read_result(number)
        if found is None:  # finished in Optuna but its file is gone: say so, do not invent
            result = self._result_from_history(number, "failed",
                                               "outcome lost (driver stopped while recording)")
            if self.state(number) == TrialState.PRUNED:
                result = result.model_copy(update={"status": "pruned",
                                                   "reason": "pruned (details lost)"})
            found = result, self._trial(number).user_attrs.get(PRUNED_EPOCH_ATTR)
        result, pruned_epoch = found
        return TrialRecord(trial_id=spec.trial_id, trial_number=number, params=spec.params,
                           seed=spec.seed, result=result, pruned_epoch=pruned_epoch)

    def settle_interrupted(self) -> list[int]:
        """RUNNING trials whose result.json exists (the driver died between writing it and
        telling Optuna): tell Optuna now. Returns their numbers."""
        settled = []
        for frozen in self._frozen():
            if frozen.state != TrialState.RUNNING:
                continue
            found = self.files.read_result(frozen.number)
            if found is None:
                continue
            result, pruned_epoch = found
            self.live.add(self._spec_from_optuna(frozen.number), self._trial_of(frozen.number))
            if result.status == "pruned":
                self._finish(frozen.number, result, TrialState.PRUNED, pruned_epoch=pruned_epoch)
            else:
                self.complete(frozen.number, result)
            settled.append(frozen.number)
        return settled

    def finished_numbers(self) -> list[int]:
        return [t.number for t in self._frozen() if t.state in FINISHED]

    def counts(self) -> dict[str, int]:
        """Trials by outcome over the whole sweep (all sessions); a failed trial that was run
        again counts as ``retried``, its rerun in its place."""
        frozen = self._frozen()
        retried = {t.user_attrs.get(RETRY_OF_ATTR) for t in frozen}
        counts = {name: 0 for name in (*_STATE_NAMES.values(), "retried")}
        for t in frozen:
            retried_here = t.state == TrialState.FAIL and t.number in retried
            counts["retried" if retried_here else _STATE_NAMES[t.state]] += 1
        return counts

    def best(self) -> list[FrozenTrial]:
        """The best configuration by seed mean (single objective; see seed_units) or the
        Pareto set of told (seed-mean) values (multi-objective)."""
        if not any(t.state == TrialState.COMPLETE for t in self._frozen()):
            return []
        if self.multi_objective:
            return self.units.pareto_front([o.mode for o in self.search.objectives])
        return self.units.best()
