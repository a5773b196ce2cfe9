"""Pruning on real trials: bench/studies/pruning_digits.yaml run through the engine with
pruner none and with the default pruner (auto), same sampler and trial seeds: epochs
consumed and best top-1. A cross-check of bench/pruning.py's synthetic figure, not in
bench/run.py's default run (``python bench/sweep.py pruning``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench_common import Row, verdict
from figures import TARGETS
from sweep import HERE, SweepRun, _fresh_dir, run_sweep, write_study_copy

PRUNING_STUDY = HERE / "studies" / "pruning_digits.yaml"
PRUNING_EPOCHS_TARGET = TARGETS["pruning_speedup"].threshold
PRUNING_TOP1_TOLERANCE = TARGETS["pruning_top1_loss_pts"].threshold


@dataclass
class PruningResult:
    plain: SweepRun
    pruned: SweepRun

    @staticmethod
    def epochs(run: SweepRun) -> int:
        return int(run.trials["epochs_run"].sum())

    @staticmethod
    def best(run: SweepRun) -> float:
        done = run.trials[run.trials["status"] == "completed"]
        return float(done["metric.top1"].max())

    @property
    def saving(self) -> float:
        return self.epochs(self.plain) / max(1, self.epochs(self.pruned))

    @property
    def top1_gap(self) -> float:
        return self.best(self.plain) - self.best(self.pruned)


def pruning(workdir: Path | None = None) -> PruningResult:
    root = _fresh_dir(workdir, "pruning")
    results = root / "results"  # both studies share one teacher cache
    plain_file = write_study_copy(PRUNING_STUDY, root / "plain.yaml", results_dir=results,
                                  changes={"name": "bench_pruning_none"})
    pruned_file = write_study_copy(PRUNING_STUDY, root / "auto.yaml", results_dir=results,
                                   changes={"name": "bench_pruning_auto",
                                            "search.pruner": {"name": "auto"}})
    cwd = os.getcwd()
    os.chdir(root)
    try:
        plain = run_sweep(plain_file)
        pruned = run_sweep(pruned_file)
    finally:
        os.chdir(cwd)
    return PruningResult(plain, pruned)


def pruning_rows(result: PruningResult) -> list[Row]:
    e_plain, e_pruned = result.epochs(result.plain), result.epochs(result.pruned)
    trials = result.pruned.trials
    at = sorted(int(e) for e in trials.loc[trials["status"] == "pruned", "epochs_run"])
    gap = result.top1_gap
    return [
        Row("pruning on real trials", f"epochs without / with the default pruner (tpe, "
            f"{result.plain.count} digits trials x 6 epochs)", f"{result.saving:.2f}x",
            f"{e_plain} vs {e_pruned} epochs; {len(at)} trials pruned, after epochs "
            f"{', '.join(map(str, at)) or '-'}",
            f">= {PRUNING_EPOCHS_TARGET:.1f}x", verdict(result.saving >= PRUNING_EPOCHS_TARGET)),
        Row("pruning on real trials", "best top-1 without - with pruner (points)", f"{gap:+.2f}",
            f"best top-1 {result.best(result.plain):.2f} vs {result.best(result.pruned):.2f}",
            f"<= {PRUNING_TOP1_TOLERANCE:.1f}", verdict(gap <= PRUNING_TOP1_TOLERANCE)),
    ]
