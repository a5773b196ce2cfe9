"""Sweep benches through the real engine (``bkd_sweep.engine.run_study`` on embedded Ray).

* efficiency: the quickstart study with seeds [0, 1] (16 trials; copied, results in a temp
  dir): sum of the trials' training seconds / (sweep wall seconds x concurrent trials), and
  the fixed cost per trial;
  Ray's own start + shutdown is timed separately in a fresh process.
* teacher reuse: teacher trainings in that sweep (weights files in its cache/teachers).
* pruning on real trials (a cross-check of bench/pruning.py's synthetic figure, not in the
  default run; in sweep_pruning.py): bench/studies/pruning_digits.yaml run with pruner none
  and with the default pruner (auto), same sampler and trial seeds: epochs and best top-1.

    python bench/sweep.py [efficiency|pruning|ray] ... [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_common import CpuSampler, Row, rows_table, say, verdict  # noqa: E402
from figures import TARGETS, judge  # noqa: E402

QUICKSTART = REPO / "studies" / "quickstart.yaml"
EFFICIENCY_TARGET = TARGETS["sweep_efficiency"].threshold
EFFICIENCY_SEEDS = [0, 1]  # 16 of the quickstart's 24 trials (the 16-trial figure)


def write_study_copy(source: Path, dest: Path, *, results_dir: Path,
                     changes: dict[str, Any] | None = None) -> Path:
    """Copy a study file with results in ``results_dir`` (and top-level section changes)."""
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    raw.setdefault("tracking", {})["results_dir"] = str(results_dir)
    for key, value in (changes or {}).items():
        section, _, leaf = key.partition(".")
        if leaf:
            raw.setdefault(section, {})[leaf] = value
        else:
            raw[section] = value
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return dest


@dataclass
class SweepRun:
    """One sweep through run_study and what its trials.parquet says."""

    name: str
    wall: float  # around run_study: Ray start and shutdown, tracking, every trial
    engine_wall: float  # SweepSummary.wall_seconds
    concurrency: int
    trials: Any  # DataFrame
    results_root: Path
    started_at: float = 0.0  # time.time() around run_study
    ended_at: float = 0.0
    driver_imports: tuple[str, ...] = ()  # torch & co. in this (the driver's) process after it
    cpu_before_first: float | None = None  # share of the CPUs busy before the first trial

    def first_start(self) -> float:
        """time.time() when the first trial's own seconds began."""
        return min(f.timestamp() - w for f, w in zip(self.trials["finished_at"],
                                                      self.trials["wall_seconds"]))

    def idle_parts(self) -> tuple[float, float, float]:
        """Idle slot seconds (start, end, between trials): before each slot's first trial
        (Ray, Tune, the first workers' imports, a teacher job holding the slot), after each
        slot's last one (records, Ray's shutdown), and the rest (trial turnover). Trials are
        put on slots as they started, as Tune reuses actors: on the slot freed last before
        the start, else on an unused one."""
        finished = [t.timestamp() for t in self.trials["finished_at"]]
        spans = sorted((f - w, f) for f, w in zip(finished, self.trials["wall_seconds"]))
        slots: list[list[tuple[float, float]]] = [[] for _ in range(self.concurrency)]
        for span in spans:
            freed = [s for s in slots if s and s[-1][1] <= span[0] + 0.05]
            unused = [s for s in slots if not s]
            slot = (max(freed, key=lambda s: s[-1][1]) if freed else unused[0] if unused
                    else min(slots, key=lambda s: s[-1][1]))
            slot.append(span)
        used = [s for s in slots if s]
        start = sum(s[0][0] - self.started_at for s in used)
        start += (len(slots) - len(used)) * (self.ended_at - self.started_at)
        end = sum(self.ended_at - s[-1][1] for s in used)
        idle = self.wall * self.concurrency - self.trial_seconds
        return start, end, idle - start - end

    @property
    def trial_seconds(self) -> float:
        return float(self.trials["wall_seconds"].sum())

    @property
    def count(self) -> int:
        return len(self.trials)


def run_sweep(study_file: Path) -> SweepRun:
    """Run a study with the engine in this process (from its directory) and load its results."""
    from bkd_sweep.engine import run_study
    from bkd_sweep.engine.ray_setup import concurrency
    from bkd_sweep.results import load
    from bkd_sweep.config import load_study

    loaded = load_study(study_file)
    study = loaded.study
    # embedded Ray (the bench measures this machine), results and teacher cache in the copy's
    # results_dir (a preset cache would hide the teacher training being counted)
    for name in ("RAY_ADDRESS", "BKD_RESULTS_DIR", "BKD_CACHE_DIR"):
        os.environ.pop(name, None)
    say(f"sweep: running {study.name} ({study_file})")
    started, started_at = time.perf_counter(), time.time()
    with CpuSampler() as cpu:
        summary = run_study(loaded, progress=True)
    wall, ended_at = time.perf_counter() - started, time.time()
    heavy = tuple(m for m in ("torch", "spikingjelly", "timm") if m in sys.modules)
    if not summary.ok:
        raise RuntimeError(f"sweep {study.name} did not finish: {summary.counts}")
    results = load(summary.results_dir)
    conc = concurrency(study, {"CPU": float(os.cpu_count() or 1)}, summary.total)
    run = SweepRun(study.name, wall, summary.wall_seconds, conc, results.trials,
                   summary.results_dir.parent, started_at, ended_at, heavy)
    run.cpu_before_first = cpu.busy_share(started_at, run.first_start())
    return run


