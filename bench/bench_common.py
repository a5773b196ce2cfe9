"""Helpers shared by the benches: interleaved step timing, result rows, the machine, tables.

Every figure a bench reports is a ratio against a baseline measured in the same process and
the same run, so a busy or slow machine moves both sides alike; raw times are shown for
context only and nothing asserts them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch is imported where it is used: the sweep benches' driver process
    import torch  # must not have it beforehand (a user's `bkd-sweep run` has not)


@dataclass
class Row:
    """One line of the bench table: a ratio (the figure), the raw numbers behind it, a target."""

    part: str
    measure: str
    figure: str  # the ratio or count, formatted
    detail: str  # the raw numbers it came from (context, never asserted)
    target: str = "-"
    met: str = "-"  # "yes" | "no" | "-" (no target) | "error"
    key: str | None = None  # its name in bench/results.json (figures.TARGETS), if it has one
    value: float | None = None  # the figure as a number (results.json)
    why: str = ""  # for a missed target: what the measurements say it is missed by

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "no")


def error_row(part: str, reason: str, target: str = "-") -> Row:
    """A row standing for a part that failed, so the rest of the bench still reports."""
    reason = " ".join(str(reason).split())[:200] or "unknown failure"
    return Row(part, "-", "error", f"error: {reason}", target, "error")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per call of each variant, one sample per round (rounds are aligned)."""

    samples: dict[str, list[float]]
    load_before: float | None  # 1-minute load average when timing started and ended
    load_after: float | None
    attempt: int = 1  # which timing attempt this is (see time_steady)

    @property
    def rounds(self) -> int:
        return min(len(v) for v in self.samples.values())

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def minimum(self, name: str) -> float:
        return min(self.samples[name])

    def ratio(self, a: str, b: str) -> float:
        """The headline figure: median(a) / median(b)."""
        return self.median(a) / self.median(b)

    def paired_ratio(self, a: str, b: str) -> float:
        """Median over rounds of a/b within a round (steps seconds apart): a cross-check that
        cancels load that drifts slower than a round."""
        return statistics.median(x / y for x, y in zip(self.samples[a], self.samples[b]))

    def min_ratio(self, a: str, b: str) -> float:
        """min(a) / min(b): the least disturbed steps, another cross-check."""
        return self.minimum(a) / self.minimum(b)

    def spread(self, a: str, b: str) -> float:
        """Largest relative gap between the headline ratio and its two cross-checks."""
        head = self.ratio(a, b)
        return max(abs(self.paired_ratio(a, b) - head), abs(self.min_ratio(a, b) - head)) / head

    def noisy(self, a: str, b: str) -> bool:
        return self.spread(a, b) > NOISY_SPREAD

    def cross_check(self, a: str, b: str) -> str:
        """The two cross-checks, the rounds, the load, and a flag when they disagree."""
        load = ("" if self.load_before is None
                else f", load avg {self.load_before:.1f}->{self.load_after:.1f}")
        attempt = f", timing attempt {self.attempt}" if self.attempt > 1 else ""
        flag = (f"; NOISY: cross-checks disagree by > {NOISY_SPREAD:.0%}"
                if self.noisy(a, b) else "")
        return (f"cross-checks: paired {self.paired_ratio(a, b):.3f}, min-based "
                f"{self.min_ratio(a, b):.3f} ({self.rounds} rounds{load}{attempt}){flag}")


NOISY_SPREAD = 0.05


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


