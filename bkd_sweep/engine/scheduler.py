"""Optuna pruning as a Ray Tune scheduler.

Ray's order per result is stopper -> scheduler.on_trial_result -> searcher (only if not
stopped), so pruning belongs here: each epoch result is reported to the trial's Optuna trial
(``report(value, epoch)``), the study's pruner decides (``should_prune``), and a pruned trial
is recorded at once (result.json, Optuna PRUNED with its pruned epoch) before Tune stops it.
Multi-objective studies cannot use Optuna's report/should_prune; the only pruner they allow,
``threshold``, is applied here with Optuna's ThresholdPruner semantics.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from bkd_sweep.engine.book import SweepBook
from bkd_sweep.engine.driver_only import DriverOnly
from bkd_sweep.engine.objectives import pruning_value
from bkd_sweep.engine.worker import EPOCH_KEY, KIND_KEY
from bkd_sweep.records import EpochMetrics

log = logging.getLogger(__name__)


def epoch_metrics(result: dict[str, Any]) -> EpochMetrics | None:
    """The EpochMetrics of a per-epoch report (None for final reports and anything else)."""
    if result.get(KIND_KEY) != "epoch" or EPOCH_KEY not in result:
        return None
    return EpochMetrics.model_validate(json.loads(result[EPOCH_KEY]))


class OptunaPruningScheduler(DriverOnly, FIFOScheduler):
    """FIFO scheduling plus Optuna pruning; overrides only on_trial_result/on_trial_complete."""

    def __init__(self, book: SweepBook):
        super().__init__()
        self.book = book
        self.pruner = book.search.pruner

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        metrics = epoch_metrics(result)
        number = self.book.live.number_for(trial.trial_id)
        if metrics is None or number is None or self.book.is_finished(number):
            return TrialScheduler.CONTINUE
        self.book.observe_epoch(number, metrics)
        if self.pruner.name == "none":
            return TrialScheduler.CONTINUE
        value = (self.book.units.pruning_value(number, metrics) if not self.book.multi_objective
                 else pruning_value(self.book.search, metrics))  # threshold: each seed alone
        # The last epoch is never pruned: its cost is already spent, and completing keeps
        # the trial's result (and its energy measurement) instead of discarding it.
        last_epoch = metrics.epoch >= self.book.live.spec(number).config.train.epochs
        if self.book.multi_objective:
            prune = not last_epoch and self._threshold_prunes(value, metrics.epoch)
        else:
            optuna_trial = self.book.live.get(number).trial
            optuna_trial.report(value, metrics.epoch)
            prune = not last_epoch and optuna_trial.should_prune()
        if not prune:
            return TrialScheduler.CONTINUE
        reason = f"pruned by {self.pruner.name} pruner at epoch {metrics.epoch}"
        self.book.prune(number, metrics.epoch, reason)
        log.info("%s: %s", self.book.live.spec(number).trial_id, reason)
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        # Nothing to decide: the searcher tells Optuna the final state. A trial stopped here
        # was already recorded as pruned in on_trial_result.
        super().on_trial_complete(tune_controller, trial, result)

    def _threshold_prunes(self, value: float, epoch: int) -> bool:
        """Optuna's ThresholdPruner rule (interval 1): from epoch warmup_epochs + 1 on, prune
        a NaN or a value outside [lower, upper]."""
        cfg = self.pruner
        if epoch <= cfg.warmup_epochs:
            return False
        if math.isnan(value):
            return True
        return ((cfg.lower is not None and value < cfg.lower)
                or (cfg.upper is not None and value > cfg.upper))
