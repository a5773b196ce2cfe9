"""Run the benches, write bench/results.json and, from it, bench/RESULTS.md (`make bench`).

Each part runs in its own process with a time limit, so a failing part shows
``error: <reason>`` in its rows (its named figures included) and the others still report.
A full run plans for BUDGET_S (15 minutes): each part's time
limit leaves the parts after it their typical time, but is never under 1.5 x its own, so on
a shared, slow machine the run stretches (parts starting more than GRACE_S past the budget
are skipped) instead of cutting parts short. Optional parts run only when the budget has
room for them. A part or a figure can be run alone:

    python bench/run.py                                  # everything: results.json + RESULTS.md
    python bench/run.py --only pruning_speedup,plan      # figure keys or part names
    python bench/run.py --only store --out /tmp/x.json   # a partial results file elsewhere
    python bench/run.py --list                           # the parts and their figures

A partial run never rewrites bench/results.json or bench/RESULTS.md (their figures come
from one run).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import (DEADLINE_ENV, KEYS_ENV, Row, error_row, machine, rows_table,  # noqa: E402
                          say, time_left)
import figures  # noqa: E402
from notes import NOTES  # noqa: E402

BUDGET_S = 15 * 60  # what a full run plans for
GRACE_S = 5 * 60  # how far past it a shared, slow machine may run before parts are skipped
SLACK = 1.5  # a part's limit is at least this many times its typical time
PAIR_BUDGET_S = 40  # timed rounds per step-timing pair stop past this (at least 5 rounds)


@dataclass(frozen=True)
class Part:
    key: str
    title: str
    run: Callable[[Path], list[Row]]  # the part, given a fresh work folder
    limit_s: int  # wall limit of the part's process
    keys: tuple[str, ...] = ()  # the named figures it measures
    typical_s: int = 60  # what it takes on 2 busy cores (optional parts need this much left)
    optional: bool = False  # run only when the budget has room (never an error row)
    tiny: Callable[[Path], list[Row]] | None = None  # a seconds-long version (tests)
    cold_s: Callable[[], int] | None = None  # extra typical seconds on a first run


def _step(workdir: Path) -> list[Row]:
    import step_overhead

    total = max(20.0, min(100.0, time_left() - 30))  # model builds and imports take the rest
    return step_overhead.rows(step_overhead.run(warmup=2, repeats=7, total_s=total,
                                                budget_s=min(PAIR_BUDGET_S, total / 3)))


def _loop(workdir: Path) -> list[Row]:
    import loop_overhead

    total = max(20.0, min(70.0, time_left() - 25))
    return loop_overhead.rows(loop_overhead.run(warmup=2, repeats=7, total_s=total,
                                                budget_s=min(PAIR_BUDGET_S, total / 3)))


def _sweep(part: str) -> Callable[[Path], list[Row]]:
    def run(workdir: Path) -> list[Row]:
        import sweep

        return sweep.run_part(part, workdir)

    return run


def _module_part(module: str, part: str) -> Callable[[Path], list[Row]]:
    def run(workdir: Path) -> list[Row]:
        return __import__(module).run_part(part, workdir)

    return run


def _store(workdir: Path) -> list[Row]:
    import scale_store

    scale = scale_store.measure_store(workdir)
    return scale_store.store_rows(scale, scale_store.time_reads(scale, workdir), 10_000, 300)


def _store_tiny(workdir: Path) -> list[Row]:
    import scale_store

    scale = scale_store.measure_store(workdir, target=40, epochs=5, budget_s=30.0,
                                      cache=workdir / "cache")
    return scale_store.store_rows(scale, None, 40, 5)


def _store_cold_s() -> int:
    """Extra seconds the store part needs when the large set is not in the cache yet."""
    from scale_cache import cached_set

    return 0 if cached_set(10_000, 300) else 360


def _engine(big: int) -> Callable[[Path], list[Row]]:
    def run(workdir: Path) -> list[Row]:
        import scale_engine

        return scale_engine.engine_rows(workdir, big)

    return run


def _plan(workdir: Path) -> list[Row]:
    import scale_engine

    return scale_engine.plan_rows(workdir)


def _memory(workdir: Path) -> list[Row]:
    import memory

    return memory.rows(memory.run())


SYNTHETIC_KEYS = ("fixed_cost_per_trial_s", "sweep_start_s", "ray_start_s", "pruning_speedup",
                  "pruning_top1_loss_pts", "seed_promotion_speedup")
PARTS = [  # in the order a full run takes them (each named figure once)
    Part("plan", "plan on the ImageNet study", _plan, 120, ("plan_imagenet_s",), 30),
    Part("engine", "sweep driver at 10,000 trials", _engine(10_000), 240,
         ("engine_epoch_cost_ratio_10k_vs_10",), 40, tiny=_engine(40)),
    Part("synthetic", "fixed cost, pruning, seed promotion (synthetic trials, one Ray)",
         _module_part("pruning", "synthetic"), 720, SYNTHETIC_KEYS, 300),
    Part("efficiency", "sweep efficiency + teacher reuse", _sweep("efficiency"), 480,
         ("sweep_efficiency",), 250),
    Part("step", "BKD step overhead", _step, 300, ("bkd_overhead",), 150),
    Part("loop", "our step vs plain spikingjelly", _loop, 300,
         ("ours_over_plain_sj", "ours_compiled_over_plain_sj"), 160),
    Part("pair", "bkd-sweep vs plain Ray Tune", _module_part("tune_pair", "pair"), 600,
         ("wall_vs_plain_tune",), 330),
    Part("store", "recording, results and report at 10,000 trials", _store, 900,
         ("record_cost_ratio_10k_vs_10", "results_10k_s", "report_10k_s"), 130,
         tiny=_store_tiny, cold_s=_store_cold_s),
    Part("memory", "memory vs T", _memory, 240, (), 150, optional=True),
    Part("ray", "Ray start (fresh process)", _sweep("ray"), 120, (), 20, optional=True),
    Part("pruning_real", "pruning on real trials", _sweep("pruning"), 480, (), 300,
         optional=True),
]
ALIASES = {"fixed": ("synthetic", SYNTHETIC_KEYS[:3]), "pruning": ("synthetic", SYNTHETIC_KEYS[3:5]),
           "promotion": ("synthetic", SYNTHETIC_KEYS[5:])}  # pieces of a part, by name
BY_KEY = {p.key: p for p in PARTS}
DEFAULT = [p.key for p in PARTS if p.key not in ("ray", "pruning_real")]


def parts_for(only: str | None) -> dict[str, tuple[str, ...]]:
    """Parts to run for ``--only`` (figure keys, part names or piece names, comma-separated),
    each with the figures asked of it (empty: all of them)."""
    if not only:
        return {key: () for key in DEFAULT}
    chosen: dict[str, tuple[str, ...]] = {}
    for name in (n.strip() for n in only.split(",") if n.strip()):
        if name in BY_KEY:
            chosen[name] = ()
            continue
        part, keys = ALIASES.get(name, (None, (name,)))
        owners = [p.key for p in PARTS if p.key == part or name in p.keys]
        if not owners:
            known = sorted(set(BY_KEY) | set(ALIASES) | {k for p in PARTS for k in p.keys})
            raise SystemExit(f"--only {name!r}: not a part or figure; known: {', '.join(known)}")
        for owner in owners:
            if chosen.get(owner, None) != ():
                chosen[owner] = tuple(dict.fromkeys(chosen.get(owner, ()) + keys))
    return chosen


def failed_rows(part: Part, reason: str, asked: tuple[str, ...] = ()) -> list[Row]:
    if part.keys:
        return figures.error_rows(asked or part.keys, part.title, reason)
    return [error_row(part.title, reason)]


# --------------------------------------------------------------------------------------
# One part in a child process


def _kill_group(proc: subprocess.Popen, fired: threading.Event | None = None) -> None:
    """Stop a part's process and the processes it started (its own session)."""
    if fired is not None:
        fired.set()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # already gone
        pass


