"""Pruner settings on the pruning bench's study, simulated with Optuna alone (no Ray, no engine).

bench/pruning.py measures the default pruner through the real engine on three TPE sampler
seeds; one run's savings and top-1 loss swing with its luck (sd ~1.3 points). This replays the
same study (bench/synthetic.py's learning curves, TPE as the engine builds it, one trial at a
time, the last epoch never pruned, a trial's value its best epoch) over many sampler seeds,
for several of Optuna's pruners, to show where each lies between epochs saved and top-1 lost.

    python bench/pruning_sim.py [--seeds 60] [--trials 24]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path
from typing import Callable

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import top1_of  # noqa: E402

EPOCHS = 12


class BracketBlind(optuna.pruners.BasePruner):
    """A Hyperband pruner the sampler does not see as one (TPE then learns from every trial,
    not only its bracket's)."""

    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner = inner

    def prune(self, study, trial) -> bool:
        return self.inner.prune(study, trial)


def sweep(pruner: optuna.pruners.BasePruner, sampler_seed: int, trials: int,
          best_so_far: bool = False) -> tuple[int, float]:
    """(epochs run, best top-1 of the completed trials) of one sequential TPE sweep."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=sampler_seed, multivariate=True,
                                             constant_liar=True)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner,
                                study_name="pruning-sim")
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


H, SH = optuna.pruners.HyperbandPruner, optuna.pruners.SuccessiveHalvingPruner
SETTINGS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "hyperband eta 3 from epoch 1 (the default)":
        lambda: H(min_resource=1, max_resource=EPOCHS, reduction_factor=3),
    "the same, TPE blind to its brackets":
        lambda: BracketBlind(H(min_resource=1, max_resource=EPOCHS, reduction_factor=3)),
    "hyperband eta 2 from epoch 1": lambda: H(min_resource=1, max_resource=EPOCHS,
                                              reduction_factor=2),
    "hyperband eta 3 from epoch 2": lambda: H(min_resource=2, max_resource=EPOCHS,
                                              reduction_factor=3),
    "successive halving eta 3 from epoch 1": lambda: SH(min_resource=1, reduction_factor=3),
    "successive halving eta 2 from epoch 2": lambda: SH(min_resource=2, reduction_factor=2),
    "median, 2 warm-up epochs": lambda: optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                    n_warmup_steps=2),
    "patient (1 epoch) successive halving eta 3":
        lambda: optuna.pruners.PatientPruner(SH(min_resource=1, reduction_factor=3), patience=1),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=60)
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # PatientPruner
    seeds = range(args.seeds)
    plain = {s: sweep(optuna.pruners.NopPruner(), s, args.trials) for s in seeds}
    print(f"| pruner ({args.seeds} TPE seeds x {args.trials} trials x {EPOCHS} epochs) "
          "| epochs saved | top-1 lost (points) | sd a run |\n|---|---|---|---|")
    for name, make in SETTINGS.items():
        for best_so_far in (False, True):
            runs = [sweep(make(), s, args.trials, best_so_far) for s in seeds]
            saved = sum(plain[s][0] for s in seeds) / sum(e for e, _ in runs)
            lost = [plain[s][1] - b for s, (_, b) in zip(seeds, runs)]
            label = name + (", best-so-far values" if best_so_far else "")
            print(f"| {label} | {saved:.2f}x | {statistics.mean(lost):+.2f} | "
                  f"{statistics.stdev(lost):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
