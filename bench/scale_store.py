"""Costs as a study grows: recording a trial (ResultStore.upsert) at 10 and at 10,000 stored
trials, and `bkd-sweep results` / `bkd-sweep report` on 10,000 trials x 300 epochs.

The results set is synthetic (bench/studies/scale_10k.yaml: 3,334 configurations x 3 seeds,
300 epochs each, learning curves by distillation mode) and written through the public API,
``ResultStore.upsert`` one trial at a time (by 2 processes between the timed sizes; the
timed upserts run alone). Upserts are timed with 10, 100 and 1,000 trials stored (a fresh
set each run) and with 10,000 (the large set, kept between runs by bench/scale_cache.py:
input, not a measurement), then the snapshot a sweep's tracker writes (``compact()``) after
that one more trial, then `bkd-sweep results` and `bkd-sweep report` on the large set.
Should the large set not fit BUILD_BUDGET_S at the pace measured (a store whose upserts grow
with the study), the upsert time at 10,000 is extrapolated, labelled so, and the reads are
not judged.

    python bench/scale_store.py [--trials 10000] [--epochs 300]
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import Row, rows_table, say, time_left  # noqa: E402
from figures import TARGETS, judge  # noqa: E402
from commands import CliRun, cli_seconds, profile_top  # noqa: E402

STUDY = HERE / "studies" / "scale_10k.yaml"
MODES = {"none": 80.0, "logit": 84.0, "bkd": 85.0, "mixed": 87.0}
BUILD_BUDGET_S = 600.0  # the large set is built when its upserts fit this at the pace measured
WORKERS = 2  # processes upserting the set (timed upserts run alone)
UPSERT_REPEATS = 3
INTERLEAVED = 15  # upserts at 10 and at 10,000 stored, taken in turn


class Records:
    """Synthetic TrialRecords of scale_10k.yaml (trial i: configuration i // 3, seed i % 3);
    the 300-epoch histories are shared per (mode, time-steps), values vary per trial."""

    def __init__(self, epochs: int = 300):
        from bkd_sweep.config import load_study

        self.loaded = load_study(STUDY)
        self.study = self.loaded.study
        self.epochs = epochs
        base = self.study.trial_config({}, 0).model_dump(mode="json")
        self.template = base
        self.results: dict[tuple[str, int], Any] = {}
        for mode, plateau in MODES.items():
            for steps in (2, 4):
                self.results[mode, steps] = self._result(plateau - (2 if steps == 2 else 0))

    def _result(self, plateau: float):
        from bkd_sweep.records import EnergyReport, EpochMetrics, TrialResult

        history = [EpochMetrics(epoch=e, top1=plateau * (1 - math.exp(-e / 40)),
                                top5=min(100.0, plateau + 8), val_loss=1.0 + 50 / e,
                                loss=1.0 + 40 / e, lr=1e-3, wall_seconds=30.0,
                                loss_terms={"task": 1.0, "logit": 0.5, "bkd": 0.1})
                   for e in range(1, self.epochs + 1)]
        energy = EnergyReport(energy_mj=0.2, sops=1e7, macs=1e6, mean_firing_rate=0.15,
                              timesteps=4, e_mac_pj=4.6, e_ac_pj=0.9, first_layer_once=True)
        return TrialResult.from_history("completed", history, config=self.template,
                                        config_hash="0" * 16, wall_seconds=9000.0, devices=1,
                                        device="cuda", energy=energy, test_top1=plateau - 1)

    def params(self, number: int) -> dict[str, Any]:
        rng = random.Random(f"config|{number // 3}")
        return {"distill.mode": rng.choice(list(MODES)), "student.timesteps": rng.choice([2, 4]),
                "distill.blur_ratio": round(rng.uniform(0.0, 0.6), 4),
                "train.optimizer.lr": float(f"{10 ** rng.uniform(-4, math.log10(3e-2)):.4g}")}

    def record(self, number: int):
        from bkd_sweep.records import TrialRecord, trial_id_of

        params, seed = self.params(number), number % 3
        config = copy.deepcopy(self.template)
        config["distill"]["mode"] = params["distill.mode"]
        config["student"]["timesteps"] = params["student.timesteps"]
        config["distill"]["blur_ratio"] = params["distill.blur_ratio"]
        config["train"]["optimizer"]["lr"] = params["train.optimizer.lr"]
        config["seed"] = seed
        shared = self.results[params["distill.mode"], params["student.timesteps"]]
        noise = random.Random(f"trial|{number}").gauss(0, 0.8)
        energy = shared.energy.model_copy(update={"energy_mj": 0.05 * params["student.timesteps"]
                                                  * (1 + params["distill.blur_ratio"])})
        result = shared.model_copy(update={
            "config": config, "config_hash": f"{number:016x}", "config_id": f"c{number // 3:06d}",
            "val_top1": shared.val_top1 + noise, "test_top1": shared.test_top1 + noise,
            "energy": energy})
        return TrialRecord(trial_id=trial_id_of(number), trial_number=number, params=params,
                           seed=seed, result=result)

    def write_study_json(self, directory: Path) -> None:
        from bkd_sweep.fileio import write_json_atomic
        from bkd_sweep.tracking.store import STUDY_FILE

        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.study.model_dump(mode="json"), directory / STUDY_FILE)


# --------------------------------------------------------------------------------------
# Building a store and timing upserts


def time_upserts(store, records: Records, number: int, repeats: int = UPSERT_REPEATS) -> float:
    """Median seconds of one upsert of a new trial ``number`` (then re-upserts of it, the
    same work: replace that trial's rows) with ``number`` trials stored before."""
    record = records.record(number)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        store.upsert(record)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _upsert_range(directory: str, epochs: int, lo: int, hi: int) -> int:
    """Upsert trials lo .. hi-1 (in a worker process: its own Records)."""
    from bkd_sweep.tracking import ResultStore

    records = Records(epochs)
    store = ResultStore(Path(directory), study_name=records.study.name)
    for number in range(lo, hi):
        store.upsert(records.record(number))
    return hi - lo


def fill(directory: Path, records: Records, lo: int, hi: int) -> None:
    """Upsert trials lo .. hi-1 through the public API, in WORKERS processes when there are
    many (the store takes one writer per trial; nothing here is timed)."""
    if hi - lo < 200:
        _upsert_range(str(directory), records.epochs, lo, hi)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    bounds = [lo + (hi - lo) * k // WORKERS for k in range(WORKERS + 1)]
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = pool.map(_upsert_range, [str(directory)] * WORKERS, [records.epochs] * WORKERS,
                        bounds[:-1], bounds[1:])
        assert sum(done) == hi - lo


@dataclass
class StoreScale:
    """Upsert seconds by trials stored, the snapshot after one more trial, the sets."""

    upsert_s: dict[int, float] = field(default_factory=dict)
    compact_s: dict[int, float] = field(default_factory=dict)  # by trials stored before
    method: str = "upserts"  # "upserts" | "extrapolated"
    build_seconds: float | None = None  # None: the large set came from the cache
    big_dir: Path | None = None  # the large set, for results/report timing
    big_count: int = 0
    small_dir: Path | None = None  # the up-to-1,000-trial set (profiles)
    epochs: int = 300

    def ratio(self, big: int, small: int = 10) -> float | None:
        if big in self.upsert_s and small in self.upsert_s:
            return self.upsert_s[big] / self.upsert_s[small]
        return None


def _time_compact(store, scale: StoreScale, stored: int) -> None:
    """The snapshot a sweep's tracker writes every 100 trials and at the end (when the
    store has one), timed with one trial not in the previous snapshot."""
    if hasattr(store, "compact"):
        start = time.perf_counter()
        store.compact()
        scale.compact_s[stored] = time.perf_counter() - start


def build_small(directory: Path, records: Records, marks: list[int], scale: StoreScale) -> None:
    """Upserts timed with each of ``marks`` trials stored (trial number = mark, new); at
    the last mark also the snapshot after that one more trial."""
    from bkd_sweep.tracking import ResultStore

    store = ResultStore(directory, study_name=records.study.name)
    records.write_study_json(directory)
    stored = 0
    for mark in marks:
        fill(directory, records, stored, mark)
        if mark == marks[-1] and hasattr(store, "compact"):
            store.compact()  # untimed: the earlier trials are in a snapshot, as mid-sweep
        scale.upsert_s[mark] = time_upserts(store, records, mark)
        stored = mark + 1
        say(f"scale: upsert with {mark:,} trials stored: {scale.upsert_s[mark] * 1e3:.0f} ms")
    _time_compact(store, scale, marks[-1])
    scale.small_dir = directory


def interleaved_upserts(directory: Path, records: Records, big_store, target: int
                        ) -> tuple[float, float]:
    """Median upsert seconds with 10 trials stored and with ``target``, one of each in turn
    (INTERLEAVED rounds): both sizes under the same machine load, so their ratio is not
    the drift between two moments of a shared machine."""
    from bkd_sweep.tracking import ResultStore

    records.write_study_json(directory)
    fill(directory, records, 0, 10)
    small_store = ResultStore(directory, study_name=records.study.name)
    small, large = [], []
    for _ in range(INTERLEAVED):
        small.append(time_upserts(small_store, records, 10, repeats=1))
        large.append(time_upserts(big_store, records, target, repeats=1))
    return statistics.median(small), statistics.median(large)


def measure_store(workdir: Path, target: int = 10_000, epochs: int = 300,
                  budget_s: float = BUILD_BUDGET_S, cache: Path | None = None) -> StoreScale:
    """Upsert timings at 10 .. ``target`` stored trials, the snapshot after one more, and a
    ``target``-trial set (from the cache, or built through upserts when the pace measured
    fits ``budget_s``)."""
    from bkd_sweep.tracking import ResultStore
    from scale_cache import build_set, cached_set

    records, scale = Records(epochs), StoreScale(epochs=epochs)
    build_small(Path(workdir) / "small", records, [m for m in (10, 100, 1000) if m < target],
                scale)
    big = cached_set(target, epochs, cache)
    if big is None:
        top = max(scale.upsert_s)
        pace = scale.upsert_s[top] / WORKERS
        if 2 * target * pace > budget_s:  # upserts and the snapshot would not fit
            scale.method = "extrapolated"
            scale.upsert_s[target] = _extrapolated(scale, target)
            scale.big_dir, scale.big_count = scale.small_dir, top + 1
            return scale
        say(f"scale: building {target:,} trials x {epochs} epochs through upserts "
            f"(~{target * pace:.0f} s; kept for the next runs)")
        big, scale.build_seconds = build_set(records, target, fill, cache)
    store = ResultStore(big, study_name=records.study.name)
    scale.upsert_s[target] = time_upserts(store, records, target)  # new, or its own again
    small, large = interleaved_upserts(Path(workdir) / "ten", records, store, target)
    scale.upsert_s[10], scale.upsert_s[target] = small, large
    say(f"scale: upsert with {target:,} trials stored: {large * 1e3:.1f} ms, with 10: "
        f"{small * 1e3:.1f} ms (medians of {INTERLEAVED} interleaved)")
    _time_compact(store, scale, target)
    scale.big_dir, scale.big_count = big, target + 1
    return scale


def _extrapolated(scale: StoreScale, size: int) -> float:
    """A straight line through the smallest and largest sizes timed."""
    sizes = sorted(scale.upsert_s)
    lo, hi = sizes[0], sizes[-1]
    slope = (scale.upsert_s[hi] - scale.upsert_s[lo]) / max(1, hi - lo)
    return scale.upsert_s[hi] + slope * (size - hi)


@dataclass
class ReadTimes:
    results: CliRun
    report: CliRun
    report_profile: str = ""
    results_profile: str = ""


def time_reads(scale: StoreScale, workdir: Path, profile: bool = True) -> ReadTimes:
    """`bkd-sweep results DIR` and `bkd-sweep report DIR` on the large set (fresh processes);
    profiled in-process when they miss their targets."""
    directory, out = scale.big_dir, Path(workdir) / "report"
    say(f"scale: bkd-sweep results / report on {scale.big_count} trials")
    results = cli_seconds(["results", str(directory)], 90, workdir, 0)
    limit = max(30.0, min(180.0, time_left() - 100))  # room left for a profile after it
    report = cli_seconds(["report", str(directory), "--out", str(out), "--no-mlflow"], limit,
                         workdir)
    for run in (results, report):  # the temp folder says nothing to a reader
        run.note = run.note.replace(str(directory), "<results>").replace(str(out), "<report>")
    times = ReadTimes(results, report)
    profile = profile and time_left() > 60
    if profile and not TARGETS["report_10k_s"].met(report.seconds):
        from bkd_sweep.report import build_report

        where, label = _profile_set(scale, report.seconds)
        times.report_profile = label + profile_top(lambda: build_report(where, out))
    if profile and not TARGETS["results_10k_s"].met(results.seconds):
        from bkd_sweep.results import load, summary_table

        where, label = _profile_set(scale, results.seconds)
        times.results_profile = label + profile_top(lambda: summary_table(load(where)))
    return times


def _profile_set(scale: StoreScale, seconds: float | None) -> tuple[Path, str]:
    """Where to profile a slow read: the large set, or (when the read took over 15 s there:
    under the profiler it would take several times that) the small set, said in the label."""
    if seconds is not None and seconds < 15 or scale.small_dir is None:
        return scale.big_dir, ""
    return scale.small_dir, "profiled on 1,001 trials: "


def store_rows(scale: StoreScale, reads: ReadTimes | None, target: int, epochs: int
               ) -> list[Row]:
    sizes = ", ".join(f"{n:,}: {s * 1e3:.1f} ms" for n, s in sorted(scale.upsert_s.items()))
    if scale.method == "upserts":
        sizes += (f" (10 and {target:,}: medians of {INTERLEAVED} taken in turn; 100 and "
                  "1,000: on the growing set)")
    compact = ", ".join(f"{n:,}: {s:.1f} s" for n, s in sorted(scale.compact_s.items()))
    built = {"upserts": "the 10,000-trial set " + (
        "from the bench cache (built through upserts by an earlier run of this code)"
        if scale.build_seconds is None else
        f"built through upserts in this run ({WORKERS} processes, {scale.build_seconds:.0f} s)"),
        "extrapolated": f"EXTRAPOLATED: at the pace measured the {target:,} upserts would "
        f"not fit the build budget"}[scale.method]
    ratio = scale.ratio(target)
    why = f"upsert by trials stored: {sizes}" if ratio and ratio > 1.5 else ""
    detail = (f"upsert by trials stored: {sizes}; {built}" + (
        f"; the snapshot (compact(): the tracker writes one every 100 trials and at the end) "
        f"after one more trial, by trials stored: {compact}" if compact else ""))
    rows = [Row("costs at scale", f"one ResultStore.upsert with {target:,} trials stored / with "
                f"10 ({epochs} epochs each)", f"{ratio:.2f}" if ratio else "error", detail,
                **judge("record_cost_ratio_10k_vs_10", ratio, why))]
    if reads is None:
        return rows
    on = f"{scale.big_count:,} trials x {epochs} epochs"
    short = (f"; only {scale.big_count:,} trials stored (the large set was not built)"
             if scale.big_count < target else "")
    for key, run, prof in (("results_10k_s", reads.results, reads.results_profile),
                           ("report_10k_s", reads.report, reads.report_profile)):
        command = "results" if key.startswith("results") else "report"
        judged = run.judged(key, prof)
        if short and judged["met"] != "error":
            judged.update(met="error", value=None, why=short.removeprefix("; "))
        rows.append(Row("costs at scale", f"`bkd-sweep {command}` on {on}, compacted (fresh "
                        "process, imports included)", run.figure(),
                        run.note + (f"; {prof}" if prof else "") + short, **judged))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--budget", type=float, default=BUILD_BUDGET_S)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bkd-bench-scale-"))
    scale = measure_store(workdir, args.trials, args.epochs, args.budget)
    rows = store_rows(scale, time_reads(scale, workdir), args.trials, args.epochs)
    print(rows_table(rows))
    print(f"results kept in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
