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
from typing import Any, Callable

from ray.tune.search import Searcher

from bkd_sweep.engine.book import SweepBook
from bkd_sweep.engine.worker import KIND_KEY, RESULT_KEY
from bkd_sweep.records import TrialResult

log = logging.getLogger(__name__)


def final_result(result: dict[str, Any] | None) -> TrialResult | None:
    """The TrialResult carried by a worker's final report, if this is one."""
    if not result or result.get(KIND_KEY) != "final" or RESULT_KEY not in result:
        return None
    return TrialResult.model_validate(json.loads(result[RESULT_KEY]))


class OptunaSearcher(Searcher):
    """Ray Tune searcher backed by a SweepBook (one Optuna study, journal storage).

    ``capacity`` (``max_concurrent: auto``) says how many trials the cluster fits right now;
    no new trial is asked while that many run, so the sampler sees results as early as it can
    and the sweep grows onto nodes that join (Tune asks again later when we answer None).
    """

    def __init__(self, book: SweepBook, capacity: Callable[[], int] | None = None):
        super().__init__(metric=None, mode=None)
        self.book = book
        self.capacity = capacity

    def running(self) -> int:
        return sum(not self.book.is_finished(n) for n in self.book.live.numbers())

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space comes from the study, not from Tune's param_space

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.capacity is not None and self.running() >= self.capacity():
            return None  # the cluster is full; Tune asks again
        spec = self.book.next_trial()
        if spec is None:
            return Searcher.FINISHED
        self.book.live.bind(trial_id, spec.number)
        return spec.ray_config()

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
