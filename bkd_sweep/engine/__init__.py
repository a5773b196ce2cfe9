"""The sweep engine: Ray Tune over an Optuna study, pruning, resume, plans and job submission.

Importing this package does not import Ray (``plan`` stays fast). The checks before a sweep
live in bkd_sweep.preflight.
"""

from bkd_sweep.engine.plan import Plan, plan
from bkd_sweep.engine.runner import SweepSummary, run_study
from bkd_sweep.engine.submit import submit_study

__all__ = ["Plan", "SweepSummary", "plan", "run_study", "submit_study"]
