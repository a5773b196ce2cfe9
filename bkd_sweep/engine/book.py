"""The driver's ledger of a sweep: the Optuna study (journal file) and per-trial files.

Everything that decides a trial's fate goes through one ``SweepBook`` in the driver process:
asking Optuna for the next trial (or handing back an interrupted one), the epochs seen, and
the final word (COMPLETE / PRUNED / FAIL). The outcome is written to
``trials/<id>/result.json`` *before* Optuna is told, so a driver killed at any point can
finish the bookkeeping on ``--resume`` without running the trial again (see runner.py).
No Ray here: the searcher, scheduler and callbacks are thin adapters over this class.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bkd_sweep import space
from bkd_sweep.records import EpochMetrics, TrialResult
from bkd_sweep.config import Study, StudyError, TrialConfig

log = logging.getLogger(__name__)

JOURNAL_FILE = "optuna.journal"
TRIALS_DIR = "trials"
RESULT_FILE = "result.json"
EPOCHS_FILE = "epochs.jsonl"
SEED_ATTR = "seed"
PRUNED_EPOCH_ATTR = "pruned_epoch"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

# Per-epoch values a pruner may compare, with the direction in which they improve.
EPOCH_METRIC_MODES = {"top1": "max", "top5": "max", "val_loss": "min", "loss": "min"}


STUDY_HASH_ATTR = "bkd_study_hash"
# Where a sweep may differ between sessions without changing what its trials are.
_MACHINE_FIELDS = {"data": ("root", "num_workers"), "teacher": ("checkpoint",),
                   "train": ("device", "threads")}


def study_fingerprint(study: Study) -> str:
    """Hash of what defines a sweep's trials (search + base config), not of where or how it
    runs (paths, resources, tracking, report): a resumed sweep must match it."""
    tree = study.model_dump(mode="json", exclude={"resources", "tracking", "report",
                                                   "description", "search"})
    # params one by one: dumping the union of param kinds through Study warns in pydantic
    tree["search"] = {**study.search.model_dump(mode="json", exclude={"params"}),
                      "params": {path: spec.model_dump(mode="json")
                                 for path, spec in study.search.params.items()}}
    for section, keys in _MACHINE_FIELDS.items():
        for key in keys:
            tree[section].pop(key, None)
    for bundles in tree["search"]["linked"].values():
        for overrides in bundles.values():
            for path in ("data.root", "teacher.checkpoint", "data.num_workers"):
                overrides.pop(path, None)
    blob = json.dumps(tree, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stored_fingerprint(study: Study, results_dir: Path) -> str | None:
    """The fingerprint a sweep in ``results_dir`` was started with (None: no sweep there)."""
    if not (Path(results_dir) / JOURNAL_FILE).exists():
        return None
    storage = journal_storage(results_dir)
    if study.name not in optuna.get_all_study_names(storage):
        return None if not optuna.get_all_study_names(storage) else "?"
    return optuna.load_study(study_name=study.name, storage=storage).user_attrs.get(
        STUDY_HASH_ATTR)


def trial_id_of(number: int) -> str:
    """The trial id used everywhere (dirs, MLflow, Parquet): 't%04d' of the Optuna number."""
    return f"t{number:04d}"


def journal_storage(results_dir: Path) -> JournalStorage:
    """The multi-process-safe Optuna journal under results/<study>/."""
    path = Path(results_dir) / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return JournalStorage(JournalFileBackend(str(path)))


def epoch_metric(metrics: EpochMetrics, name: str) -> float:
    """A per-epoch metric by name: an EpochMetrics field or ``loss_terms.<term>``."""
    if name.startswith("loss_terms."):
        return float(metrics.loss_terms[name.split(".", 1)[1]])
    return float(getattr(metrics, name))


def objective_value(result: TrialResult, metric: str) -> float | None:
    """A finished trial's value for an objective metric (top1 = best top-1; loss = the last
    epoch's validation loss; energy metrics per sample)."""
    energy = result.energy
    history = result.history
    values = {
        "top1": result.best_top1, "final_top1": result.final_top1, "top5": result.best_top5,
        "energy_mj": energy.energy_mj if energy else None,
        "sops": energy.sops if energy else None, "macs": energy.macs if energy else None,
        "firing_rate": energy.mean_firing_rate if energy else None,
        "loss": history[-1].val_loss if history else None,
        "wall_seconds": result.wall_seconds,
    }
    if metric not in values:
        raise KeyError(f"unknown objective metric {metric!r}; known: {', '.join(values)}")
    value = values[metric]
    return None if value is None or not math.isfinite(float(value)) else float(value)


