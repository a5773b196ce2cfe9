"""Costs as a study grows: recording a trial (ResultStore.upsert) at 10 and at 10,000 stored
trials, and `bkd-sweep results` / `bkd-sweep report` on 10,000 trials x 300 epochs.

The results set is synthetic (bench/studies/scale_10k.yaml: 3,334 configurations x 3 seeds,
300 epochs each, learning curves by distillation mode) and written through the public API,
``ResultStore.upsert`` one trial at a time, so the bench measures whatever the store is.
When upserts grow with the study (a store that rewrites whole tables), building 10,000
trials through them would take hours; the bench then writes the same rows the store's
upsert writes (its own ``trial_row`` / ``epoch_rows``, its two files) in one go, checks that
the public API reads them back, and times real upserts on top. Should neither work, the
upsert time at 10,000 is extrapolated from the sizes reached, and labelled so.

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
BUILD_BUDGET_S = 120.0  # upserts one by one up to this long, then the one-go writer
UPSERT_REPEATS = 3


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


def bulk_write(directory: Path, records: Records, count: int) -> bool:
    """Write trials 0..count-1 the way the store's upsert lays them out (its own row
    functions and files), then check the public API reads them all back. False when the
    store is not laid out that way (nothing usable written)."""
    import numpy as np
    import pyarrow as pa

    from bkd_sweep.fileio import write_parquet_atomic
    from bkd_sweep.tracking import store as store_module

    needed = ("trial_row", "epoch_rows", "trials_schema", "EPOCHS_SCHEMA", "_extra_param_types")
    if not all(hasattr(store_module, name) for name in needed):
        return False
    store = store_module.ResultStore(directory, study_name=records.study.name)
    if not (hasattr(store, "trials_path") and hasattr(store, "epochs_path")):
        return False
    rows = [store_module.trial_row(records.record(n), study=records.study.name)
            for n in range(count)]
    schema = store_module.trials_schema(store_module._extra_param_types(None, rows[0]))
    trials = pa.Table.from_pylist(rows, schema=schema)
    one = pa.Table.from_pylist(store_module.epoch_rows(records.record(0)),
                               schema=store_module.EPOCHS_SCHEMA)
    per = one.num_rows
    epochs = one.take(pa.array(np.tile(np.arange(per), count)))
    ids = pa.array(np.repeat(np.array([r["trial_id"] for r in rows], dtype=object), per),
                   pa.string())
    epochs = epochs.set_column(epochs.schema.get_field_index("trial_id"), "trial_id", ids)
    write_parquet_atomic(epochs.replace_schema_metadata(store_module.EPOCHS_SCHEMA.metadata),
                         store.epochs_path)
    write_parquet_atomic(trials.sort_by([("trial_number", "ascending")])
                         .replace_schema_metadata(schema.metadata), store.trials_path)
    return len(store_module.ResultStore(directory).trial_ids()) == count


@dataclass
class StoreScale:
    """Upsert seconds by stored trials, how the large sets were built, and where."""

    upsert_s: dict[int, float] = field(default_factory=dict)
    method: str = "upserts"  # "upserts" | "one-go writer" | "extrapolated"
    build_seconds: float = 0.0
    big_dir: Path | None = None  # the largest set, for results/report timing
    big_count: int = 0
    dirs: dict[int, Path] = field(default_factory=dict)  # trials stored -> a set that size

    def ratio(self, big: int, small: int = 10) -> float | None:
        if big in self.upsert_s and small in self.upsert_s:
            return self.upsert_s[big] / self.upsert_s[small]
        return None


def build_by_upserts(directory: Path, records: Records, target: int, scale: StoreScale,
                     budget_s: float) -> int:
    """Upsert trials one by one up to ``target`` (timing upserts at 10, 100, 1,000 and
    ``target``) or until ``budget_s`` is spent; returns the trials stored."""
    from bkd_sweep.tracking import ResultStore

    store = ResultStore(directory, study_name=records.study.name)
    records.write_study_json(directory)
    started, stored = time.perf_counter(), 0
    checkpoints = sorted({10, 100, 1000, target} - {t for t in (100, 1000) if t >= target})
    for mark in checkpoints:
        while stored < mark:
            store.upsert(records.record(stored))
            stored += 1
            if mark > 10 and time.perf_counter() - started > budget_s:
                return stored  # the baseline (10 stored) is always timed
        scale.upsert_s[mark] = time_upserts(store, records, stored)
        stored += 1
        say(f"scale: upsert with {mark} trials stored: {scale.upsert_s[mark] * 1e3:.0f} ms")
        projected = _projected_seconds(scale, target - stored)
        if projected > budget_s - (time.perf_counter() - started):
            return stored
    return stored


def _projected_seconds(scale: StoreScale, more: int) -> float:
    """Seconds ``more`` upserts would take, growing linearly from the timings so far."""
    sizes = sorted(scale.upsert_s)
    if len(sizes) < 2:
        return 0.0
    lo, hi = sizes[0], sizes[-1]
    slope = max(0.0, (scale.upsert_s[hi] - scale.upsert_s[lo]) / (hi - lo))
    return more * scale.upsert_s[hi] + slope * more * more / 2


def measure_store(workdir: Path, target: int = 10_000, epochs: int = 300,
                  budget_s: float = BUILD_BUDGET_S) -> StoreScale:
    """Upsert timings at 10 .. ``target`` stored trials, and a ``target``-trial set on disk."""
    from bkd_sweep.tracking import ResultStore

    records, scale = Records(epochs), StoreScale()
    started = time.perf_counter()
    by_upserts = Path(workdir) / "by_upserts"
    stored = build_by_upserts(by_upserts, records, target, scale, budget_s)
    scale.big_dir, scale.big_count = by_upserts, stored
    scale.dirs[stored] = by_upserts
    if target in scale.upsert_s:
        scale.build_seconds = time.perf_counter() - started
        return scale
    for size in sorted({min(1000, target), target} - set(scale.upsert_s)):
        directory = Path(workdir) / f"one_go_{size}"
        records.write_study_json(directory)
        say(f"scale: writing {size} trials x {epochs} epochs in one go (upserts grow with "
            "the study)")
        if not bulk_write(directory, records, size):
            break
        scale.upsert_s[size] = time_upserts(ResultStore(directory), records, size)
        say(f"scale: upsert with {size} trials stored: {scale.upsert_s[size] * 1e3:.0f} ms")
        scale.method, scale.big_dir, scale.big_count = "one-go writer", directory, size + 1
        scale.dirs[size + 1] = directory
    if target not in scale.upsert_s:  # neither way reached the target: extrapolate
        scale.method = "extrapolated"
        scale.upsert_s[target] = _extrapolated(scale, target)
    scale.build_seconds = time.perf_counter() - started
    return scale


def _extrapolated(scale: StoreScale, size: int) -> float:
    sizes = sorted(scale.upsert_s)
    lo, hi = sizes[0], sizes[-1]
    slope = (scale.upsert_s[hi] - scale.upsert_s[lo]) / max(1, hi - lo)
    return scale.upsert_s[hi] + slope * (size - hi)


# --------------------------------------------------------------------------------------
# bkd-sweep results / report on the large set


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
    the profile would take longer still) the largest set of at most 1,000 trials, said in
    the label."""
    if seconds is not None and seconds < 15:
        return scale.big_dir, ""
    small = max((n for n in scale.dirs if n <= 1001), default=None)
    if small is None:
        return scale.big_dir, ""
    return scale.dirs[small], f"profiled on {small:,} trials: "


