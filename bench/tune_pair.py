"""bkd-sweep against the Ray Tune script a user would write, and its fixed cost per trial.

* wall_vs_plain_tune: the same quickstart trials (8 trials: 4 distillation modes x 2
  time-steps, seed 0, 2 epochs, 2 at a time) run by bkd-sweep (run_study: Parquet + MLflow,
  checkpoints, Optuna journal) and by a default ``tune.Tuner`` over ``run_trial`` (grid
  search over the same trial configs, ``max_concurrent_trials=2``, defaults otherwise:
  Tuner starts Ray itself, no actor reuse). Rounds interleave (bkd, plain, plain, bkd); the
  teacher is trained into the shared cache first, so neither side pays for it.
* fixed_cost_per_trial_s: trivially short trials (1 synthetic epoch, no sleep) through
  run_study with the real tracking (MLflow + Parquet), N = 4 and N = 20 trials in one Ray
  session: per trial = ((wall(20) - wall(4)) x concurrency - (trial fn s(20) - s(4))) / 16,
  the wall one more trial adds; what is left of wall(4) is the sweep's start (Tune, the
  workers' imports), reported beside it. Driver-side time in tracking and in the SweepBook
  (Optuna, trial files) is timed per call; the rest is Ray Tune.

    python bench/tune_pair.py [pair] [fixed]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_common import Row, rows_table, say  # noqa: E402
from figures import judge  # noqa: E402

QUICKSTART = REPO / "studies" / "quickstart.yaml"
PAIR_CHANGES = {"search.seeds": [0], "train.epochs": 2}
FIXED_SIZES = (4, 20)
TIMERS: dict[str, float] = {}  # driver-side seconds by what (module global: Tune may copy)


def _quickstart_copy(root: Path, name: str) -> Path:
    from sweep import write_study_copy

    return write_study_copy(QUICKSTART, root / f"{name}.yaml", results_dir=root / "results",
                            changes={"name": name, **PAIR_CHANGES})


def _clean_env() -> None:
    import os

    for name in ("RAY_ADDRESS", "BKD_RESULTS_DIR", "BKD_CACHE_DIR"):
        os.environ.pop(name, None)


def warm_teacher(study_file: Path) -> float:
    """Train the quickstart teacher into the shared cache (one 1-epoch trial); seconds."""
    from bkd_sweep.config import load_study
    from bkd_sweep.settings import cache_dir_for
    from bkd_sweep.trial import run_trial

    loaded = load_study(study_file)
    config = loaded.study.trial_config({"distill.mode": "mixed"}, 0)
    config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 1})})
    start = time.perf_counter()
    run_trial(config, cache_dir=cache_dir_for(loaded.results_dir().parent))
    return time.perf_counter() - start


def bkd_wall(study_file: Path) -> float:
    from bkd_sweep.config import load_study
    from bkd_sweep.engine import run_study

    start = time.perf_counter()
    summary = run_study(load_study(study_file), progress=False)
    if not summary.ok:
        raise RuntimeError(f"bkd-sweep side did not finish: {summary.counts}")
    return time.perf_counter() - start


def plain_wall(study_file: Path, storage: Path) -> float:
    """The plain Ray Tune script over the study's grid; Ray start and shutdown included."""
    import ray
    from ray import tune

    from bkd_sweep import space
    from bkd_sweep.config import load_study
    from bkd_sweep.settings import cache_dir_for
    from synthetic import plain_trainable

    loaded = load_study(study_file)
    study = loaded.study
    configs = [study.trial_config(params, seed).model_dump(mode="json")
               for params, seed in space.grid_trials(study.search)]
    start = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(plain_trainable, {"cpu": 1}),
        param_space={"trial_config": tune.grid_search(configs),
                     "cache_dir": str(cache_dir_for(loaded.results_dir().parent))},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0))
    grid = tuner.fit()
    ray.shutdown()
    wall = time.perf_counter() - start
    if grid.num_errors:
        raise RuntimeError(f"plain Ray Tune side: {grid.num_errors} trial(s) failed")
    return wall


@dataclass
class PairResult:
    bkd: list[float]
    plain: list[float]
    trials: int
    teacher_s: float

    @property
    def ratio(self) -> float:
        return sum(self.bkd) / sum(self.plain)


def tune_pair(root: Path, rounds: int = 2) -> PairResult:
    _clean_env()
    teacher = warm_teacher(_quickstart_copy(root, "pair_warm"))
    bkd, plain = [], []
    for k in range(rounds):
        order = ("bkd", "plain") if k % 2 == 0 else ("plain", "bkd")
        for side in order:
            say(f"sweep: round {k + 1}, {side} (8 quickstart trials x 2 epochs)")
            study_file = _quickstart_copy(root, f"pair_{side}_{k + 1}")
            if side == "bkd":
                bkd.append(bkd_wall(study_file))
            else:
                plain.append(plain_wall(study_file, root / "plain_tune"))
    return PairResult(bkd, plain, 8, teacher)


def pair_rows(result: PairResult) -> list[Row]:
    rounds = "; ".join(f"round {i + 1}: {b:.1f} s vs {p:.1f} s"
                       for i, (b, p) in enumerate(zip(result.bkd, result.plain)))
    why = (f"bkd-sweep {sum(result.bkd):.0f} s vs plain {sum(result.plain):.0f} s over "
           f"{len(result.bkd)} rounds")
    return [Row("bkd-sweep vs plain Ray Tune", f"bkd-sweep wall / default tune.Tuner over "
                f"run_trial wall, {result.trials} quickstart trials x 2 epochs, 2 concurrent",
                f"{result.ratio:.2f}", f"{rounds} (interleaved; teacher trained once before, "
                f"{result.teacher_s:.0f} s)", **judge("wall_vs_plain_tune", result.ratio, why))]


