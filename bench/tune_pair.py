"""bkd-sweep against the Ray Tune script a user would write, and its fixed cost per trial.

* wall_vs_plain_tune: the same quickstart trials (the issue's 16: the 4 distillation modes
  x T 2, 4 x seeds 0, 1, at 2 epochs each, 2 at a time) run by bkd-sweep (run_study: Parquet + MLflow,
  checkpoints, Optuna journal) and by a default ``tune.Tuner`` over ``run_trial`` (grid
  search over the same trial configs, ``max_concurrent_trials=2``, defaults otherwise:
  Tuner starts Ray itself, no actor reuse). Rounds interleave (bkd, plain, plain, bkd); the
  teacher is trained into the shared cache first, so neither side pays for it. The second
  round is skipped when what is left of the part's time would not fit it.
* fixed_cost_per_trial_s: 24 trivially short trials (1 synthetic epoch, no sleep) through
  run_study with the real tracking (MLflow + Parquet), Ray already up: per trial = (time
  from the 4th trial's finish to the last x concurrency - those trials' own seconds) / the
  trials in between: the steady state, once the first workers have started. The sweep's
  start (run_study's call to the first finish) and Ray's start are reported beside it.
  Driver-side time in tracking and in the SweepBook (Optuna, trial files) is timed per
  call; the rest is Ray Tune.

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
from bench_common import Row, rows_table, say, time_left  # noqa: E402
from figures import judge  # noqa: E402

QUICKSTART = REPO / "studies" / "quickstart.yaml"
# the pair: the 16 quickstart trials (4 modes x T 2, 4 x seeds 0, 1), 2 epochs each
PAIR_CHANGES = {"search.seeds": [0, 1], "train.epochs": 2}
PAIR_TRIALS = 16
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
        started = time.perf_counter()
        if k and time_left() < 1.2 * round_s:
            say(f"sweep: round {k + 1} skipped ({time_left():.0f} s left, a round took "
                f"{round_s:.0f} s)")
            break
        order = ("bkd", "plain") if k % 2 == 0 else ("plain", "bkd")
        for side in order:
            say(f"sweep: round {k + 1}, {side} ({PAIR_TRIALS} quickstart trials x 2 epochs)")
            study_file = _quickstart_copy(root, f"pair_{side}_{k + 1}")
            if side == "bkd":
                bkd.append(bkd_wall(study_file))
            else:
                plain.append(plain_wall(study_file, root / "plain_tune"))
        round_s = time.perf_counter() - started
    return PairResult(bkd, plain, PAIR_TRIALS, teacher)


def pair_rows(result: PairResult) -> list[Row]:
    rounds = "; ".join(f"round {i + 1}: {b:.1f} s vs {p:.1f} s"
                       for i, (b, p) in enumerate(zip(result.bkd, result.plain)))
    why = (f"bkd-sweep {sum(result.bkd):.1f} s vs plain {sum(result.plain):.1f} s over "
           f"{len(result.bkd)} round(s)")
    return [Row("bkd-sweep vs plain Ray Tune", f"bkd-sweep wall / default tune.Tuner over "
                f"run_trial wall, {result.trials} quickstart trials x 2 epochs, 2 concurrent",
                f"{result.ratio:.3f}", f"{rounds} (interleaved; teacher trained once before, "
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


def _timed_tracker(loaded, finishes: list[tuple[float, float]]):
    """The real StudyTracker (MLflow + Parquet) with its calls timed; each trial's finish
    noted as (time, the trial function's own seconds)."""
    from bkd_sweep.tracking import StudyTracker

    tracker = StudyTracker(loaded.study, results_dir=loaded.results_dir(),
                           study_file=loaded.path)
    finish = tracker.finish_trial

    def finish_trial(record) -> None:
        finishes.append((time.perf_counter(), record.result.wall_seconds))
        finish(record)

    tracker.finish_trial = _timed("tracking", finish_trial)
    tracker.log_epoch = _timed("tracking", tracker.log_epoch)
    tracker.store.upsert = _timed("parquet", tracker.store.upsert)
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
    """One sweep of trivially short trials: when each finished, and the driver's timers."""

    started: float  # perf_counter when run_study was called
    finishes: list[tuple[float, float]]  # (perf_counter, trial fn seconds) per finished trial
    wall: float
    timers: dict[str, float]  # driver-side seconds: tracking (parquet part of it), book
    ray_start_s: float
    concurrency: int = 2

    @property
    def steady(self) -> list[tuple[float, float]]:
        return self.finishes[WARM_TRIALS - 1:]

    def per_trial(self) -> float:
        """Slot seconds per trial between the WARM_TRIALS-th finish and the last, minus the
        trial functions' own seconds."""
        steady = self.steady
        span = (steady[-1][0] - steady[0][0]) * self.concurrency
        return (span - sum(fn for _, fn in steady[1:])) / (len(steady) - 1)

    def sweep_start(self) -> float:
        """run_study's call until the first trial finished (Tune, the first workers)."""
        return self.finishes[0][0] - self.started


WARM_TRIALS = 4  # trials before the steady state (the first workers start meanwhile)


def fixed_cost(root: Path, trials: int = 24) -> FixedCost:
    import functools

    import bkd_sweep.engine.book as book_module
    from bkd_sweep.config import load_study
    from bkd_sweep.engine import run_study
    from pruning import RAY_START_S, _Ray, study_copy
    from synthetic import curve_trial

    _clean_env()
    trial_fn = functools.partial(curve_trial, epoch_seconds=0.0)
    loaded = load_study(study_copy(root, "fixed", {
        "search.pruner": {"name": "none"}, "search.sampler": "random",
        "search.n_trials": trials, "train.epochs": 1}))
    finishes: list[tuple[float, float]] = []
    real = book_module.SweepBook
    with _Ray():
        book_module.SweepBook = _timed_book()
        TIMERS.clear()
        say(f"sweep: {trials} trivially short trials (1 synthetic epoch), real tracking")
        try:
            start = time.perf_counter()
            summary = run_study(loaded, trial_fn=trial_fn,
                                tracker=_timed_tracker(loaded, finishes), progress=False)
            wall = time.perf_counter() - start
        finally:
            book_module.SweepBook = real
    if not summary.ok or len(finishes) < WARM_TRIALS + 2:
        raise RuntimeError(f"fixed-cost sweep did not finish: {summary.counts}")
    return FixedCost(start, finishes, wall, dict(TIMERS), RAY_START_S[0])


def fixed_rows(cost: FixedCost) -> list[Row]:
    per, n = cost.per_trial(), len(cost.finishes)
    each = {k: v / n for k, v in cost.timers.items()}
    steady = cost.steady
    every = (steady[-1][0] - steady[0][0]) / (len(steady) - 1)
    parts = (f"in the steady state a trial finishes every {every:.2f} s of wall; the driver "
             f"spends per trial {each.get('tracking', 0):.2f} s in tracking (MLflow "
             f"{each.get('tracking', 0) - each.get('parquet', 0):.2f} s, Parquet upsert "
             f"{each.get('parquet', 0):.2f} s) and {each.get('book', 0):.2f} s in the SweepBook "
             "(Optuna journal, trial files), the rest in Ray Tune; Tune's controller waits "
             "while the driver records")
    fn = sum(f for _, f in cost.finishes) / n
    return [
        Row("fixed cost per trial", f"wall x concurrency per trivially short trial, minus the "
            f"trial function's own time (trials {WARM_TRIALS} to {n} of one sweep, Ray up)",
            f"{per:.2f} s", f"sweep wall {cost.wall:.1f} s for {n} trials, trial function "
            f"{fn * 1e3:.0f} ms each (its report calls excluded); {parts}",
            **judge("fixed_cost_per_trial_s", per, parts)),
        Row("fixed cost per trial", "the sweep's own start: run_study until the first trial "
            "finished (Tune, the first workers' imports), not counted above",
            f"{cost.sweep_start():.1f} s", f"with Ray's start (below), (wall x concurrency - "
            f"trial seconds) / trials = "
            f"{(cost.wall + cost.ray_start_s) * cost.concurrency / n - fn:.2f} s",
            **judge("sweep_start_s", cost.sweep_start())),
        Row("fixed cost per trial", "Ray's start: ray.init as the engine calls it (embedded)",
            f"{cost.ray_start_s:.1f} s", "once per sweep, before run_study's own start",
            **judge("ray_start_s", cost.ray_start_s)),
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
