"""The sweep engine: Ray Tune over an Optuna study, pruning, resume, plans and job submission.

Importing this package does not import Ray (``plan`` and ``check_runnable`` stay fast).
"""

from bkd_sweep.engine.plan import Plan, plan
from bkd_sweep.engine.runner import SweepSummary, check_runnable, run_study
from bkd_sweep.engine.submit import submit_study

__all__ = ["Plan", "SweepSummary", "check_runnable", "plan", "run_study", "submit_study"]
