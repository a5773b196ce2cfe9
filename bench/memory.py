"""Peak memory of one training step as the time-steps T grow, for a fixed student.

Each T runs in a fresh process (peak RSS is a process-lifetime high-water mark). On CPU the
figure is ``ru_maxrss`` after two steps minus ``ru_maxrss`` once the model, optimizer and
batch exist: the step's activations plus the first gradients and AdamW state (the last two do
not depend on T, so the ratio to T=1 grows slower than T). On CUDA it is
``max_memory_allocated`` during a step minus the memory allocated before it.

    python bench/memory.py [--timesteps 1 2 4 8] [--student sew_resnet18_cifar] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import Row, render_table, say  # noqa: E402

DEFAULT_TIMESTEPS = (1, 2, 4, 8)


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(student_arch: str, timesteps: int, batch: int, image_size: int, threads: int) -> dict:
    """Measure one T in this (fresh) process; returns the figures as a dict."""
    import torch

    from step_overhead import Pair, build_student, make_batch, ours_model, trial_step  # noqa: F401

    from bkd_sweep.trial.environment import select_device

    torch.set_num_threads(threads)
    device = select_device("auto")
    in_channels = 1 if image_size <= 8 else 3
    pair = Pair("mem", "memory", student_arch, "-", "-", image_size, in_channels, 10, timesteps,
                batch, 0.0, False)
    images, targets = make_batch(pair, device)
    model = ours_model(pair, "none", device, None)
    step = trial_step(model, None, images, targets, feed_teacher=False)
    params = sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 20
    if device.type == "cuda":
        step()  # gradients and optimizer state exist from here on
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated() / 2 ** 20
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
        kind = "cuda max_memory_allocated"
    else:
        base = _maxrss_mib()
        step()
        step()
        peak = _maxrss_mib()
        kind = "cpu ru_maxrss"
    return {"timesteps": timesteps, "base_mib": base, "peak_mib": peak,
            "delta_mib": peak - base, "params_mib": params, "kind": kind}


@dataclass
class MemoryResult:
    student: str
    batch: int
    image_size: int
    points: list[dict]  # one per T, from child()

    def ratio(self, point: dict) -> float:
        first = self.points[0]["delta_mib"]
        return point["delta_mib"] / first if first > 0 else float("nan")


def run(timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS, *, student: str = "sew_resnet18_cifar",
        batch: int = 8, image_size: int = 32, threads: int = 2, timeout: float = 300
        ) -> MemoryResult:
    points = []
    for t in timesteps:
        say(f"memory: {student} {image_size}x{image_size}, B={batch}, T={t} (fresh process)")
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(t),
             "--student", student, "--batch", str(batch), "--image-size", str(image_size),
             "--threads", str(threads)],
            capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"T={t}: child exited {proc.returncode}: {last}")
        points.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return MemoryResult(student, batch, image_size, points)


def linear_fit(result: MemoryResult) -> tuple[float, float] | None:
    """Least-squares delta = a + b * T: (a MiB independent of T, b MiB per time-step)."""
    ts = [p["timesteps"] for p in result.points]
    ds = [p["delta_mib"] for p in result.points]
    if len(set(ts)) < 2:
        return None
    mt, md = sum(ts) / len(ts), sum(ds) / len(ds)
    b = sum((t - mt) * (d - md) for t, d in zip(ts, ds)) / sum((t - mt) ** 2 for t in ts)
    return md - b * mt, b


def _scaling(result: MemoryResult) -> str:
    fit = linear_fit(result)
    if fit is None:
        return "n/a"
    a, b = fit
    return f"linear: {a:.0f} MiB + {b:.0f} MiB x T"


def rows(result: MemoryResult) -> list[Row]:
    kind = result.points[0]["kind"]
    where = f"{result.student} {result.image_size}x{result.image_size}, B={result.batch}"
    out = []
    for p in result.points:
        out.append(Row("memory vs T", f"peak step memory ratio to T=1, T={p['timesteps']}, "
                       f"{where}", f"{result.ratio(p):.2f}",
                       f"+{p['delta_mib']:.0f} MiB ({kind}); params {p['params_mib']:.0f} MiB",
                       "- (reported)", "-"))
    fit = linear_fit(result)
    if fit is not None:
        a, b = fit
        last = result.points[-1]
        out.append(Row("memory vs T", f"per-time-step share of the T={last['timesteps']} peak "
                       f"(fit delta = a + b*T)", f"{b * last['timesteps'] / last['delta_mib']:.2f}",
                       f"{_scaling(result)}; a = T-independent part (grads, AdamW state, "
                       f"allocator)", "- (reported)", "-"))
    return out


def table(result: MemoryResult) -> str:
    body = [[str(p["timesteps"]), f"{p['delta_mib']:.0f}", f"{result.ratio(p):.2f}",
             f"{p['timesteps'] / result.points[0]['timesteps']:.0f}"] for p in result.points]
    return (render_table(["T", "peak delta (MiB)", "ratio to T=1", "T ratio"], body)
            + f"\nscaling: {_scaling(result)} ({result.points[0]['kind']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, nargs="+", default=list(DEFAULT_TIMESTEPS))
    parser.add_argument("--student", default="sew_resnet18_cifar")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.student, args.child, args.batch, args.image_size,
                               args.threads)))
        return 0
    result = run(tuple(args.timesteps), student=args.student, batch=args.batch,
                 image_size=args.image_size, threads=args.threads)
    print()
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
