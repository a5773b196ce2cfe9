"""Timing a `bkd-sweep` command as a user runs it, and where a slow call spends its time.

* ``cli_seconds``: a command in a fresh interpreter (imports included), with a time limit;
* ``profile_top``: cProfile of a call, summarized as the bkd_sweep functions, third-party
  imports and library functions with the most cumulative time (the measured reason a
  target is missed).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from figures import TARGETS, judge

HERE = Path(__file__).resolve().parent


@dataclass
class CliRun:
    """One `bkd-sweep ...` in a fresh interpreter: seconds (None: failed or timed out)."""

    seconds: float | None
    note: str  # a line of its output, or why it has no seconds
    timeout: float | None = None  # set when it was stopped after this many seconds

    def figure(self) -> str:
        if self.timeout is not None:
            return f"> {self.timeout:.0f} s"
        return "error" if self.seconds is None else f"{self.seconds:.1f} s"

    def judged(self, key: str, why: str) -> dict[str, Any]:
        """judge() for the run; one stopped past its time limit is a missed target (its
        value: the limit, a lower bound), one that failed an error."""
        if self.timeout is not None:
            return {**judge(key, self.timeout, why or self.note), "met": "no"}
        if self.seconds is None:
            return {"target": TARGETS[key].text(), "met": "error", "key": key, "value": None,
                    "why": self.note}
        return judge(key, self.seconds, why)


def cli_seconds(args: list[str], timeout: float, cwd: Path, line: int = -1) -> CliRun:
    """Wall seconds of ``bkd-sweep ARGS`` in a fresh interpreter and one line of its output
    (the last by default)."""
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HERE.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                              if p]))
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "bkd_sweep.cli", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return CliRun(None, f"still running after {timeout:.0f} s (stopped)", timeout)
    seconds = time.perf_counter() - start
    lines = (done.stdout + done.stderr).strip().splitlines()
    if done.returncode != 0:
        return CliRun(None, lines[-1][:200] if lines else f"exit code {done.returncode}")
    return CliRun(seconds, lines[line][:200] if lines else "")


def profile_top(fn, limit: int = 4, others: int = 0, libraries: tuple[str, ...] = ()) -> str:
    """Where ``fn()`` spends its time (cProfile): the bkd_sweep functions with the most
    cumulative seconds below the top call, e.g. 'report/plots.py:save_figure 4.1 s', the
    ``others`` costliest third-party imports ('import timm 3.0 s') and the two costliest
    functions of each of ``libraries`` ('optuna/_hyperband.py:prune 0.1 s')."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    total = max(ct for (_, _, _, ct, _) in stats.values())

    def top(where: str, count: int) -> list[str]:
        found = sorted(((ct, f"{Path(f).parent.name}/{Path(f).name}:{name}")
                        for (f, _, name), (_, _, _, ct, _) in stats.items()
                        if f"/{where}/" in f and ct < 0.95 * total
                        and (where == "bkd_sweep" or name != "<module>")),
                       reverse=True)
        return [f"{text} {ct:.2f} s" for ct, text in found[:count]]

    imports: dict[str, float] = {}
    for (f, _, name), (_, _, _, ct, _) in stats.items():
        if name == "<module>" and "site-packages" in f:
            package = f.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
            imports[package] = max(imports.get(package, 0.0), ct)
    picked = top("bkd_sweep", limit)
    picked += [f"import {pkg} {ct:.1f} s" for pkg, ct in
               sorted(imports.items(), key=lambda kv: -kv[1])[:others]]
    for library in libraries:
        picked += top(library, 2)
    return f"of {total:.1f} s in-process: " + ", ".join(picked)
