"""``bkd-sweep status``: a live sweep as seen from any machine that reads its storage root.

Read-only: the Optuna journal gives the trial states, the Parquet tables the recorded numbers
(best configuration by seed mean, device-hours), the driver lease who is running it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from bkd_sweep.config import LoadedStudy, StudyError

_STATES = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed",
           "RUNNING": "running", "WAITING": "waiting"}


@dataclass
class SweepStatus:
    study: str
    where: str
    planned: int
    counts: dict[str, int]
    best: dict[str, Any] | None = None  # metric, value, seeds, params
    device_hours: float = 0.0
    driver: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(self.counts.get(k, 0) for k in ("completed", "pruned", "failed"))

    def render(self) -> str:
        c = self.counts
        to_start = max(0, self.planned - self.done - c.get("running", 0))
        lines = [f"study {self.study} in {self.where}",
                 f"trials: {self.planned} planned; {self.done} done ({c.get('completed', 0)} "
                 f"completed, {c.get('pruned', 0)} pruned, {c.get('failed', 0)} failed), "
                 f"{c.get('running', 0)} running, {to_start} to start",
                 f"device-hours used: {self.device_hours:.3f} (recorded trials)"]
        if self.best:
            params = " ".join(f"{k}={v}" for k, v in self.best["params"].items())
            lines.append(f"best so far: {self.best['metric']}={self.best['value']:.4g} "
                         f"(mean of {self.best['seeds']} seed(s)"
                         + (f"; {params})" if params else ")"))
        else:
            lines.append("best so far: none (no completed trial recorded yet)")
        lines.append(f"driver: {self.driver or 'none running'}")
        return "\n".join(lines + self.notes)


def sweep_status(loaded: LoadedStudy) -> SweepStatus:
    """The status of the loaded study's sweep in its storage root."""
    from bkd_sweep import space

    location = loaded.results_location()
    counts = _journal_counts(loaded, location)
    status = SweepStatus(study=loaded.study.name, where=location.uri,
                         planned=space.count_trials(_stored_study(location, loaded).search),
                         counts=counts)
    _add_recorded(status, loaded, location)
    status.driver = _driver(location)
    return status


def _stored_study(location, loaded: LoadedStudy):
    """The study the sweep runs (its study.json, with the --set it was started with), else the
    file's."""
    from bkd_sweep.config import Study

    try:
        return Study.model_validate_json(location.read_text("study.json"))
    except (FileNotFoundError, OSError, ValueError):
        return loaded.study


def _journal_counts(loaded: LoadedStudy, location) -> dict[str, int]:
    import optuna

    from bkd_sweep.engine.journal import journal_exists, journal_storage

    if not journal_exists(location):
        raise StudyError(f"no sweep of {loaded.study.name!r} in {location.uri} "
                         "(wrong --storage, or not started yet)", file=loaded.path)
    storage = journal_storage(location, read_only=True)
    try:
        study = optuna.load_study(study_name=loaded.study.name, storage=storage)
    except KeyError:
        raise StudyError(f"no sweep of {loaded.study.name!r} in {location.uri}",
                         file=loaded.path) from None
    from bkd_sweep.engine.book import RETRY_OF_ATTR

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    counts = {name: 0 for name in (*_STATES.values(), "retried")}
    for trial in trials:
        name = _STATES[trial.state.name]
        counts["retried" if name == "failed" and trial.number in retried else name] += 1
    return counts


def _add_recorded(status: SweepStatus, loaded: LoadedStudy, location) -> None:
    from bkd_sweep.tracking.store import ResultStore

    trials = ResultStore(location).read_trials()
    if trials.empty:
        return
    status.device_hours = float(trials["device_seconds"].fillna(0).sum()) / 3600
    objective = loaded.study.search.objectives[0]
    column = f"metric.{objective.metric}"
    done = trials[trials["status"] == "completed"]
    if column not in done or done[column].dropna().empty:
        return
    means = done.groupby("config_id")[column].agg(["mean", "count"]).dropna()
    best_id = means["mean"].idxmax() if objective.mode == "max" else means["mean"].idxmin()
    row = done[done["config_id"] == best_id].iloc[0]
    params = {name.removeprefix("param."): row[name]
              for name in (f"param.{p}" for p in loaded.study.search.params)
              if name in row.index}
    status.best = {"metric": objective.metric, "value": float(means.loc[best_id, "mean"]),
                   "seeds": int(means.loc[best_id, "count"]), "params": params}


def _driver(location) -> str | None:
    """Who holds the driver lease (engine/lease.py), when one is held."""
    try:
        payload = json.loads(location.read_text("driver.lease"))
    except (FileNotFoundError, OSError, ValueError):
        return None
    beat = payload.get("heartbeat_at")
    age = f", last heartbeat {time.time() - float(beat):.0f} s ago" if beat else ""
    return f"pid {payload.get('pid')} on host {payload.get('host')}{age}"
