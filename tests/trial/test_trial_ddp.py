"""run_trial under torch.distributed (gloo, 2 processes on CPU): DDP keeps the student, the
align conv and the restoration block G in sync across ranks (the reference code left G and
align out of the gradient sync)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, cache_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from bkd_sweep.config import TrialConfig, apply_overrides
        from bkd_sweep.trial import run_trial

        config = apply_overrides(TrialConfig(), {
            "data.dataset": "digits", "data.batch_size": 32, "data.limit_train": 256,
            "data.limit_val": 64, "student.arch": "spiking_cnn_small", "student.timesteps": 2,
            "teacher.arch": "cnn_small", "teacher.checkpoint": "train",
            "teacher.feature": "features", "teacher.train.epochs": 1, "train.epochs": 1,
            "distill.mode": "mixed", "distill.beta": 1e-5, "energy.samples": 4})
        captured = {}
        import bkd_sweep.trial as trial_module

        original = trial_module.DistillationModel.__init__

        def keep(self, student, loss):  # remember the trainable module to compare ranks
            original(self, student, loss)
            captured["model"] = self

        trial_module.DistillationModel.__init__ = keep
        dist.barrier()
        result = run_trial(config, cache_dir=Path(cache_dir))
        # parameters, not buffers: BatchNorm running statistics stay per rank under DDP
        state = {k: v.detach().clone() for k, v in captured["model"].named_parameters()}
        torch.save({"state": state, "top1": result.final_top1, "status": result.status},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes train one trial together
def test_ddp_syncs_student_align_and_restoration_block(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), str(tmp_path / "cache")), nprocs=2,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(r["status"] == "completed" for r in ranks)
    assert ranks[0]["top1"] == ranks[1]["top1"]  # validation counts are all-reduced
    a, b = ranks[0]["state"], ranks[1]["state"]
    restore = [k for k in a if k.startswith("loss.") and "restore" in k]
    assert restore, "the restoration block must be part of the trainable module"
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
