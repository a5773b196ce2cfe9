"""The training step's bookkeeping: one device read per logging interval, the finite check
naming the first bad step, precision choices and the compile fallback."""

from __future__ import annotations

import math

import pytest
import torch

from bkd_sweep.trial.state import autocast_dtype
from bkd_sweep.trial.step import LossLog, NonFiniteLoss, StepLosses


def losses(total: float, task: float) -> StepLosses:
    return StepLosses(("loss", "task"), torch.tensor([total, task]))


def test_loss_log_reads_the_device_once_per_interval(monkeypatch):
    reads = []
    original = torch.Tensor.tolist

    def counting(self):
        reads.append(tuple(self.shape))
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    log = LossLog(epoch=1, every=3)
    for step, (total, batch) in enumerate([(1.0, 4), (2.0, 4), (3.0, 2), (4.0, 4), (5.0, 1)]):
        log.add(step, batch, losses(total, total / 2))
    assert reads == [(3, 2)]  # the first interval only; the rest waits for the epoch's end
    means = log.means()
    assert reads == [(3, 2), (2, 2)]
    expected = (1 * 4 + 2 * 4 + 3 * 2 + 4 * 4 + 5 * 1) / 15
    assert means["loss"] == pytest.approx(expected)
    assert means["task"] == pytest.approx(expected / 2)
    assert log.seen == 15


def test_a_non_finite_step_is_named_even_inside_an_interval():
    log = LossLog(epoch=3, every=10)
    log.add(0, 4, losses(1.0, 1.0))
    log.add(1, 4, losses(math.nan, 1.0))
    log.add(2, 4, losses(1.0, 1.0))
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss \(nan\) at epoch 3 step 2"):
        log.means()


@pytest.mark.parametrize("precision,device,dtype", [
    ("auto", "cpu", None), ("fp32", "cpu", None), ("fp32", "cuda", None),
    ("bf16", "cuda", torch.bfloat16), ("fp16", "cuda", torch.float16),
    ("bf16", "cpu", torch.bfloat16),
])
def test_precision_maps_to_an_autocast_dtype(precision, device, dtype):
    assert autocast_dtype(precision, torch.device(device)) == dtype


def test_compile_failure_falls_back_once_with_a_warning(monkeypatch, tmp_path):
    """A compiler that fails on first use: the trial warns once and matches an eager run."""
    from torch import nn

    from bkd_sweep.config import TrialConfig, apply_overrides
    from bkd_sweep.trial import run_trial

    class Broken(nn.Module):
        def __init__(self, module: nn.Module):
            super().__init__()
            self._orig_mod = module

        def forward(self, *args, **kwargs):
            raise RuntimeError("backend compiler failed: no C++ toolchain")

    monkeypatch.setattr(torch, "compile", lambda module, **kw: Broken(module))
    settings = {"data.dataset": "digits", "data.limit_train": 128, "data.limit_val": 64,
                "data.batch_size": 32, "distill.mode": "none", "train.epochs": 1,
                "train.threads": 1, "energy.samples": 4}
    eager = run_trial(apply_overrides(TrialConfig(), settings), cache_dir=tmp_path)
    compiled = run_trial(apply_overrides(TrialConfig(), {**settings, "train.compile": True}),
                         cache_dir=tmp_path)
    assert compiled.status == "completed"
    assert [w for w in compiled.warnings if "train.compile" in w] == [
        "train.compile: torch.compile failed (RuntimeError: backend compiler failed: no C++ "
        "toolchain); running without compile"]
    assert compiled.history[0].top1 == eager.history[0].top1
    assert compiled.history[0].loss == pytest.approx(eager.history[0].loss)


@pytest.mark.slow
def test_compile_runs_the_trial_compiled(tmp_path):
    """A real torch.compile (inductor, this machine's C++ compiler): the trial trains through
    the compiled model without falling back, and learns as the eager trial does (spikes may
    flip where a fused kernel rounds differently, so the figures are close, not equal)."""
    from bkd_sweep.config import TrialConfig, apply_overrides
    from bkd_sweep.trial import run_trial
    from bkd_sweep.trial import step as step_module

    calls = []
    real_step = step_module.train_step

    def spying(*args, forward=None, **kwargs):
        calls.append(type(forward).__name__)
        return real_step(*args, forward=forward, **kwargs)

    settings = {"data.dataset": "digits", "data.limit_train": 128, "data.limit_val": 64,
                "data.batch_size": 32, "distill.mode": "none", "train.epochs": 1,
                "train.threads": 1, "energy.samples": 4, "train.compile": True}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step_module, "train_step", spying)
        compiled = run_trial(apply_overrides(TrialConfig(), settings), cache_dir=tmp_path)
    assert compiled.status == "completed", compiled.error
    assert not [w for w in compiled.warnings if "train.compile" in w]
    assert calls and set(calls) == {"OptimizedModule"}  # every step ran the compiled module
    eager = run_trial(apply_overrides(TrialConfig(), {**settings, "train.compile": False}),
                      cache_dir=tmp_path)
    assert compiled.history[0].loss == pytest.approx(eager.history[0].loss, rel=0.05)


def test_gpus_hidden_from_a_trial_mean_cpu_even_once_torch_counted_them(monkeypatch):
    """A trial given no GPU (CUDA_VISIBLE_DEVICES empty, set by the worker) runs on the CPU
    even where torch had already counted the node's GPUs (Ray Train asks before the loop)."""
    import torch

    from bkd_sweep.trial.environment import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # counted before hiding
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert select_device("auto") == torch.device("cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert select_device("auto").type == "cuda"
