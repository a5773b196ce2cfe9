"""The driver's costs as a study grows, and `bkd-sweep plan` on the ImageNet study.

* engine epoch cost: what the sweep driver does per epoch report of a live trial (the
  pruning scheduler's ``on_trial_result``: the epoch log, the seed mean, Optuna's report and
  the pruner's decision) with 10 and with 10,000 finished trials in the study (the
  engine's SweepBook on its Optuna journal, no Ray: the finished trials are added to the
  journal directly, 3 seeds a configuration, 12 epochs each).
* plan: `bkd-sweep plan studies/imagenet_ablation.yaml` in a fresh process (what a user
  waits for), and where the time goes when it misses its target.

    python bench/scale_engine.py [engine] [plan] [--trials 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_common import Row, rows_table, say  # noqa: E402
from figures import TARGETS, judge  # noqa: E402

IMAGENET = REPO / "studies" / "imagenet_ablation.yaml"
ENGINE_STUDY = """
name: engine_scale
distill: {mode: none}
train: {epochs: 12}
search:
  sampler: random
  n_trials: 20000
  seeds: [0, 1, 2]
  params:
    distill.blur_ratio: {low: 0.0, high: 0.6}
    train.optimizer.lr: {low: 1.0e-4, high: 3.0e-2, log: true}
"""
EPOCHS = 12


def _epoch(n: int, top1: float) -> dict:
    from bkd_sweep.engine.worker import epoch_payload
    from bkd_sweep.records import EpochMetrics

    return epoch_payload(EpochMetrics(epoch=n, top1=top1, top5=top1, val_loss=1.0, loss=1.0,
                                      lr=0.1, wall_seconds=1.0))


def _finished(distributions: dict, count: int) -> list:
    """``count`` completed trials, 3 seeds a configuration, 12 reported epochs each."""
    from optuna.trial import create_trial

    trials = []
    for i in range(count):
        config = i // 3
        params = {"distill.blur_ratio": (config * 0.618) % 0.6,
                  "train.optimizer.lr": 1e-4 * (300 ** ((config * 0.381) % 1))}
        curve = {e: 40.0 + (config % 50) * (1 - 0.8 ** e) for e in range(1, EPOCHS + 1)}
        trials.append(create_trial(params=params, distributions=distributions,
                                   value=curve[EPOCHS], intermediate_values=curve,
                                   user_attrs={"seed": i % 3}))
    return trials


def _driver(directory: Path, stored: int):
    """A SweepBook with ``stored`` finished trials, its scheduler and searcher."""
    from bkd_sweep.config import load_study_text
    from bkd_sweep.engine.book import SweepBook
    from bkd_sweep.engine.scheduler import OptunaPruningScheduler
    from bkd_sweep.engine.searcher import OptunaSearcher

    book = SweepBook(load_study_text(ENGINE_STUDY).study, directory)
    book.open()
    searcher, scheduler = OptunaSearcher(book), OptunaPruningScheduler(book)
    searcher.suggest("ray-first")  # trial 0: gives the distributions
    if stored:
        book.optuna.add_trials(_finished(book.optuna.trials[0].distributions, stored))
    return book, searcher, scheduler


def epoch_seconds(directory: Path, stored: int, trials: int = 3) -> tuple[float, float]:
    """(median seconds of one epoch report, median seconds of asking for a new trial) with
    ``stored`` finished trials in the study; each of ``trials`` new trials reports 12
    epochs, high enough never to be pruned."""
    book, searcher, scheduler = _driver(directory, stored)
    report_s, ask_s = [], []
    for k in range(trials):
        start = time.perf_counter()
        live = SimpleNamespace(trial_id=f"ray-{k}", config=searcher.suggest(f"ray-{k}"))
        ask_s.append(time.perf_counter() - start)
        for n in range(1, EPOCHS + 1):
            start = time.perf_counter()
            scheduler.on_trial_result(None, live, _epoch(n, 99.0))
            report_s.append(time.perf_counter() - start)
    return statistics.median(report_s), statistics.median(ask_s)


def engine_profile(directory: Path, stored: int) -> str:
    from commands import profile_top

    book, searcher, scheduler = _driver(directory, stored)
    live = SimpleNamespace(trial_id="ray-p", config=searcher.suggest("ray-p"))
    scheduler.on_trial_result(None, live, _epoch(1, 99.0))  # one-off catch-up not profiled

    def epochs() -> None:
        for n in range(2, EPOCHS + 1):
            scheduler.on_trial_result(None, live, _epoch(n, 99.0))

    return profile_top(epochs, limit=3, libraries=("optuna",))


def engine_rows(workdir: Path, big: int = 10_000) -> list[Row]:
    say(f"engine: epoch reports with 10 and {big:,} finished trials in the study")
    small_report, small_ask = epoch_seconds(Path(workdir) / "engine_10", 10)
    built = time.perf_counter()
    big_report, big_ask = epoch_seconds(Path(workdir) / f"engine_{big}", big)
    built = time.perf_counter() - built
    ratio = big_report / small_report
    why = ""
    if not TARGETS["engine_epoch_cost_ratio_10k_vs_10"].met(ratio):
        why = engine_profile(Path(workdir) / "engine_profile", big)
    return [Row("costs at scale", f"sweep driver's work per epoch report, {big:,} finished "
                "trials in the study / 10 (pruner hyperband, 3 seeds)", f"{ratio:.2f}",
                f"{small_report * 1e3:.1f} ms vs {big_report * 1e3:.1f} ms per epoch report; "
                f"asking for a trial {small_ask * 1e3:.0f} ms vs {big_ask * 1e3:.0f} ms; "
                f"{big:,}-trial journal built and timed in {built:.0f} s" + (
                    f"; {why}" if why else ""),
                **judge("engine_epoch_cost_ratio_10k_vs_10", ratio, why))]


def plan_rows(workdir: Path) -> list[Row]:
    from commands import cli_seconds

    say("plan: bkd-sweep plan studies/imagenet_ablation.yaml")
    run = cli_seconds(["plan", str(IMAGENET)], 90, Path(workdir), line=0)
    why = ""
    if not TARGETS["plan_imagenet_s"].met(run.seconds) and run.seconds is not None:
        why = _plan_profile()
    return [Row("costs at scale", "`bkd-sweep plan studies/imagenet_ablation.yaml` (fresh "
                "process, imports included)", run.figure(), run.note + (f"; {why}" if why
                                                                      else ""),
                **run.judged("plan_imagenet_s", why))]


def _plan_profile() -> str:
    """The plan in a fresh interpreter under cProfile (imports are most of it)."""
    import subprocess

    code = ("import sys; sys.path.insert(0, %r)\n"
            "from commands import profile_top\n"
            "from bkd_sweep.cli import main\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    text = profile_top(lambda: main(['plan', %r]), limit=3, others=2)\n"
            "print(text)\n") % (str(HERE), str(IMAGENET))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    lines = done.stdout.strip().splitlines()
    return lines[-1] if done.returncode == 0 and lines else "profile failed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", choices=("engine", "plan"), default=["engine", "plan"])
    parser.add_argument("--trials", type=int, default=10_000)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bkd-bench-engine-"))
    rows = []
    if "engine" in args.parts:
        rows += engine_rows(workdir, args.trials)
    if "plan" in args.parts:
        rows += plan_rows(workdir)
    print(rows_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