@dataclass(frozen=True)
class TrialSpec:
    """One trial as the engine hands it to a worker."""

    number: int
    params: dict[str, Any]  # searched params (dotted paths, linked.<group> labels)
    seed: int
    config: TrialConfig
    rerun: bool = False  # an interrupted trial run again from its checkpoint

    @property
    def trial_id(self) -> str:
        return trial_id_of(self.number)

    def ray_config(self) -> dict[str, Any]:
        """What travels to the worker (plain JSON)."""
        return {"trial_id": self.trial_id, "number": self.number, "params": self.params,
                "seed": self.seed, "trial_config": self.config.model_dump(mode="json")}


@dataclass
class Outcome:
    """A finished trial's record as tracking wants it (see tracking.TrialRecord)."""

    spec: TrialSpec
    result: TrialResult
    pruned_epoch: int | None = None


@dataclass
class _Live:
    spec: TrialSpec
    trial: optuna.Trial
    history: dict[int, EpochMetrics] = field(default_factory=dict)


class SweepBook:
    """The Optuna study of one sweep plus the files that make finishing a trial atomic."""

    def __init__(self, study: Study, results_dir: Path, *, storage: Any = None,
                 device: str = "cpu", devices_per_trial: float = 1.0):
        self.study = study
        self.search = study.search
        self.results_dir = Path(results_dir).resolve()
        self.total = space.count_trials(self.search)
        self.device = device
        self.devices_per_trial = devices_per_trial
        self.multi_objective = len(self.search.objectives) > 1
        self.pruner_name = self.search.pruner.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self.optuna = optuna.create_study(
                study_name=study.name, storage=storage or journal_storage(self.results_dir),
                directions=space.study_directions(self.search),
                sampler=space.make_sampler(self.search),
                pruner=space.make_pruner(self.search.pruner), load_if_exists=True)
        fingerprint = study_fingerprint(study)
        stored = self.optuna.user_attrs.get(STUDY_HASH_ATTR)
        if stored is None and not self._frozen():
            self.optuna.set_user_attr(STUDY_HASH_ATTR, fingerprint)
        elif stored != fingerprint:
            raise StudyError(f"{self.results_dir} holds a sweep of a different version of "
                             f"study {study.name!r} (search or base config changed); "
                             "restore the study file or use a new results directory")
        self._live: dict[int, _Live] = {}
        self._ray_ids: dict[str, int] = {}
        self._reruns: list[int] = []

    # ---------------------------------------------------------------- opening

    def _frozen(self) -> list[optuna.trial.FrozenTrial]:
        return self.optuna.get_trials(deepcopy=False)

    def is_empty(self) -> bool:
        return not self._frozen()

    def open(self) -> None:
        """Prepare a session: a new sweep enqueues its grid; an old one queues its
        interrupted (RUNNING) trials to run again under their own numbers."""
        trials = self._frozen()
        if not trials and self.search.sampler == "grid":
            for params, seed in space.grid_trials(self.search):
                self.optuna.enqueue_trial(space.to_optuna_params(params, self.search),
                                          user_attrs={SEED_ATTR: seed})
        self._reruns = sorted(t.number for t in trials if t.state == TrialState.RUNNING
                              and t.number not in self._live)

    def remaining(self) -> int:
        """Trials still to run this session (interrupted ones included)."""
        started = sum(1 for t in self._frozen() if t.state != TrialState.WAITING)
        return len(self._reruns) + max(0, self.total - started)

    # ---------------------------------------------------------------- asking

    def next_trial(self) -> TrialSpec | None:
        """The next trial to run, or None when the sweep has handed out all of them."""
        if self._reruns:
            number = self._reruns.pop(0)
            frozen = self._frozen()[number]
            trial = optuna.Trial(self.optuna, frozen._trial_id)
            params = space.from_optuna_params(frozen.params, self.search)
            seed = int(frozen.user_attrs.get(SEED_ATTR, self.search.seeds[0]))
            return self._start(number, trial, params, seed, rerun=True)
        frozen = self._frozen()
        if sum(1 for t in frozen if t.state != TrialState.WAITING) >= self.total:
            return None
        trial = self.optuna.ask()
        params = space.suggest(trial, self.search)
        seed = trial.user_attrs.get(SEED_ATTR)
        if seed is None:  # sampled (not enqueued): first seed now, the others queued next
            seed = self.search.seeds[0]
            trial.set_user_attr(SEED_ATTR, seed)
            created = len(frozen) + 1
            for other in self.search.seeds[1:]:
                if created >= self.total:
                    break
                self.optuna.enqueue_trial(space.to_optuna_params(params, self.search),
                                          user_attrs={SEED_ATTR: other})
                created += 1
        return self._start(trial.number, trial, params, int(seed), rerun=False)

    def _start(self, number: int, trial: optuna.Trial, params: dict[str, Any], seed: int,
               *, rerun: bool) -> TrialSpec:
        try:
            config = self.study.trial_config(params, seed)
        except StudyError as exc:  # a combination the schema rejects: the trial fails
            spec = TrialSpec(number, params, seed, self.study.base_config(), rerun)
            self._live[number] = _Live(spec, trial)
            self.fail(number, f"invalid configuration: {exc.one_line()}")
            return self.next_trial()  # type: ignore[return-value]
        spec = TrialSpec(number, params, seed, config, rerun)
        self._live[number] = _Live(spec, trial, self._load_history(number))
        return spec

    def bind(self, ray_trial_id: str, number: int) -> None:
        self._ray_ids[ray_trial_id] = number

    def number_for(self, ray_trial_id: str) -> int | None:
        return self._ray_ids.get(ray_trial_id)

    def spec(self, number: int) -> TrialSpec:
        return self._live[number].spec

    def optuna_trial(self, number: int) -> optuna.Trial:
        return self._live[number].trial

    # ---------------------------------------------------------------- epochs

    def trial_dir(self, number: int) -> Path:
        return self.results_dir / TRIALS_DIR / trial_id_of(number)

    def observe_epoch(self, number: int, metrics: EpochMetrics) -> None:
        """Remember an epoch (memory + epochs.jsonl, so a resumed driver still has it)."""
        live = self._live[number]
        live.history[metrics.epoch] = metrics
        path = self.trial_dir(number) / EPOCHS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(metrics.model_dump_json() + "\n")

    def _load_history(self, number: int) -> dict[int, EpochMetrics]:
        path = self.trial_dir(number) / EPOCHS_FILE
        history: dict[int, EpochMetrics] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    metrics = EpochMetrics.model_validate_json(line)
                except ValueError:  # a line cut by a kill
                    continue
                history[metrics.epoch] = metrics
        return history

    def history(self, number: int) -> list[EpochMetrics]:
        return [m for _, m in sorted(self._live[number].history.items())]

    # ---------------------------------------------------------------- pruning values

    def pruning_value(self, metrics: EpochMetrics) -> float:
        """The value reported to Optuna at each epoch: ``search.pruned_metric``, negated when
        its direction is opposite to the study's (so median-type pruners compare it the right
        way round); threshold pruners see the raw value (their bounds are in its units)."""
        value = epoch_metric(metrics, self.search.pruned_metric)
        if self.pruner_name in ("none", "threshold") or self.multi_objective:
            return value
        metric_mode = EPOCH_METRIC_MODES.get(self.search.pruned_metric.split(".")[0], "min")
        return value if metric_mode == self.search.objectives[0].mode else -value

    # ---------------------------------------------------------------- finishing

    def state(self, number: int) -> TrialState:
        return self._frozen()[number].state

    def is_finished(self, number: int) -> bool:
        return self.state(number) in FINISHED

    def complete(self, number: int, result: TrialResult) -> TrialState:
        """A worker's final TrialResult: COMPLETE with the objective values (in objective
        order), or FAIL for a failed result or a missing objective value."""
        if result.status == "failed":
            return self._finish(number, result, TrialState.FAIL)
        if result.status == "pruned":
            return self._finish(number, result, TrialState.PRUNED)
        values = [objective_value(result, o.metric) for o in self.search.objectives]
        if any(v is None for v in values):
            missing = [o.metric for o, v in zip(self.search.objectives, values) if v is None]
            log.warning("%s: no finite value for objective %s; Optuna records it as FAIL",
                        trial_id_of(number), ", ".join(missing))
            return self._finish(number, result, TrialState.FAIL)
        return self._finish(number, result, TrialState.COMPLETE, values)  # type: ignore[arg-type]

    def prune(self, number: int, epoch: int, reason: str) -> TrialResult:
        """Record a scheduler-stopped trial: a pruned TrialResult from the epochs seen."""
        result = self._result_from_history(number, "pruned", reason)
        self._finish(number, result, TrialState.PRUNED, pruned_epoch=epoch)
        return result

    def fail(self, number: int, reason: str | None) -> TrialResult:
        """Record a trial that raised (after its retries). Calling again with a better reason
        rewrites result.json; Optuna keeps its first FAIL."""
        previous = self.read_result(number)
        if previous is not None and previous.status != "failed":
            return previous
        result = self._result_from_history(number, "failed", reason or "failed (see Ray logs)")
        self._finish(number, result, TrialState.FAIL)
        return result

    def _finish(self, number: int, result: TrialResult, state: TrialState,
                values: list[float] | None = None, pruned_epoch: int | None = None
                ) -> TrialState:
        frozen = self._frozen()[number]
        if frozen.state in FINISHED:
            if state == TrialState.FAIL and frozen.state == TrialState.FAIL:
                self._write_result(number, result, pruned_epoch)  # a better reason
            return frozen.state
        self._write_result(number, result, pruned_epoch)
        trial = self._live[number].trial if number in self._live else number
        if pruned_epoch is not None:
            self.optuna._storage.set_trial_user_attr(frozen._trial_id, PRUNED_EPOCH_ATTR,
                                                     pruned_epoch)
        self.optuna.tell(trial, values, state=state, skip_if_finished=True)
        return state

    def _write_result(self, number: int, result: TrialResult, pruned_epoch: int | None) -> None:
        path = self.trial_dir(number) / RESULT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"result": result.model_dump(mode="json"), "pruned_epoch": pruned_epoch}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, path)

    def read_result(self, number: int) -> TrialResult | None:
        found = self._read_outcome_file(number)
        return found[0] if found else None

    def _read_outcome_file(self, number: int) -> tuple[TrialResult, int | None] | None:
        path = self.trial_dir(number) / RESULT_FILE
        if not path.exists():
            return None
        payload = json.loads(path.read_text(encoding="utf-8"))
        return TrialResult.model_validate(payload["result"]), payload.get("pruned_epoch")

    def _result_from_history(self, number: int, status: str, reason: str) -> TrialResult:
        spec = self._live[number].spec if number in self._live else self._spec_from_optuna(number)
        history = self.history(number) if number in self._live else []
        return TrialResult.from_history(
            status, history, reason=reason,  # type: ignore[arg-type]
            config=spec.config.model_dump(mode="json"), config_hash=spec.config.config_hash(),
            wall_seconds=sum(m.wall_seconds for m in history),
            devices=self.devices_per_trial, device=self.device)

    def _spec_from_optuna(self, number: int) -> TrialSpec:
        frozen = self._frozen()[number]
        params = space.from_optuna_params(frozen.params, self.search)
        seed = int(frozen.user_attrs.get(SEED_ATTR, self.search.seeds[0]))
        try:
            config = self.study.trial_config(params, seed)
        except StudyError:
            config = self.study.base_config()
        return TrialSpec(number, params, seed, config)

    # ---------------------------------------------------------------- outcomes

    def outcome(self, number: int) -> Outcome | None:
        """The finished trial's record (None while it is not finished)."""
        if not self.is_finished(number):
            return None
        found = self._read_outcome_file(number)
        spec = self._live[number].spec if number in self._live else self._spec_from_optuna(number)
        if found is None:  # finished in Optuna but its file is gone: say so, do not invent
            result = self._result_from_history(number, "failed",
                                               "outcome lost (driver stopped while recording)")
            if self.state(number) == TrialState.PRUNED:
                result = result.model_copy(update={"status": "pruned",
                                                   "reason": "pruned (details lost)"})
            return Outcome(spec, result, self._frozen()[number].user_attrs.get(
                PRUNED_EPOCH_ATTR))
        result, pruned_epoch = found
        return Outcome(spec, result, pruned_epoch)

    def settle_interrupted(self) -> list[int]:
        """RUNNING trials whose result.json exists (the driver died between writing it and
        telling Optuna): tell Optuna now. Returns their numbers."""
        settled = []
        for frozen in self._frozen():
            if frozen.state != TrialState.RUNNING:
                continue
            found = self._read_outcome_file(frozen.number)
            if found is None:
                continue
            result, pruned_epoch = found
            self._live[frozen.number] = _Live(self._spec_from_optuna(frozen.number),
                                              optuna.Trial(self.optuna, frozen._trial_id))
            if result.status == "pruned":
                self._finish(frozen.number, result, TrialState.PRUNED, pruned_epoch=pruned_epoch)
            else:
                self.complete(frozen.number, result)
            settled.append(frozen.number)
        return settled

    def finished_numbers(self) -> list[int]:
        return [t.number for t in self._frozen() if t.state in FINISHED]

    def counts(self) -> dict[str, int]:
        """Trials by outcome over the whole sweep (all sessions)."""
        names = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned",
                 TrialState.FAIL: "failed", TrialState.RUNNING: "running",
                 TrialState.WAITING: "waiting"}
        counts = {name: 0 for name in names.values()}
        for t in self._frozen():
            counts[names[t.state]] += 1
        return counts

    def best(self) -> list[optuna.trial.FrozenTrial]:
        """The best trial (single objective) or the Pareto set (multi-objective)."""
        if not any(t.state == TrialState.COMPLETE for t in self._frozen()):
            return []
        if self.multi_objective:
            return list(self.optuna.best_trials)
        return [self.optuna.best_trial]