class CpuSampler:
    """The machine's CPU use while a block runs, from /proc/stat (Linux; elsewhere it records
    nothing): a thread reads the all-CPU counters every ``interval`` seconds, and
    ``busy_share(start, end)`` is the share of every CPU's time spent busy between two
    ``time.time()`` stamps (None without two samples inside)."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (time, all jiffies, idle jiffies)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as stat:
            counts = [int(x) for x in stat.readline().split()[1:9]]  # guest is in user
        return sum(counts), counts[3] + counts[4]  # idle + iowait

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), *self._read()))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "CpuSampler":
        try:
            self._read()
        except (OSError, ValueError, IndexError):
            return self
        self._thread = threading.Thread(target=self._run, daemon=True, name="cpu-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def busy_share(self, start: float, end: float) -> float | None:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2 or inside[-1][1] == inside[0][1]:
            return None
        (_, all0, idle0), (_, all1, idle1) = inside[0], inside[-1]
        return 1.0 - (idle1 - idle0) / (all1 - all0)


def time_interleaved(steps: dict[str, Callable[[], None]], *, warmup: int, repeats: int,
                     device: torch.device, budget_s: float | None = None, min_repeats: int = 5,
                     progress: Callable[[str], None] | None = None) -> Timing:
    """Time each step function round-robin: warm-up calls, then ``repeats`` rounds.

    Each round times one call of every function, the order rotating per round, so a burst of
    load from another process on a shared machine hits all variants alike instead of one.
    Past ``budget_s`` seconds of timed rounds (and ``min_repeats`` rounds) it stops early.
    """
    names = list(steps)
    load_before = load_average()
    for name in names:
        for _ in range(warmup):
            steps[name]()
        sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    started = time.perf_counter()
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
        if (budget_s is not None and r + 1 >= min_repeats
                and time.perf_counter() - started > budget_s and r + 1 < repeats):
            if progress is not None:
                progress(f"  stopping after {r + 1} rounds: past the {budget_s:.0f} s budget "
                         "(a loaded machine)")
            break
    return Timing(times, load_before, load_average())


def time_steady(steps: dict[str, Callable[[], None]], check: tuple[str, str], *, warmup: int,
                repeats: int, device: torch.device, budget_s: float | None = None,
                attempts: int = 3, deadline: float | None = None,
                progress: Callable[[str], None] | None = None) -> Timing:
    """``time_interleaved``, timed again (up to ``attempts``) while the ratio ``check[0] /
    check[1]`` and its cross-checks disagree (another process loaded the machine meanwhile);
    returns the attempt with the smallest disagreement. No new attempt starts when the last
    one's duration would end past ``deadline`` (a ``time.perf_counter()`` value)."""
    best: Timing | None = None
    for attempt in range(1, attempts + 1):
        started = time.perf_counter()
        timing = time_interleaved(steps, warmup=warmup, repeats=repeats, device=device,
                                  budget_s=budget_s, progress=progress)
        timing.attempt = attempt
        if best is None or timing.spread(*check) < best.spread(*check):
            best = timing
        if not timing.noisy(*check) or attempt == attempts:
            break
        took = time.perf_counter() - started
        if deadline is not None and time.perf_counter() + took > deadline:
            break
        if progress is not None:
            progress(f"  noisy timing (ratio vs cross-checks off by {timing.spread(*check):.0%}"
                     f"): timing again")
    assert best is not None
    return best


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
    import torch

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


DEADLINE_ENV = "BKD_BENCH_DEADLINE"  # epoch seconds by which run.py stops a part


def time_left(default: float = 600.0) -> float:
    """Seconds until run.py stops this part (``default`` when run on its own), so a part
    can shrink what it does instead of being cut off."""
    deadline = os.environ.get(DEADLINE_ENV)
    return default if deadline is None else float(deadline) - time.time()


KEYS_ENV = "BKD_BENCH_KEYS"  # the figures asked for (run.py --only KEY,...); unset: all


def wanted(keys: tuple[str, ...]) -> bool:
    """Whether a piece measuring ``keys`` was asked for (all are, unless --only named
    figures of another piece of the same part)."""
    asked = os.environ.get(KEYS_ENV)
    return not asked or bool(set(asked.split(",")) & set(keys))


def say(message: str) -> None:
    """Progress on stdout, flushed at once (run.py relays its children's lines)."""
    print(message, flush=True)


def run_pairs(measure_pair: Callable[..., Any], table: dict[str, Any], keys: list[str] | None,
              *, warmup: int, repeats: int, threads: int, budget_s: float | None,
              total_s: float | None) -> list[Any]:
    """Time each pair of ``table`` with ``measure_pair``; ``budget_s`` caps each timing's
    rounds and ``total_s`` the whole run (retries of noisy timings stop first)."""
    import torch

    started = time.perf_counter()
    torch.set_num_threads(threads)
    keys = keys or list(table)
    out = []
    for i, key in enumerate(keys):
        # retries may use what is left of total_s, keeping a share for the pairs to come
        deadline = (None if total_s is None
                    else time.perf_counter() + (total_s - (time.perf_counter() - started))
                    / (len(keys) - i))
        out.append(measure_pair(table[key], warmup=warmup,
                                repeats=repeats * table[key].repeat_factor,
                                budget_s=budget_s, deadline=deadline))
    return out


def pair_arguments(description: str, table: dict[str, Any],
                   argv: list[str] | None = None) -> argparse.Namespace:
    """The command line shared by the per-pair timing benches."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--pairs", nargs="+", choices=list(table), default=list(table))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)
