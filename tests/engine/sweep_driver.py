"""A sweep driver process for the driver-kill test: ``python sweep_driver.py STUDY [--resume]``
with the repository root on PYTHONPATH (test_resume.py sets it).

Runs the study with the fast fake trial function and the real tracking stage.
"""

from __future__ import annotations

import sys

from bkd_sweep.config import load_study
from bkd_sweep.engine import run_study
from tests.engine import fakes

if __name__ == "__main__":
    summary = run_study(load_study(sys.argv[1]), resume="--resume" in sys.argv,
                        trial_fn=fakes.curve_trial)
    print(summary.render(), flush=True)