def store_rows(scale: StoreScale, reads: ReadTimes | None, target: int, epochs: int
               ) -> list[Row]:
    sizes = ", ".join(f"{n}: {s * 1e3:.0f} ms" for n, s in sorted(scale.upsert_s.items()))
    label = {"upserts": "every trial upserted", "one-go writer": "the sizes past the "
             "build budget written in one go in the store's layout, upserts timed on them",
             "extrapolated": f"EXTRAPOLATED from upserts up to {scale.big_count} trials"}
    ratio = scale.ratio(target)
    why = (f"one upsert rewrites what is stored: {sizes}" if ratio and ratio > 1.5 else "")
    rows = [Row("costs at scale", f"one ResultStore.upsert with {target:,} trials stored / with "
                f"10 ({epochs} epochs each)", f"{ratio:.2f}" if ratio else "error",
                f"upsert by trials stored: {sizes}; {label[scale.method]}; build "
                f"{scale.build_seconds:.0f} s", **judge("record_cost_ratio_10k_vs_10", ratio,
                                                         why))]
    if reads is None:
        return rows
    on = f"{scale.big_count:,} trials x {epochs} epochs"
    short = (f"; only {scale.big_count:,} trials could be stored (upserts grow with the study "
             "and the one-go writer does not know this store's layout)"
             if scale.big_count < target else "")
    for key, run, prof in (("results_10k_s", reads.results, reads.results_profile),
                           ("report_10k_s", reads.report, reads.report_profile)):
        command = "results" if key.startswith("results") else "report"
        judged = run.judged(key, prof)
        if short and judged["met"] != "error":
            judged.update(met="error", value=None, why=short.removeprefix("; "))
        rows.append(Row("costs at scale", f"`bkd-sweep {command}` on {on} (fresh process, "
                        "imports included)", run.figure(),
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
