"""A Ray Tune Searcher over the sweep's Optuna study (ask/tell, define-by-run).

Unlike Ray's OptunaSearch it tells Optuna the trial's true final state: COMPLETE with the
objective values (in objective order) only for a trial whose worker returned a completed
TrialResult, PRUNED for one the pruning scheduler stopped (already told there), FAIL for one
that raised or returned failed. Suggestions come from ``SweepBook.next_trial`` (interrupted
trials first, then Optuna's ask + ``space.suggest``).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable

from ray.tune.search import Searcher

from bkd_sweep.engine.book import SweepBook
from bkd_sweep.engine.driver_only import DriverOnly
from bkd_sweep.engine.live_trials import TrialSpec
from bkd_sweep.engine.teachers_first import PendingTeachers, needs_teacher
from bkd_sweep.engine.worker import KIND_KEY, RESULT_KEY, TEACHER_KEY
from bkd_sweep.records import TrialResult

log = logging.getLogger(__name__)
HOLD_AT_MOST = 16  # trials asked ahead while a teacher trains, looking for ones needing none
_WAIT = object()  # suggest: nothing to hand out now, ask again later


def final_result(result: dict[str, Any] | None) -> TrialResult | None:
    """The TrialResult carried by a worker's final report, if this is one."""
    if not result or result.get(KIND_KEY) != "final" or RESULT_KEY not in result:
        return None
    return TrialResult.model_validate(json.loads(result[RESULT_KEY]))


class OptunaSearcher(DriverOnly, Searcher):
    """Ray Tune searcher backed by a SweepBook (one Optuna study, journal storage).

    ``capacity`` (``max_concurrent: auto``) says how many trials the cluster fits right now;
    no new trial is asked while that many run, so the sampler sees results as early as it can
    and the sweep grows onto nodes that join (Tune asks again later when we answer None).
    """

    def __init__(self, book: SweepBook, capacity: Callable[[], int] | None = None,
                 teachers: PendingTeachers | None = None,
                 nodes: Callable[[], Iterable[str]] | None = None):
        super().__init__(metric=None, mode=None)
        self.book = book
        self.capacity = capacity
        self.teachers = teachers
        self.nodes = nodes  # on a cluster: the ids of the nodes a trial may run on
        self.held: list[TrialSpec] = []  # asked while their teacher is being prepared
        self.teacher_error: BaseException | None = None

    def running(self) -> int:
        handed = sum(not self.book.is_finished(n) for n in self.book.live.numbers())
        teachers = self.teachers.in_flight() if self.teachers is not None else 0
        return handed - len(self.held) + teachers

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space comes from the study, not from Tune's param_space

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.capacity is not None and self.running() >= self.capacity():
            return None  # the cluster is full; Tune asks again
        job = self.teachers.next_job(trial_id) if self.teachers is not None else None
        if job is not None:  # teachers first: the trials that need them wait on them
            return self._placed({"trial_id": f"teacher{job}", TEACHER_KEY: job})
        spec = self._next()
        if spec is None:
            return None if self.held else Searcher.FINISHED
        if spec is _WAIT:
            # Tune asks again; after a teacher failed, no new trial (the runner raises it)
            return Searcher.FINISHED if self.teacher_error is not None else None
        self.book.live.bind(trial_id, spec.number)
        return self._placed(spec.ray_config())

    def _placed(self, config: dict[str, Any]) -> dict[str, Any]:
        if self.nodes is not None:  # placement.TrialResources reads them (Tune copies them)
            config["nodes"] = sorted(self.nodes())
        return config

    def _next(self) -> TrialSpec | object | None:
        """The next trial to hand out; while the teachers are prepared, trials that need
        one are held back (up to HOLD_AT_MOST) and the others go first."""
        if self._teachers_ready():
            if not self.held:
                return self.book.next_trial()
            spec = self.held.pop(0)
            self.book.budget.trial_started(spec.number)  # its budget clock starts now
            return spec
        if self.teacher_error is not None or len(self.held) >= HOLD_AT_MOST:
            return _WAIT
        while (spec := self.book.next_trial()) is not None and needs_teacher(spec.config):
            self.held.append(spec)
            self.book.budget.trial_held(spec.number)
            if len(self.held) >= HOLD_AT_MOST:
                return _WAIT
        return spec

    def _teachers_ready(self) -> bool:
        if self.teachers is None:
            return True
        if self.teacher_error is None:
            try:
                return self.teachers.ready()
            except Exception as exc:  # noqa: BLE001 - raised again by the runner's wait()
                self.teacher_error = exc  # no trial that needs it starts; the rest finish
        return False

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # epochs are reported to Optuna by the pruning scheduler

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        number = self.book.live.number_for(trial_id)
        if number is None or self.book.is_finished(number):
            return  # unknown here, or already told (e.g. pruned by the scheduler)
        if error:
            self.book.fail(number, None)  # the callback adds the exception's reason
            return
        final = final_result(result)
        if final is None:
            # stopped without a final report and not pruned (the driver is shutting down):
            # leave it RUNNING so --resume runs it again from its checkpoint
            log.info("trial %s stopped without a result; left for --resume",
                     self.book.live.spec(number).trial_id)
            return
        self.book.complete(number, final)

    def save(self, checkpoint_path: str) -> None:
        # The Optuna journal is the searcher's state; this file only points at it.
        with open(checkpoint_path, "w", encoding="utf-8") as handle:
            json.dump({"optuna_study": self.book.study.name,
                       "results_dir": str(self.book.results_dir)}, handle)

    def restore(self, checkpoint_path: str) -> None:
        pass  # nothing beyond the journal, which SweepBook reopens
