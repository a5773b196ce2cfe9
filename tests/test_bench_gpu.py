"""bench/gpu.py on a machine without CUDA: says it needs a GPU, times nothing, exits 0; and
its code (every eager variant: plain, none / mixed in fp32 and bf16) runs under --smoke."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a fresh interpreter imports the training stack
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_bench_without_cuda_exits_cleanly():
    before = (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    done = subprocess.run([sys.executable, "bench/gpu.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "bench/gpu.py needs a CUDA GPU; none here, nothing timed."
    assert (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8") == before


@pytest.mark.slow  # builds SEW-ResNet-18 and a ResNet-18 teacher, one step of each variant
def test_gpu_bench_smoke_runs_every_eager_variant_and_writes_nothing():
    before = (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    done = subprocess.run([sys.executable, "bench/gpu.py", "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("---")) + 1:]
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip())
                                              for line in body if line.strip())}
    assert set(rows) == {"plain", "none fp32", "none bf16", "mixed fp32", "mixed bf16"}
    assert rows["plain"][1] == "1.000"  # each variant against plain
    assert all(float(ms) > 0 for ms, _ in rows.values())
    assert (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8") == before
