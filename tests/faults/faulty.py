"""The real run_trial with a fault injected: a SIGKILL of the trial's own worker process
mid-epoch on its first attempt. Pickled by value so Ray workers need not import tests/."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import ray.cloudpickle as cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])

KILL_DELAY_SECONDS = 0.3  # after epoch 1 is reported: inside epoch 2's training steps


def sigkill_once_mid_epoch(config, report=None, *, checkpoint_dir=None, cache_dir=None):
    from bkd_sweep.trial import load_checkpoint
    from bkd_sweep.trial import CHECKPOINT_FILE, run_trial

    ckpt_dir = Path(checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / CHECKPOINT_FILE
    resumed_from = int(load_checkpoint(ckpt)["epoch"]) if ckpt.exists() else 0
    with open(ckpt_dir / "starts.txt", "a") as handle:  # one line per attempt
        handle.write(f"{resumed_from}\n")
    victim = config.distill.mode == "bkd" and config.distill.beta < 1
    marker = ckpt_dir / "killed"

    def reporting(metrics, directory):
        report(metrics, directory)
        if victim and metrics.epoch == 1 and not marker.exists():
            marker.write_text(str(os.getpid()))
            threading.Timer(KILL_DELAY_SECONDS,
                            lambda: os.kill(os.getpid(), signal.SIGKILL)).start()

    return run_trial(config, reporting, checkpoint_dir=checkpoint_dir, cache_dir=cache_dir)
