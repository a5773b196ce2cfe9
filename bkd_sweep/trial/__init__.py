"""The trial stage: one (student, teacher, distillation) configuration trained end to end.

``run_trial(config, report)`` runs without Ray (tests, ``bkd-sweep train``) and under Ray
(the engine passes a ``report`` that forwards to ``ray.tune.report``). It reports once per
epoch after writing that epoch's checkpoint, so a killed trial continues where it was.
Named parts: ``state`` (build, resume, checkpoint), ``step`` (train_step, train_epoch),
``evaluate``, ``run`` (run_trial and the result), ``teacher`` (prepare and cache the teacher),
``optim`` (optimizer and schedule), ``environment`` (device, DDP group, seeds).
"""

from bkd_sweep.trial.evaluate import evaluate
from bkd_sweep.trial.model import DistillationModel
from bkd_sweep.trial.run import ReportFn, run_trial
from bkd_sweep.trial.state import CHECKPOINT_FILE, TrialState, build_state, load_checkpoint
from bkd_sweep.trial.step import NonFiniteLoss, StepLosses, train_epoch, train_step

__all__ = ["CHECKPOINT_FILE", "DistillationModel", "NonFiniteLoss", "ReportFn", "StepLosses", "TrialState",
           "build_state", "evaluate", "load_checkpoint", "run_trial", "train_epoch", "train_step"]
