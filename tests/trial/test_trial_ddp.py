"""run_trial under torch.distributed (gloo, 2 processes on CPU): DDP keeps the student, the
align conv and the restoration block G in sync across ranks (the reference code left G and
align out of the gradient sync), every rank evaluates (and saves) rank 0's BatchNorm
statistics, val/test count every sample once, and a non-finite loss on one rank stops every
rank (one stopping alone would leave the others waiting in an all-reduce). One spawn serves
all: starting two processes costs most of the time."""

from __future__ import annotations

import math
import os
import socket
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

VAL_SIZE = 9  # odd: two ranks cannot hold equal shares without repeating a sample


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Predicts(nn.Module):
    """Always the same class, whatever the input."""

    def __init__(self, label: int, classes: int = 10):
        super().__init__()
        self.logits = nn.functional.one_hot(torch.tensor(label), classes).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(images.shape[0], -1)


def _evaluation() -> dict:
    """This rank's val labels and the all-reduced top-1 of a constant prediction."""
    from bkd_sweep.config import DataConfig
    from bkd_sweep.data import build_data, make_loaders
    from bkd_sweep.trial.environment import process_group
    from bkd_sweep.trial.evaluate import evaluate

    cfg = DataConfig(dataset="digits", batch_size=4, limit_train=32, limit_val=VAL_SIZE)
    bundle = build_data(cfg, seed=0)
    loaders = make_loaders(bundle, cfg, seed=0, distributed=True)
    labels = [int(bundle.val[i][1]) for i in range(VAL_SIZE)]
    label = labels[0]  # sample 0: the one DistributedSampler repeats to pad the shares
    top1, _, _ = evaluate(Predicts(label), loaders.val, torch.device("cpu"), process_group(),
                          nullcontext)
    return {"labels": [int(y) for _, ys in loaders.val for y in ys], "top1": top1,
            "expected": 100 * labels.count(label) / VAL_SIZE}


def _non_finite_on_rank_one(rank: int) -> str | None:
    """The message each rank's LossLog raises when only rank 1's loss is NaN."""
    from bkd_sweep.trial.environment import process_group
    from bkd_sweep.trial.step import LossLog, NonFiniteLoss, StepLosses

    log = LossLog(epoch=2, every=2, group=process_group())
    try:
        log.add(0, 4, StepLosses(("loss",), torch.tensor([1.0])))
        log.add(1, 4, StepLosses(("loss",), torch.tensor([math.nan if rank else 1.0])))
    except NonFiniteLoss as exc:
        return str(exc)
    return None


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
        model = captured["model"]
        state = {k: v.detach().clone() for k, v in model.named_parameters()}
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        torch.save({"state": state, "buffers": buffers, "top1": result.final_top1,
                    "status": result.status, "evaluation": _evaluation(),
                    "non_finite": _non_finite_on_rank_one(rank)},
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
    # BatchNorm statistics: rank 0's everywhere, so what each rank evaluated is what is saved
    assert any("running_mean" in k for k in ranks[0]["buffers"])
    for key, value in ranks[0]["buffers"].items():
        assert torch.equal(value, ranks[1]["buffers"][key]), key
    evaluations = [r["evaluation"] for r in ranks]
    assert [len(e["labels"]) for e in evaluations] == [5, 4]  # 9 samples, none repeated
    for e in evaluations:
        assert e["top1"] == pytest.approx(e["expected"])  # the all-reduced count is 9
    assert ranks[1]["non_finite"] == "non-finite loss (nan) at epoch 2 step 2"
    assert ranks[0]["non_finite"] == "non-finite loss on another rank at epoch 2 steps 1-2"
