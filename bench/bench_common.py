"""Helpers shared by the benches: interleaved step timing, result rows, the machine, tables.

Every figure a bench reports is a ratio against a baseline measured in the same process and
the same run, so a busy or slow machine moves both sides alike; raw times are shown for
context only and nothing asserts them.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

import torch


@dataclass
class Row:
    """One line of the bench table: a ratio (the figure), the raw numbers behind it, a target."""

    part: str
    measure: str
    figure: str  # the ratio or count, formatted
    detail: str  # the raw numbers it came from (context, never asserted)
    target: str = "-"
    met: str = "-"  # "yes" | "no" | "-" (no target) | "error"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "no")


def error_row(part: str, reason: str, target: str = "-") -> Row:
    """A row standing for a part that failed, so the rest of the bench still reports."""
    reason = " ".join(str(reason).split())[:200] or "unknown failure"
    return Row(part, "-", "error", f"error: {reason}", target, "error")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(steps: dict[str, Callable[[], None]], *, warmup: int, repeats: int,
                     device: torch.device, progress: Callable[[str], None] | None = None
                     ) -> dict[str, float]:
    """Median seconds per call of each step function, timed round-robin.

    Each round times one call of every function, the order rotating per round, so a burst of
    load from another process on a shared machine hits all variants alike instead of one.
    """
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
        sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            sync(device)
            start = time.perf_counter()
            steps[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
        if progress is not None and (r + 1) % max(1, repeats // 3) == 0:
            progress(f"  round {r + 1}/{repeats}")
    return {n: statistics.median(v) for n, v in times.items()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return None


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """What the numbers were measured on (spikingjelly has no __version__: use metadata)."""
    ram = _ram_gib()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": f"{ram:.1f} GiB" if ram else "unknown",
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spikingjelly": _pkg("spikingjelly"),
        "ray": _pkg("ray"),
        "optuna": _pkg("optuna"),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def render_table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """A plain aligned table for the terminal, or a GitHub markdown table."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


ROW_HEADER = ["part", "measure", "figure", "detail (same run)", "target", "met"]


def rows_table(rows: list[Row], markdown: bool = False) -> str:
    return render_table(ROW_HEADER, [[r.part, r.measure, r.figure, r.detail, r.target, r.met]
                                     for r in rows], markdown)


def say(message: str) -> None:
    """Progress on stdout, flushed at once (run.py relays its children's lines)."""
    print(message, flush=True)