def _reason(lines: list[str], returncode: int) -> str:
    for line in reversed(lines):
        text = line.strip()
        if text and ("Error" in text or "error:" in text or "Exception" in text):
            return text
    tail = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return f"exit code {returncode}" + (f": {tail}" if tail else "")


def _is_progress(line: str) -> bool:
    """Our own progress lines (not library chatter)."""
    return line.strip().startswith(("step overhead:", "loop overhead:", "memory:", "sweep:",
                                    "round", "scale:", "engine:", "plan:"))


def run_part_process(part: Part, limit_s: float, asked: tuple[str, ...] = ()) -> list[Row]:
    """Run one part in a child process (told its deadline and the figures ``asked`` of it,
    none: all), relaying its progress; error rows on any failure."""
    with tempfile.TemporaryDirectory(prefix=f"bkd-bench-{part.key}-",
                                     ignore_cleanup_errors=True) as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part.key,
               "--child-json", str(out)]
        env = {k: v for k, v in os.environ.items() if k != KEYS_ENV}
        env[DEADLINE_ENV] = str(time.time() + limit_s)
        if asked:
            env[KEYS_ENV] = ",".join(asked)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=tmp, start_new_session=True, env=env)
        fired = threading.Event()
        timer = threading.Timer(limit_s, _kill_group, args=(proc, fired))
        timer.start()
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                if _is_progress(line):
                    say(f"  [{part.key}] {line.rstrip()}")
            proc.wait()
        finally:
            timer.cancel()
            _kill_group(proc)  # Ray helpers a part may have left behind
        if proc.returncode == 0 and out.exists():
            return [Row(**r) for r in json.loads(out.read_text())]
        reason = (f"timed out after {limit_s:.0f} s" if fired.is_set()
                  else _reason(lines, proc.returncode))
        return failed_rows(part, reason, asked)


