"""A sweep driver process for the driver-kill test: ``python sweep_driver.py STUDY [--resume]``.

Runs the study with the fast fake trial function and the real tracking stage.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fakes  # noqa: E402

from bkd_sweep.engine import run_study  # noqa: E402
from bkd_sweep.config import load_study  # noqa: E402

if __name__ == "__main__":
    summary = run_study(load_study(sys.argv[1]), resume="--resume" in sys.argv,
                        trial_fn=fakes.curve_trial)
    print(summary.render(), flush=True)
