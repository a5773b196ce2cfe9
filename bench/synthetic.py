"""Sweep-level benches on the real engine with a cheap synthetic trial function.

``run_study(..., trial_fn=curve_trial)`` runs the whole engine (embedded Ray Tune, the Optuna
journal, the sampler, the pruner, seed units and promotion); only the training is replaced by
``curve_trial``: a noisy learning curve per configuration (learning rate, blur ratio, beta),
one short sleep per epoch, no torch. What the benches count is epochs run and the best
validation top-1, so the figures depend on the engine's decisions, not on CPU speed.

The curves are built to look like real ones: a plateau that depends on the configuration
(a log-learning-rate bowl, a blur-ratio optimum, a weak beta effect, an unexplained
per-configuration offset), a learning speed that grows with the learning rate (a slow learner
can end above a fast one: curves cross), per-seed offsets and per-epoch noise.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ray.cloudpickle as cloudpickle

from bkd_sweep.config import TrialConfig
from bkd_sweep.records import EnergyReport, EpochMetrics, TrialRecord, TrialResult

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import bench/

EPOCH_SECONDS = 0.02  # one synthetic epoch (a trial takes some time, as real ones do)


def _rng(*parts: Any) -> random.Random:
    """A generator seeded by the text of ``parts`` (stable across processes)."""
    return random.Random("|".join(f"{p:.9g}" if isinstance(p, float) else str(p)
                                  for p in parts))


def curve(lr: float, blur: float, beta: float) -> tuple[float, float]:
    """(plateau top-1 %, epochs to 63% of it) of a configuration."""
    x = math.log10(lr / 3e-3)
    plateau = (97.0 - 7.0 * x * x - 14.0 * (blur - 0.2) ** 2
               - 0.6 * abs(math.log10(beta / 2e-5)) + _rng("cfg", lr, blur, beta).gauss(0, 1.0))
    tau = min(10.0, max(0.6, 1.8 * (3e-3 / lr) ** 0.45))
    return min(99.5, max(12.0, plateau)), tau


def top1_at(config: TrialConfig, epoch: int) -> float:
    return top1_of(config.train.optimizer.lr, config.distill.blur_ratio, config.distill.beta,
                   config.seed, epoch)


def top1_of(lr: float, blur: float, beta: float, seed: int, epoch: int) -> float:
    """Validation top-1 of a configuration and seed after ``epoch`` epochs."""
    plateau, tau = curve(lr, blur, beta)
    seed_offset = _rng("seed", lr, blur, beta, seed).gauss(0, 0.4)
    noise = _rng("epoch", lr, blur, beta, seed, epoch).gauss(0, 0.6)
    value = 10.0 + (plateau - 10.0) * (1 - math.exp(-epoch / tau)) + seed_offset + noise
    return min(100.0, max(0.0, value))


def curve_trial(config: TrialConfig, report=None, *, checkpoint_dir=None, cache_dir=None,
                epoch_seconds: float | None = None) -> TrialResult:
    """run_trial's signature: one synthetic epoch at a time, a small checkpoint file per
    epoch (what a retry would resume from), a completed result. Its own wall time, without
    the time spent in ``report`` (the engine's), is the result's wall_seconds."""
    started, reporting = time.perf_counter(), 0.0
    delay = EPOCH_SECONDS if epoch_seconds is None else epoch_seconds
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    history: list[EpochMetrics] = []
    for epoch in range(1, config.train.epochs + 1):
        tick = time.perf_counter()
        if delay:
            time.sleep(delay)
        top1 = top1_at(config, epoch)
        metrics = EpochMetrics(epoch=epoch, top1=top1, top5=min(100.0, top1 + 5),
                               val_loss=3.0 - top1 / 40, loss=3.0 - top1 / 40, lr=0.1,
                               wall_seconds=time.perf_counter() - tick)
        history.append(metrics)
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
            (ckpt / "last.pt").write_text(metrics.model_dump_json())
        if report is not None:
            tick = time.perf_counter()
            report(metrics, ckpt)
            reporting += time.perf_counter() - tick
    energy = EnergyReport(energy_mj=0.1, sops=1e6, macs=1e5, mean_firing_rate=0.1,
                          timesteps=config.student.timesteps, e_mac_pj=4.6, e_ac_pj=0.9,
                          first_layer_once=False)
    best = max(history, key=lambda h: h.top1)
    return TrialResult.from_history(
        "completed", history, config=config.model_dump(mode="json"),
        config_hash=config.config_hash(),
        wall_seconds=time.perf_counter() - started - reporting,
        devices=1, device="cpu", energy=energy, test_top1=best.top1 - 0.5)


# --------------------------------------------------------------------------------------
# What the engine hands tracking, kept in memory


class _Store:
    def __init__(self) -> None:
        self.records: dict[str, TrialRecord] = {}

    def trial_ids(self, status: str | None = None) -> set[str]:
        return {t for t, r in self.records.items() if status is None or r.result.status == status}


class CountingTracker:
    """StudyTracker's interface in memory: the finished trials' records (no MLflow/Parquet,
    so the synthetic sweeps measure the engine's decisions, not the disk)."""

    def __init__(self) -> None:
        self.store = _Store()

    def start_sweep(self, *, resume: bool) -> str:
        return "synthetic"

    def log_epoch(self, trial_id, params, metrics) -> None:
        pass

    def finish_trial(self, record: TrialRecord) -> None:
        self.store.records[record.trial_id] = record

    def finish_sweep(self) -> None:
        pass

    @property
    def records(self) -> list[TrialRecord]:
        return sorted(self.store.records.values(), key=lambda r: r.trial_number)


@dataclass
class SweepOutcome:
    """One synthetic sweep: its records and wall time."""

    label: str
    records: list[TrialRecord]
    wall: float
    counts: dict[str, int] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)  # SweepSummary.best[0]: the engine's pick

    def engine_best(self) -> str:
        """What the engine reports as best, e.g. 'val_top1 96.69 (mean of 2 seeds)'."""
        if not self.best:
            return "-"
        values = ", ".join(f"{k} {v:.2f}" for k, v in self.best["values"].items())
        return f"{values} (mean of {self.best.get('seeds', 1)} seed(s))"

    @property
    def epochs(self) -> int:
        return sum(r.result.epochs_run for r in self.records)

    @property
    def configurations(self) -> int:
        return len({tuple(sorted(r.params.items())) for r in self.records})

    def pruned_at(self) -> list[int]:
        return sorted(r.result.epochs_run for r in self.records if r.result.status == "pruned")

    def best_top1(self) -> float:
        """Best validation top-1 over completed trials (single seed)."""
        return max(r.result.val_top1 for r in self.records if r.result.status == "completed")

    def full_configurations(self, seeds: int) -> list[float]:
        """Mean validation top-1 of each configuration whose ``seeds`` seeds all completed,
        best first."""
        by_config: dict[tuple, list[float]] = {}
        for r in self.records:
            if r.result.status == "completed":
                by_config.setdefault(tuple(sorted(r.params.items())), []).append(
                    r.result.val_top1)
        return sorted((sum(v) / len(v) for v in by_config.values() if len(v) >= seeds),
                      reverse=True)


def run_synthetic(study_file: Path, label: str, trial_fn: Callable = curve_trial,
                  tracker: Any = None) -> SweepOutcome:
    """Run one study through run_study with ``trial_fn`` (Ray started by the caller or here).
    ``tracker`` None: records kept in memory (CountingTracker)."""
    from bkd_sweep.config import load_study
    from bkd_sweep.engine import run_study

    tracker = CountingTracker() if tracker is None else tracker
    loaded = load_study(study_file)
    started = time.perf_counter()
    summary = run_study(loaded, trial_fn=trial_fn, tracker=tracker, progress=False)
    wall = time.perf_counter() - started
    if not summary.ok:
        raise RuntimeError(f"synthetic sweep {label} did not finish: {summary.counts}")
    records = tracker.records if isinstance(tracker, CountingTracker) else []
    return SweepOutcome(label, records, wall, summary.counts,
                        summary.best[0] if summary.best else {})


def plain_trainable(config: dict) -> None:
    """What a user would write instead of bkd-sweep: a Ray Tune function calling run_trial,
    reporting each epoch's top-1 and the final result (here so it travels by value)."""
    from ray import tune

    from bkd_sweep.trial import run_trial

    trial = TrialConfig.model_validate(config["trial_config"])

    def report(metrics: EpochMetrics, _checkpoint_dir) -> None:
        tune.report({"top1": metrics.top1, "epoch": metrics.epoch})

    result = run_trial(trial, report, cache_dir=Path(config["cache_dir"]))
    tune.report({"top1": result.val_top1 or 0.0, "test_top1": result.test_top1 or 0.0,
                 "epoch": result.epochs_run})
