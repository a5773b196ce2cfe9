"""Typed values that flow between stages: per-epoch metrics, energy, a trial's result and
the record of a finished trial, with the one home of what is derived from them (the trial
id, a result's metrics by name, a result built from an epoch history).

No torch here: the tracking and report stages read these without a training stack.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bkd_sweep.config.base import config_id_of


CHECKPOINT_FILE = "last.pt"  # a trial's latest checkpoint in its folder: what a retry resumes from


class Record(BaseModel):
    # JSON keeps inf/NaN as Infinity/NaN (Python's json reads them): as null, a diverged
    # epoch's val_loss could not be read back into its float field
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


class LayerEnergy(Record):
    """One layer's operations. A layer fed by binary spikes counts SOPs; otherwise MACs."""

    name: str  # module path in the model, e.g. "layer1.0.conv1"
    kind: str  # module class name, e.g. "Conv2d", "Linear"
    input_is_spike: bool
    sops: float = 0.0  # synaptic operations per sample, summed over T
    macs: float = 0.0  # multiply-accumulates per sample, summed over T
    dense_macs: float = 0.0  # MACs the layer would cost per sample and time-step if dense
    firing_rate: float | None = None  # mean spike rate of the layer's input (None if not spikes)
    energy_pj: float = 0.0


class EnergyReport(Record):
    """Energy per sample: E = e_mac * MACs + e_ac * SOPs (pJ), reported in mJ."""

    energy_mj: float
    sops: float  # per sample
    macs: float  # per sample
    mean_firing_rate: float | None  # over spiking neuron layers' outputs
    timesteps: int
    e_mac_pj: float
    e_ac_pj: float
    first_layer_once: bool  # True: the direct-encoded first layer counted once, not x T
    convention: Literal["paper", "exact"] = "exact"  # see bkd_sweep.energy (older results: exact)
    layers: list[LayerEnergy] = Field(default_factory=list)
    firing_rates: dict[str, float] = Field(default_factory=dict)  # neuron layer -> spike rate


# Per-epoch values a pruner may compare, with the direction in which they improve.
EPOCH_METRIC_MODES = {"top1": "max", "top5": "max", "val_loss": "min", "loss": "min"}


class EpochMetrics(Record):
    """What run_trial reports once per epoch (epochs count from 1)."""

    epoch: int
    top1: float  # validation top-1, percent
    top5: float
    val_loss: float
    loss: float  # mean training loss (total)
    loss_terms: dict[str, float] = Field(default_factory=dict)  # task, logit, bkd (unweighted x w)
    lr: float
    wall_seconds: float  # seconds this epoch took (train + eval)
    samples_per_second: float = 0.0


TrialStatus = Literal["completed", "pruned", "failed"]


class TrialResult(Record):
    """The one value a finished trial yields."""

    status: TrialStatus
    reason: str | None = None  # why it failed or was pruned
    # the selected checkpoint (train.select): its epoch, its val top-1, and its test top-1,
    # measured once on those weights (None for pruned or failed trials)
    selected_epoch: int | None = None
    val_top1: float | None = None
    test_top1: float | None = None
    test_top5: float | None = None
    selection_on_test: bool = False  # data.val_fraction 0: val is the test split
    split_rule: str | None = None
    teacher_val_top1: float | None = None
    teacher_test_top1: float | None = None
    best_top1: float | None = None
    final_top1: float | None = None
    best_top5: float | None = None
    final_top5: float | None = None
    energy: EnergyReport | None = None
    teacher_energy_mj: float | None = None
    epochs_run: int = 0
    wall_seconds: float = 0.0
    device_seconds: float = 0.0  # wall seconds x devices used (GPU-seconds on GPU)
    device: str = "cpu"
    config: dict[str, Any]
    config_hash: str
    config_id: str | None = None  # equal for all seeds of one configuration
    code_version: str
    history: list[EpochMetrics] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _older_results(cls, data: Any) -> Any:
        # results written before three splits: their teacher_top1 was measured on the
        # split that served as val and test alike
        if isinstance(data, dict) and "teacher_top1" in data:
            data = dict(data)
            data.setdefault("teacher_test_top1", data.pop("teacher_top1"))
        return data

    def without_credentials(self) -> "TrialResult":
        """This result as it is stored and reported (result.json, Tune's state, Parquet,
        MLflow): its config and reason with credentials hidden (a data root's or an error's
        URI may carry a password). config_id stays the one of the config that ran."""
        from bkd_sweep.redact import redact_text, redact_value

        return self.model_copy(update={
            "config": redact_value(self.config),
            "reason": redact_text(self.reason) if self.reason else self.reason})

    @property
    def energy_mj(self) -> float | None:
        return self.energy.energy_mj if self.energy else None

    @classmethod
    def from_history(cls, status: TrialStatus, history: list[EpochMetrics], *,
                     config: dict[str, Any], config_hash: str, wall_seconds: float,
                     devices: int, device: str, reason: str | None = None,
                     **extra: Any) -> "TrialResult":
        """The result a trial's epoch history implies (best and final val top-1/top-5, the
        selected epoch under ``train.select``); ``extra`` carries what the history cannot
        know (test accuracy, energy, teacher, warnings)."""
        top1 = [m.top1 for m in history]
        top5 = [m.top5 for m in history]
        select = config.get("train", {}).get("select", "best")
        chosen = selected_index(top1, select)
        picked = {"selected_epoch": history[chosen].epoch,
                  "val_top1": top1[chosen]} if chosen is not None else {}
        return cls(
            status=status, reason=reason,
            best_top1=max(top1) if top1 else None, final_top1=top1[-1] if top1 else None,
            best_top5=max(top5) if top5 else None, final_top5=top5[-1] if top5 else None,
            epochs_run=history[-1].epoch if history else 0, wall_seconds=wall_seconds,
            device_seconds=wall_seconds * devices, device=device, config=config,
            config_hash=config_hash, config_id=config_id_of(config),
            code_version=code_version(), history=history, **{**picked, **extra})


