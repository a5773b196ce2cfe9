"""GPU step timing: SEW-ResNet-18 (CIFAR stem) T=4, modes none and mixed, fp32 and bf16,
torch.compile off and on, against the plain spikingjelly loop of the same student.

Every variant runs ``bkd_sweep.trial.train_step`` (the step run_trial runs) except
``plain``, the textbook loop (forward, CE, backward, AdamW, reset_net). The table goes into
bench/RESULTS.md between the GPU markers. On a machine without CUDA it says so and exits 0.

    python bench/gpu.py [--batch 64] [--repeats 20] [--warmup 5] [--no-compile] [--no-write]
    python bench/gpu.py --smoke    # every eager variant once, on this machine, nothing written

``--smoke`` runs the script's own code on whatever device there is (the CPU here: autocast
then uses the CPU's bf16 kernels; compile is left out, it takes a minute a variant on 2
cores), so a test can keep it working between the rare sessions that have a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import render_table, say, time_interleaved  # noqa: E402
from figures import BEGIN, END  # noqa: E402
from loop_overhead import plain_step  # noqa: E402
from step_overhead import PAPER, build_student, build_teacher, make_batch, ours_model  # noqa: E402,E501

from bkd_sweep.config import OptimizerConfig  # noqa: E402
from bkd_sweep.trial import train_step  # noqa: E402
from bkd_sweep.trial.optim import make_optimizer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def ours_step(mode: str, pair, device: torch.device, teacher, images, targets, *, dtype,
              compile_: bool):
    model = ours_model(pair, mode, device, teacher if mode != "none" else None)
    optimizer = make_optimizer(model, OptimizerConfig(name="adamw", lr=1e-3, weight_decay=1e-4))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    forward = torch.compile(model) if compile_ else model
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def step() -> None:
        train_step(model, optimizer, scheduler, images, targets,
                   teacher=teacher if mode != "none" else None, forward=forward,
                   scaler=scaler, autocast=autocast)

    return step


def variants(batch: int, compile_: bool, device: torch.device) -> dict[str, object]:
    pair = replace(PAPER, batch=batch)
    images, targets = make_batch(pair, device)
    teacher = build_teacher(pair, device).to(memory_format=torch.channels_last)
    steps = {"plain": plain_step(build_student(pair, device), images, targets)}
    for mode in ("none", "mixed"):
        for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            for compiled in ((False, True) if compile_ else (False,)):
                name = f"{mode} {label}{' compile' if compiled else ''}"
                steps[name] = ours_step(mode, pair, device, teacher, images, targets,
                                        dtype=dtype, compile_=compiled)
    return steps


def write_results(table: str, device_name: str) -> None:
    block = (f"{BEGIN}\n## GPU step timing ({device_name}, {time.strftime('%Y-%m-%d')})\n\n"
             f"{table}\n{END}")
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="each eager variant once at batch 2 on this machine; writes nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.warmup, args.repeats, args.no_compile, args.no_write = 2, 0, 1, True, True
    elif not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA GPU; none here, nothing timed.")
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = variants(args.batch, compile_=not args.no_compile, device=device)
    say(f"{device.type}: {len(steps)} variants, {args.warmup} warm-up + {args.repeats} timed "
        "steps each")
    timing = time_interleaved(steps, warmup=args.warmup, repeats=args.repeats, device=device,
                              progress=say)
    plain = timing.median("plain")
    body = [[name, f"{timing.median(name) * 1e3:.2f}", f"{timing.median(name) / plain:.3f}"]
            for name in steps]
    table = render_table(["variant (SEW-ResNet-18 CIFAR, T=4, batch "
                          f"{args.batch})", "median ms/step", "/ plain"], body)
    print(table)
    if not args.no_write:
        write_results(table, torch.cuda.get_device_name())
    return 0


if __name__ == "__main__":
    sys.exit(main())
