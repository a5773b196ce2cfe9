"""bench/gpu.py on a machine without CUDA: says it needs a GPU, times nothing, exits 0."""

from __future__ import annotations

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