# --------------------------------------------------------------------------------------
# Fixed cost per trial


def _timed(what: str, method):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            TIMERS[what] = TIMERS.get(what, 0.0) + time.perf_counter() - start
    return wrapper


def _timed_tracker(loaded):
    """The real StudyTracker (MLflow + Parquet) with its calls timed; the trial functions'
    own seconds collected from the records it is handed."""
    from bkd_sweep.tracking import StudyTracker

    tracker = StudyTracker(loaded.study, results_dir=loaded.results_dir(),
                           study_file=loaded.path)
    finish = tracker.finish_trial

    def finish_trial(record) -> None:
        TIMERS["trial fn"] = TIMERS.get("trial fn", 0.0) + record.result.wall_seconds
        finish(record)

    tracker.finish_trial = _timed("tracking", finish_trial)
    tracker.log_epoch = _timed("tracking", tracker.log_epoch)
    return tracker


def _timed_book():
    from bkd_sweep.engine.book import SweepBook

    class TimedBook(SweepBook):
        pass

    for name in ("next_trial", "observe_epoch", "complete", "prune", "fail", "record", "counts",
                 "best", "is_finished"):
        setattr(TimedBook, name, _timed("book", getattr(SweepBook, name)))
    return TimedBook


@dataclass
class FixedCost:
    walls: dict[int, float]
    fn_s: dict[int, float]
    tracking_s: dict[int, float]
    book_s: dict[int, float]
    ray_start_s: float
    concurrency: int = 2

    def per_trial(self) -> float:
        small, big = FIXED_SIZES
        busy = (self.walls[big] - self.walls[small]) * self.concurrency
        return (busy - (self.fn_s[big] - self.fn_s[small])) / (big - small)

    def marginal(self, timers: dict[int, float]) -> float:
        small, big = FIXED_SIZES
        return (timers[big] - timers[small]) / (big - small)

    def sweep_start(self) -> float:
        small = FIXED_SIZES[0]
        return self.walls[small] - small * (self.per_trial() + self.fn_s[small] / small) \
            / self.concurrency


def fixed_cost(root: Path) -> FixedCost:
    import functools

    import bkd_sweep.engine.book as book_module
    from bkd_sweep.config import load_study
    from bkd_sweep.engine import run_study
    from pruning import _Ray, study_copy
    from synthetic import curve_trial

    _clean_env()
    trial_fn = functools.partial(curve_trial, epoch_seconds=0.0)
    result = FixedCost({}, {}, {}, {}, 0.0)
    start = time.perf_counter()
    real = book_module.SweepBook
    with _Ray():
        result.ray_start_s = time.perf_counter() - start
        book_module.SweepBook = _timed_book()
        try:
            for n in FIXED_SIZES:
                say(f"sweep: {n} trivially short trials (1 synthetic epoch), real tracking")
                loaded = load_study(study_copy(root, f"fixed_{n}", {
                    "search.pruner": {"name": "none"}, "search.sampler": "random",
                    "search.n_trials": n, "train.epochs": 1}))
                TIMERS.clear()
                start = time.perf_counter()
                summary = run_study(loaded, trial_fn=trial_fn, tracker=_timed_tracker(loaded),
                                    progress=False)
                result.walls[n] = time.perf_counter() - start
                if not summary.ok:
                    raise RuntimeError(f"fixed-cost sweep of {n} did not finish")
                result.fn_s[n] = TIMERS.get("trial fn", 0.0)
                result.tracking_s[n] = TIMERS.get("tracking", 0.0)
                result.book_s[n] = TIMERS.get("book", 0.0)
        finally:
            book_module.SweepBook = real
    return result


def fixed_rows(cost: FixedCost) -> list[Row]:
    per = cost.per_trial()
    tracking, book = cost.marginal(cost.tracking_s), cost.marginal(cost.book_s)
    rest = per - (tracking + book) * cost.concurrency  # driver time holds both slots
    parts = (f"driver-side per trial: tracking (MLflow + Parquet) {tracking:.2f} s, "
             f"SweepBook (Optuna journal, trial files) {book:.2f} s; the rest, "
             f"{max(0.0, rest):.2f} s of slot time, is Ray Tune (scheduling, result and "
             "checkpoint transport, the worker's report calls)")
    small, big = FIXED_SIZES
    return [
        Row("fixed cost per trial", f"wall x concurrency one more trivially short trial adds, "
            f"minus the trial function's own time (N = {small} vs {big}, Ray already up)",
            f"{per:.2f} s", f"sweep wall {cost.walls[small]:.1f} s ({small} trials) vs "
            f"{cost.walls[big]:.1f} s ({big}); {parts}",
            **judge("fixed_cost_per_trial_s", per, parts)),
        Row("fixed cost per trial", "the sweep's own start (run_study until trials flow: Tune, "
            "the first workers' imports), not counted above", f"{cost.sweep_start():.1f} s",
            f"plus Ray's start in this process {cost.ray_start_s:.1f} s; amortized over "
            f"{big} trials that is {(cost.sweep_start() + cost.ray_start_s) * cost.concurrency / big:.2f} s "
            "a trial", "- (reported)", "-"),
    ]


def run_part(name: str, workdir: Path) -> list[Row]:
    root = Path(workdir) / name
    root.mkdir(parents=True, exist_ok=False)
    if name == "pair":
        return pair_rows(tune_pair(root))
    if name == "fixed":
        return fixed_rows(fixed_cost(root))
    raise ValueError(f"unknown part {name!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", choices=("pair", "fixed"), default=["fixed", "pair"])
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bkd-bench-"))
    rows = [row for part in args.parts for row in run_part(part, workdir)]
    print(rows_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
