"""Pruner settings on the pruning bench's study, simulated with Optuna alone (no Ray, no engine).

bench/pruning.py measures the default pruner through the real engine on eight TPE sampler
seeds; one run's savings and top-1 loss swing with its luck (top-1 loss sd ~1.1 points).
This replays the same study (bench/synthetic.py's learning curves, TPE as the engine builds
it, one trial at a time, the last epoch never pruned, a trial's value its best epoch) over
many sampler seeds, for several of Optuna's pruners, to show where each lies between epochs
saved and top-1 lost; the bench takes the default's expectation from it.

    python bench/pruning_sim.py [--seeds 200] [--trials 24]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import top1_of  # noqa: E402

EPOCHS = 12


def sweep(pruner: optuna.pruners.BasePruner, sampler_seed: int, trials: int,
          best_so_far: bool = False) -> tuple[int, float]:
    """(epochs run, best top-1 of the completed trials) of one sequential TPE sweep. The study
    is named as bench/pruning.py names its pruned sweep of this sampler seed (Hyperband puts
    a trial in a bracket by a hash of the study name and trial number), so seed s replays
    that bench sweep decision for decision."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=sampler_seed, multivariate=True,
                                             constant_liar=True)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner,
                                study_name=f"bench_pruning_auto_{sampler_seed}")
    epochs, best = 0, float("-inf")
    for _ in range(trials):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-4, 3e-2, log=True)
        blur = trial.suggest_float("blur", 0.0, 0.6)
        beta = trial.suggest_float("beta", 1e-6, 1e-3, log=True)
        history: list[float] = []
        for epoch in range(1, EPOCHS + 1):
            history.append(top1_of(lr, blur, beta, 0, epoch))
            epochs += 1
            trial.report(max(history) if best_so_far else history[-1], epoch)
            if epoch < EPOCHS and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            best = max(best, max(history))
            study.tell(trial, max(history))
    return epochs, best


DEFAULT = "hyperband eta 3 from epoch 1 (the default)"  # pruner: auto on a 12-epoch TPE study
H, SH = optuna.pruners.HyperbandPruner, optuna.pruners.SuccessiveHalvingPruner
SETTINGS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    DEFAULT: lambda: H(min_resource=1, max_resource=EPOCHS, reduction_factor=3),
    "hyperband eta 2 from epoch 1": lambda: H(min_resource=1, max_resource=EPOCHS,
                                              reduction_factor=2),
    "hyperband eta 3 from epoch 2": lambda: H(min_resource=2, max_resource=EPOCHS,
                                              reduction_factor=3),
    "successive halving eta 3 from epoch 1": lambda: SH(min_resource=1, reduction_factor=3),
    "successive halving eta 2 from epoch 2": lambda: SH(min_resource=2, reduction_factor=2),
    "successive halving eta 4 from epoch 1": lambda: SH(min_resource=1, reduction_factor=4),
    "hyperband eta 2 from epoch 3": lambda: H(min_resource=3, max_resource=EPOCHS,
                                              reduction_factor=2),
    "median, 2 warm-up epochs": lambda: optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                    n_warmup_steps=2),
    "patient (1 epoch) successive halving eta 3":
        lambda: optuna.pruners.PatientPruner(SH(min_resource=1, reduction_factor=3), patience=1),
}


@dataclass(frozen=True)
class Expectation:
    """One pruner setting over many sampler seeds, against no pruner on the same seeds."""

    seeds: int
    speedup: float  # epochs without / with, pooled
    loss: float  # mean over seeds of best top-1 without - with (points)
    loss_se: float  # its standard error
    loss_sd: float  # one run's spread
    both_met: float  # share of single runs with >= 2x saved and <= 1 point lost
    runs: dict[int, tuple[int, float]]  # sampler seed -> (epochs, best top-1) with the pruner


def expectation(make: Callable[[], optuna.pruners.BasePruner], seeds: range, trials: int,
                best_so_far: bool = False,
                plain: dict[int, tuple[int, float]] | None = None) -> Expectation:
    plain = plain or {s: sweep(optuna.pruners.NopPruner(), s, trials) for s in seeds}
    runs = {s: sweep(make(), s, trials, best_so_far) for s in seeds}
    lost = [plain[s][1] - runs[s][1] for s in seeds]  # a run without a completed trial: inf
    lost = [x if math.isfinite(x) else 100.0 for x in lost]
    sd = statistics.stdev(lost)
    met = sum(1 for s, x in zip(seeds, lost) if plain[s][0] >= 2 * runs[s][0] and x <= 1.0)
    speedup = sum(plain[s][0] for s in seeds) / sum(r[0] for r in runs.values())
    return Expectation(len(seeds), speedup, statistics.mean(lost), sd / math.sqrt(len(lost)),
                       sd, met / len(lost), runs)


def quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # PatientPruner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args(argv)
    quiet()
    seeds = range(args.seeds)
    plain = {s: sweep(optuna.pruners.NopPruner(), s, args.trials) for s in seeds}
    print(f"| pruner ({args.seeds} TPE seeds x {args.trials} trials x {EPOCHS} epochs) "
          "| epochs saved | top-1 lost (points) | se | sd a run | runs meeting both |\n"
          "|---|---|---|---|---|---|")
    for name, make in SETTINGS.items():
        for best_so_far in (False, True):
            e = expectation(make, seeds, args.trials, best_so_far, plain)
            label = name + (", best-so-far values" if best_so_far else "")
            print(f"| {label} | {e.speedup:.2f}x | {e.loss:+.2f} | {e.loss_se:.2f} | "
                  f"{e.loss_sd:.2f} | {e.both_met:.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