def child(key: str, json_path: Path) -> int:
    workdir = Path.cwd() / "work"  # the part's temp dir (run_part_process's child cwd)
    workdir.mkdir()
    rows = BY_KEY[key].run(workdir)
    json_path.write_text(json.dumps([r.to_dict() for r in rows]))
    return 0


# --------------------------------------------------------------------------------------
# The run


def run_parts(chosen: dict[str, tuple[str, ...]], budget_s: float = BUDGET_S) -> list[Row]:
    """Each part gets its limit, but no more than leaves the parts after it their typical
    time, and never less than SLACK x its own: one slow part cannot starve the rest, and a
    shared machine stretches the run (up to GRACE_S past the budget) rather than cutting
    parts short."""
    started = time.perf_counter()
    rows: list[Row] = []
    keys = list(chosen)
    typical = {k: BY_KEY[k].typical_s + (BY_KEY[k].cold_s() if BY_KEY[k].cold_s else 0)
               for k in keys}
    for i, key in enumerate(keys):
        part = BY_KEY[key]
        reserve = sum(typical[k] for k in keys[i + 1:] if not BY_KEY[k].optional)
        left = budget_s - (time.perf_counter() - started)
        if part.optional and left < typical[key]:
            say(f"== {part.title}: skipped ({left:.0f} s of the budget left, it takes "
                f"~{typical[key]} s)")
            continue
        if left < -GRACE_S:
            rows += failed_rows(part, f"skipped: the run is {-left:.0f} s past its "
                                f"{budget_s / 60:.0f}-minute budget", chosen[key])
            continue
        limit = min(part.limit_s, max(SLACK * typical[key], left - reserve))
        say(f"== {part.title} (limit {limit:.0f} s)")
        part_start = time.perf_counter()
        rows += run_part_process(part, limit, chosen[key])
        say(f"   done in {time.perf_counter() - part_start:.0f} s")
    return rows


def run_info(keys: list[str], seconds: float, command: str) -> dict:
    return {"date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "minutes": round(seconds / 60, 2), "command": command, "parts": keys,
            "complete": set(keys) >= set(DEFAULT), "machine": machine(),
            "load_average": _load()}


def _load() -> list[float] | None:
    try:
        return [round(x, 1) for x in os.getloadavg()]
    except OSError:
        return None


def write_outputs(rows: list[Row], info: dict, json_path: Path | None, markdown: bool) -> dict:
    doc = figures.results_document(rows, info)
    if json_path is not None:
        figures.write_json(doc, json_path)
        say(f"wrote {json_path}")
    if markdown:
        figures.write_markdown(doc, NOTES)
        say(f"wrote {figures.RESULTS_MD}")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated figure keys or part names")
    parser.add_argument("--out", type=Path, help="write a partial run's results JSON here")
    parser.add_argument("--list", action="store_true", help="list the parts and exit")
    parser.add_argument("--child", choices=list(BY_KEY), help=argparse.SUPPRESS)
    parser.add_argument("--child-json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.child_json)
    if args.list:
        for p in PARTS:
            extra = " (optional)" if p.optional else ""
            print(f"{p.key:13} {p.title}{extra}: {', '.join(p.keys) or '-'}")
        return 0
    chosen = parts_for(args.only)
    started = time.perf_counter()
    say("bench on " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    rows = run_parts(chosen)
    seconds = time.perf_counter() - started
    print()
    print(rows_table(rows))
    print(f"\n{seconds / 60:.1f} minutes; figures are ratios against baselines measured in "
          "this run on a shared, noisy machine.")
    full = args.only is None
    info = run_info(list(chosen), seconds, "python bench/run.py" + (f" --only {args.only}"
                                                            if args.only else ""))
    write_outputs(rows, info, figures.RESULTS_JSON if full else args.out, markdown=full)
    return 0 if all(r.met != "error" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