def _fresh_dir(workdir: Path | None, name: str) -> Path:
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bkd-bench-"))
    path = base / name
    path.mkdir(parents=True, exist_ok=False)
    return path


# --------------------------------------------------------------------------------------
# Ray start


RAY_START_SCRIPT = """
import logging, time
from bkd_sweep.engine.ray_setup import shutdown_ray  # the engine's shutdown (imports ray)
started = time.perf_counter()
import ray
imported = time.perf_counter()
# the engine's embedded start (bkd_sweep.engine.ray_setup.init_ray): 384 MB object store
ray.init(object_store_memory=384 * 1024 * 1024, include_dashboard=False,
         logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
shutdown_ray()
print(time.perf_counter() - imported, imported - started)
"""


def ray_start_seconds() -> tuple[float, float]:
    """(ray.init + ray.shutdown seconds, import ray seconds) in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", RAY_START_SCRIPT], capture_output=True,
                          text=True, timeout=180, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"ray start failed: {last}")
    init, imp = proc.stdout.strip().splitlines()[-1].split()
    return float(init), float(imp)


def ray_rows(ray: tuple[float, float] | None) -> list[Row]:
    if ray is None:
        return []
    return [Row("sweep efficiency", "Ray start (ray.init + ray.shutdown, fresh process)",
                f"{ray[0]:.1f} s", f"import ray {ray[1]:.1f} s more",
                "- (reported)", "-")]


# --------------------------------------------------------------------------------------
# Efficiency and teacher reuse (one quickstart sweep)


@dataclass
class EfficiencyResult:
    run: SweepRun
    teacher_files: int
    distilling_trials: int
    teacher_train_seconds: float  # from the cache's metadata: its training loop alone
    teachers_first: bool = False  # the engine prepared the teacher as its own job (sweep.json)
    teacher_task_seconds: float = 0.0  # that task's own work (sweep.json): data, build, train,
    # evaluate, as a trial's seconds count its data, build, epochs and test

    @property
    def teacher_busy(self) -> float:
        """The teacher's share of busy time: its task's work (its training loop when no
        task's seconds are known, and none when trials trained it: it is in their seconds)."""
        if not self.teachers_first:
            return 0.0
        return self.teacher_task_seconds or self.teacher_train_seconds

    @property
    def efficiency(self) -> float:
        return self.run.trial_seconds / (self.run.wall * self.run.concurrency)

    @property
    def lock_wait_bound(self) -> float:
        """Upper bound on trial seconds spent waiting for another trial to train the shared
        teacher: each concurrent distilling trial may wait once for the whole training.
        Zero when the engine prepared the teacher as its own job before any trial that
        needs it started: no trial waits, the teacher's time is idle time in the wall."""
        if self.teachers_first:
            return 0.0
        waiting = min(self.run.concurrency - 1, max(0, self.distilling_trials - 1))
        return self.teacher_train_seconds * waiting

    @property
    def busy(self) -> float:
        """Slot seconds doing the sweep's work: the trials' training, plus the teacher's
        training when the engine ran it as its own job (it was part of a trial's seconds
        when a trial trained it), minus what trials can have spent waiting for it."""
        return self.run.trial_seconds + self.teacher_busy - self.lock_wait_bound

    @property
    def efficiency_without_wait(self) -> float:
        return self.busy / (self.run.wall * self.run.concurrency)

    @property
    def idle(self) -> float:
        return self.run.wall * self.run.concurrency - self.busy

    @property
    def fixed_per_trial(self) -> float:
        return (self.run.wall * self.run.concurrency - self.run.trial_seconds) / self.run.count


def efficiency(workdir: Path | None = None) -> EfficiencyResult:
    root = _fresh_dir(workdir, "efficiency")
    study_file = write_study_copy(QUICKSTART, root / "quickstart.yaml",
                                  results_dir=root / "results",
                                  changes={"search.seeds": EFFICIENCY_SEEDS})
    cwd = os.getcwd()
    os.chdir(root)  # nothing the sweep writes lands in the repository
    try:
        run = run_sweep(study_file)
    finally:
        os.chdir(cwd)
    cache = run.results_root / "cache" / "teachers"
    teachers = sorted(cache.glob("*.pt"))
    train_seconds = sum(float(json.loads(p.read_text()).get("train_seconds", 0.0))
                        for p in cache.glob("*.json"))
    distilling = int((run.trials["param.distill.mode"] != "none").sum())
    sweep_json = run.results_root / run.name / "sweep.json"
    prepared = json.loads(sweep_json.read_text()).get("teachers") if sweep_json.exists() else None
    task_seconds = sum(float(r.get("seconds", 0.0)) for r in prepared or () if r.get("trained"))
    return EfficiencyResult(run, len(teachers), distilling, train_seconds, bool(prepared),
                            task_seconds)


def _idle_reason(result: EfficiencyResult) -> str:
    run = result.run
    start, end, _ = run.idle_parts()
    teacher = result.teacher_busy
    start -= teacher  # the teacher's job is busy time on the slot it held first
    between = result.idle - start - end
    held = (f"; the teacher job's {teacher:.0f} s of work on one slot count as busy"
            if teacher else "")
    cpu = run.cpu_before_first
    bound = ("" if cpu is None else f"; the machine's CPUs were {cpu:.0%} busy in the "
             f"{run.first_start() - run.started_at:.0f} s before the first trial began, so "
             "this start is CPU work (Ray's processes, imports), not waiting")
    return (f"idle slot time {result.idle:.0f} s of {run.wall * run.concurrency:.0f} s "
            f"({run.concurrency} slots x {run.wall:.0f} s): {start:.0f} s before the slots' "
            f"first trials (Ray's start, the driver's setup, Tune, each new worker process "
            f"and its imports{held}{bound}), {end:.0f} s after their "
            f"last (the slots' uneven ends, records, Ray's shutdown), {between:.0f} s between "
            f"trials ({between / run.count:.2f} s a trial)"
            + (f", teacher wait up to {result.lock_wait_bound:.1f} s"
               if result.lock_wait_bound else ""))


def efficiency_rows(result: EfficiencyResult) -> list[Row]:
    run = result.run
    return [
        Row("sweep efficiency",
            f"sum(trial s) / (sweep wall x {run.concurrency} concurrent), quickstart "
            f"({run.count} trials)", f"{result.efficiency:.3f}",
            f"trials {run.trial_seconds:.1f} s, sweep wall {run.wall:.1f} s (engine's own "
            f"{run.engine_wall:.1f} s); the driver's process imported "
            f"{', '.join(run.driver_imports) or 'none of torch, spikingjelly, timm'}",
            f">= {EFFICIENCY_TARGET:.2f}",
            verdict(result.efficiency >= EFFICIENCY_TARGET)),
        Row("sweep efficiency", f"busy seconds / (sweep wall x {run.concurrency} "
            f"concurrent), quickstart ({run.count} trials), teacher wait counted: "
            + ("busy = the trials' seconds + the teacher job's (the engine prepares it "
               "first, as a Tune trial of its own; it used to be inside a trial's seconds)"
               if result.teachers_first else "minus the most a concurrent trial can have "
               "waited for the teacher's training (lower bound)"),
            f"{result.efficiency_without_wait:.3f}",
            (f"trials {run.trial_seconds:.1f} s + teacher job {result.teacher_busy:.1f} s "
             f"(data, build, training {result.teacher_train_seconds:.1f} s, evaluation; "
             "trained once as a Tune trial of its own, beside the trials that need none, its "
             "actor then reused by the next trial: no trial waited on it)") if result.teachers_first else
            (f"teacher trained once in {result.teacher_train_seconds:.1f} s; up to "
             f"{result.lock_wait_bound:.1f} s of trial time was waiting for it"),
            **judge("sweep_efficiency", result.efficiency_without_wait,
                    _idle_reason(result))),
        Row("sweep efficiency", "fixed cost per trial (wall x concurrency - sum trial s) / "
            "trials", f"{result.fixed_per_trial:.2f} s",
            f"mean trial {run.trial_seconds / run.count:.1f} s", "- (reported)", "-"),
        Row("teacher reuse", f"teacher trainings per study (quickstart, "
            f"{result.distilling_trials} distilling trials)", str(result.teacher_files),
            "weights files in results/cache/teachers after the sweep", "1",
            verdict(result.teacher_files == 1)),
    ]


PARTS = ("ray", "efficiency", "pruning")  # pruning: real trials, not in run.py's default


def run_part(name: str, workdir: Path | None = None) -> list[Row]:
    if name == "ray":
        return ray_rows(ray_start_seconds())
    if name == "efficiency":
        return efficiency_rows(efficiency(workdir))
    if name == "pruning":
        from sweep_pruning import pruning, pruning_rows

        return pruning_rows(pruning(workdir))
    raise ValueError(f"unknown sweep part {name!r}; valid: {', '.join(PARTS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", choices=PARTS, default=list(PARTS))
    parser.add_argument("--workdir", type=Path, help="where the studies' results go "
                        "(default: a new temp dir)")
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bkd-bench-"))
    rows = [row for part in args.parts for row in run_part(part, workdir)]
    print()
    print(rows_table(rows))
    print(f"\nstudy copies and their results are kept in {workdir}")
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
