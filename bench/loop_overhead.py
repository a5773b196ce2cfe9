"""Our training step (DistillationModel + DistillLoss, mode none, as run_trial does it) vs a
hand-written plain spikingjelly loop of the same student: same weights, batch, T, optimizer.

    python bench/loop_overhead.py [--repeats N] [--warmup N] [--threads N]
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import pair_arguments, run_pairs, Row, Timing, render_table, say, time_steady  # noqa: E402
from figures import TARGETS, judge  # noqa: E402
from step_overhead import (PAIRS, Pair, build_student, make_batch, ours_model,  # noqa: E402
                           trial_step)

from bkd_sweep.trial.environment import select_device  # noqa: E402

TARGET = TARGETS["ours_over_plain_sj"].threshold  # ours / plain
COMPILED = "ours compile"  # the variant run through torch.compile (train.compile: true)
LR, WEIGHT_DECAY = 1e-3, 1e-4


def plain_step(student: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor
               ) -> Callable[[], None]:
    """The textbook spikingjelly loop: forward, CE, backward, step, reset_net."""
    optimizer = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    student.train()

    def step() -> None:
        logits = student(images)  # [B, K], already averaged over T
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        functional.reset_net(student)

    return step


@dataclass
class LoopResult:
    pair: Pair
    timing: Timing  # variants ours, plain (and "ours compile" for the paper-like pair)
    compile_s: float | None = None  # the compiled step's first call (compilation included)

    @property
    def ours(self) -> float:
        return self.timing.median("ours")

    @property
    def plain(self) -> float:
        return self.timing.median("plain")

    @property
    def ratio(self) -> float:
        return self.timing.ratio("ours", "plain")

    @property
    def compiled_ratio(self) -> float | None:
        if COMPILED not in self.timing.samples:
            return None
        return self.timing.ratio(COMPILED, "plain")


def measure_pair(pair: Pair, *, warmup: int, repeats: int, budget_s: float | None = None,
                 deadline: float | None = None) -> LoopResult:
    device = select_device("auto")
    images, targets = make_batch(pair, device)
    ours = ours_model(pair, "none", device, None)
    plain = build_student(pair, device)  # same seed: same initial weights as ours.student
    steps = {"ours": trial_step(ours, None, images, targets, feed_teacher=False, lr=LR),
             "plain": plain_step(plain, images, targets)}
    compile_s = None
    if pair.has_target:  # train.compile: true, on the pair with the target only (~1 min)
        steps[COMPILED] = trial_step(ours_model(pair, "none", device, None), None, images,
                                     targets, feed_teacher=False, lr=LR, compiled=True)
        say(f"loop overhead: {pair.label}: compiling ours (train.compile: true)")
        started = time.perf_counter()
        steps[COMPILED]()
        compile_s = time.perf_counter() - started
    say(f"loop overhead: {pair.label} ({pair.describe_student()}): {warmup} warm-up + "
        f"{repeats} timed steps per variant")
    timing = time_steady(steps, ("ours", "plain"), warmup=warmup, repeats=repeats,
                         device=device, budget_s=budget_s, deadline=deadline, progress=say)
    return LoopResult(pair, timing, compile_s)


def rows(results: list[LoopResult]) -> list[Row]:
    out = []
    for r in results:
        out.append(Row("our step vs plain spikingjelly", f"ours/plain (mode none), "
                       f"{r.pair.label}: {r.pair.describe_student()}", f"{r.ratio:.3f}",
                       f"ours {r.ours * 1e3:.1f} ms, plain {r.plain * 1e3:.1f} ms; "
                       + r.timing.cross_check("ours", "plain"),
                       **(judge("ours_over_plain_sj", r.ratio,
                                f"ours {r.ours * 1e3:.1f} ms vs plain {r.plain * 1e3:.1f} ms "
                                "a step") if r.pair.has_target else judge_reported(r.ratio))))
        if r.compiled_ratio is not None:
            ms = r.timing.median(COMPILED) * 1e3
            out.append(Row(
                "our step vs plain spikingjelly", f"ours with train.compile: true / plain "
                f"(mode none), {r.pair.label}: {r.pair.describe_student()}",
                f"{r.compiled_ratio:.3f}",
                f"ours compiled {ms:.1f} ms, plain {r.plain * 1e3:.1f} ms; the first call "
                f"(compilation, once per trial; less where inductor's disk cache has the graph) "
                f"{r.compile_s:.0f} s; " + r.timing.cross_check(COMPILED, "plain"),
                **judge("ours_compiled_over_plain_sj", r.compiled_ratio,
                        f"ours compiled {ms:.1f} ms vs plain {r.plain * 1e3:.1f} ms a step")))
    return out


def judge_reported(ratio: float) -> dict:
    """The quickstart student: the same target, shown but not a named figure."""
    return {"target": f"<= {TARGET:.2f}", "met": "yes" if ratio <= TARGET else "no"}


def table(results: list[LoopResult]) -> str:
    body = [[f"{r.pair.label} ({r.pair.describe_student()})", f"{r.plain * 1e3:.1f}",
             f"{r.ours * 1e3:.1f}", f"{r.ratio:.3f}", "met" if r.ratio <= TARGET else "not met",
             "-" if r.compiled_ratio is None else f"{r.compiled_ratio:.3f}"]
            for r in results]
    return render_table(["student", "plain (ms)", "ours (ms)", "ours/plain", "target <= 1.00",
                         "compiled/plain"], body)


def run(pairs: list[str] | None = None, *, warmup: int = 3, repeats: int = 11,
        threads: int = 2, budget_s: float | None = None,
        total_s: float | None = None) -> list[LoopResult]:
    """Time each student (see bench_common.run_pairs for the budgets)."""
    return run_pairs(measure_pair, PAIRS, pairs, warmup=warmup, repeats=repeats,
                     threads=threads, budget_s=budget_s, total_s=total_s)


def main(argv: list[str] | None = None) -> int:
    args = pair_arguments(__doc__.splitlines()[0], PAIRS, argv)
    results = run(args.pairs, warmup=args.warmup, repeats=args.repeats, threads=args.threads)
    print()
    print(table(results))
    for r in results:
        print(f"{r.pair.label}: {r.timing.cross_check('ours', 'plain')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