def selected_index(val_top1: list[float], select: str) -> int | None:
    """Index of the selected epoch: the first best on val, or the last."""
    if not val_top1:
        return None
    if select == "last":
        return len(val_top1) - 1
    return max(range(len(val_top1)), key=lambda i: (val_top1[i], -i))


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """git commit (with '+dirty') of the package when it lives in a checkout, else the
    installed package version."""
    from importlib.metadata import PackageNotFoundError, version

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                                capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=here, capture_output=True, text=True, timeout=5)
            flag = "+dirty" if dirty.stdout.strip() else ""
            return f"git:{commit.stdout.strip()}{flag}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"bkd-sweep=={version('bkd-sweep')}"
    except PackageNotFoundError:
        return "unknown"


def trial_id_of(number: int) -> str:
    """The trial id used everywhere (dirs, MLflow, Parquet): 't%04d' of the Optuna number."""
    return f"t{number:04d}"


def epoch_metric(metrics: EpochMetrics, name: str) -> float:
    """A per-epoch metric by name: an EpochMetrics field or ``loss_terms.<term>``."""
    if name.startswith("loss_terms."):
        return float(metrics.loss_terms[name.split(".", 1)[1]])
    return float(getattr(metrics, name))


RESULT_METRICS = ("val_top1", "test_top1", "test_top5", "selected_epoch", "final_top1",
                  "energy_mj", "sops", "macs", "firing_rate", "teacher_val_top1",
                  "teacher_test_top1", "teacher_energy_mj")


def result_metrics(result: TrialResult) -> dict[str, float | None]:
    """A finished trial's headline numbers by name (None when unknown), the same names in
    Parquet (``metric.<name>``), MLflow, the objectives, the report and ``bkd-sweep train``.
    ``val_top1`` is the selected checkpoint's val top-1 (what selects), ``test_top1`` its
    test top-1 (measured once, what is reported); energy is per sample, on those weights."""
    energy = result.energy
    return {
        "val_top1": result.val_top1,
        "test_top1": result.test_top1,
        "test_top5": result.test_top5,
        "selected_epoch": result.selected_epoch,
        "final_top1": result.final_top1,
        "energy_mj": energy.energy_mj if energy else None,
        "sops": energy.sops if energy else None,
        "macs": energy.macs if energy else None,
        "firing_rate": energy.mean_firing_rate if energy else None,
        "teacher_val_top1": result.teacher_val_top1,
        "teacher_test_top1": result.teacher_test_top1,
        "teacher_energy_mj": result.teacher_energy_mj,
    }


@dataclass
class TrialRecord:
    """One finished (completed | pruned | failed) trial: what the engine records and hands to
    tracking (Parquet rows, the MLflow child run)."""

    trial_id: str  # "t0007", stable across retries and resumes
    trial_number: int  # Optuna trial number
    params: dict[str, Any]  # the searched params, dotted paths -> values
    seed: int
    result: TrialResult
    pruned_epoch: int | None = None  # the epoch a pruner stopped it at


def parse_epoch_log(text: str) -> dict[int, EpochMetrics]:
    """An epoch log (one EpochMetrics JSON line per epoch the driver saw) by epoch: the last
    line of an epoch wins, a line cut by a kill is skipped."""
    history: dict[int, EpochMetrics] = {}
    for line in text.splitlines():
        try:
            metrics = EpochMetrics.model_validate_json(line)
        except ValueError:
            continue
        history[metrics.epoch] = metrics
    return history
