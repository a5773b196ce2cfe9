"""MLflow side of tracking: one experiment per study, one parent run per sweep, one nested
child run per trial (tag ``mlflow.parentRunId``), plus the Parquet store as the lasting record.

Called from the sweep driver only. Everything goes through an explicit ``MlflowClient``
(never the fluent active-run API), so two studies in one process never share a run.
mlflow is imported lazily: reading results must not pay for (or require) it.
MLflow is a view; Parquet is the record: an MLflow failure during a trial is logged as a
warning and the trial's rows are still written (missing epochs are back-filled at finish).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bkd_sweep.config import Study, flatten
from bkd_sweep.redact import redact_text, redact_value
from bkd_sweep.storage import Location
from bkd_sweep.records import EpochMetrics, TrialRecord
from bkd_sweep.tracking.mlflow_values import (epoch_metrics, final_metrics, now_ms,
                                              param_value, resolve_tracking_uri, sqlite_path,
                                              tag_value, trial_tags)
from bkd_sweep.tracking.store import STUDY_FILE, ResultStore

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
_BATCH_PARAMS = 100  # MLflow's limit on params + tags per log_batch
_BATCH_METRICS = 1000
_RUN_STATUS = {"completed": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}
COMPACT_EVERY = 100  # trials recorded between two Parquet snapshots during a sweep


class StudyTracker:
    """The tracking stage of one study: MLflow runs plus results/<study>/*.parquet."""

    def __init__(self, study: Study, *, results_dir: Path, study_file: Path | None,
                 mlflow_uri: str | None = None):
        from mlflow.tracking import MlflowClient

        self.study = study
        self.location = Location.of(results_dir)  # a local/shared path or an object store
        self.results_dir = (self.location.local_path if self.location.is_local
                            else self.location.uri)
        self.study_file = Path(study_file).resolve() if study_file else None
        self._uri = resolve_tracking_uri(study, self.location, mlflow_uri)
        if self._uri.startswith("sqlite:///"):
            sqlite_path(self._uri).parent.mkdir(parents=True, exist_ok=True)
        self.client: MlflowClient = MlflowClient(tracking_uri=self._uri)
        self.store = ResultStore(self.location, study_name=study.name)
        self._experiment_id: str | None = None
        self._parent_id: str | None = None
        self._children: dict[str, str] = {}  # trial_id -> child run id
        # trial_id -> {epoch: its top1} already in MLflow: an epoch a retry re-ran with other
        # values is logged again (MLflow then shows the latest, as Parquet keeps the last)
        self._logged: dict[str, dict[int, float]] = {}
        self._live: dict[str, dict[int, EpochMetrics]] = {}  # epochs seen by log_epoch
        self._warned: set[str] = set()
        self._recorded = 0  # trials recorded by this tracker (a snapshot every COMPACT_EVERY)

    # ---------------------------------------------------------------- properties

    @property
    def tracking_uri(self) -> str:
        return self._uri

    @property
    def parent_run_id(self) -> str:
        """The sweep's parent run (from start_sweep, else from results_dir/sweep.json)."""
        if self._parent_id is None:
            info = self._read_sweep_info()
            if not info.get("parent_run_id"):
                raise RuntimeError(f"no sweep started for study {self.study.name!r} "
                                   f"({self.location.file(SWEEP_FILE)} missing)")
            self._parent_id = info["parent_run_id"]
            self._experiment_id = info.get("experiment_id")
        return self._parent_id

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._get_or_create_experiment()
        return self._experiment_id

    # ---------------------------------------------------------------- sweep

    def start_sweep(self, *, resume: bool) -> str:
        """Open (or, on resume, reopen) the parent run; write study.json; return the run id."""
        from mlflow.exceptions import MlflowException

        self.location.makedirs()
        study_json = json.dumps(redact_value(self.study.model_dump(mode="json")), indent=2)
        self.location.write_text(study_json, STUDY_FILE)
        experiment_id = self.experiment_id
        info = self._read_sweep_info()
        parent = None
        if resume and info.get("parent_run_id"):
            try:
                run = self.client.get_run(info["parent_run_id"])
            except MlflowException:
                run = None
            if run is not None and run.info.lifecycle_stage == "active" \
                    and run.info.experiment_id == experiment_id:
                parent = run.info.run_id
                if run.info.status != "RUNNING":
                    self.client.update_run(parent, status="RUNNING")
            else:
                log.warning("resume: parent run %s not found at %s; starting a new one",
                            info["parent_run_id"], self._uri)
        now = datetime.now(UTC).isoformat()
        if parent is None:
            parent = self._create_parent()
            info = {"parent_run_id": parent, "experiment_id": experiment_id,
                    "tracking_uri": redact_value(self._uri), "study": self.study.name,
                    "started_at": now,
                    "resumed_at": []}
        else:
            info.setdefault("resumed_at", []).append(now)
            info.pop("finished_at", None)
            info.pop("stopped_by", None)  # a resumed sweep may go on (a raised budget)
        self._parent_id = parent
        self._write_sweep_info(info)
        if self.study_file is not None and self.study_file.exists():
            # as text, redacted: a file `submit` staged has its ${VARS} filled in
            text = redact_text(self.study_file.read_text(encoding="utf-8"))
            self.client.log_text(parent, text, f"study/{self.study_file.name}")
        self.client.log_text(parent, study_json, f"study/{STUDY_FILE}")
        return parent

    def _compact(self) -> None:
        """Snapshot the per-trial Parquet files (a cache: the trial files stay the truth)."""
        try:
            self.store.compact()
        except Exception as exc:  # noqa: BLE001 - a failed snapshot loses nothing
            log.warning("Parquet snapshot not written (%s); readers use the trial files", exc)

    def finish_sweep(self) -> None:
        """Snapshot the Parquet tables, attach them to the parent run and end it (FINISHED)."""
        self._compact()
        parent = self.parent_run_id
        for path in ((self.store.trials_path, self.store.epochs_path)
                     if self.store.location.is_local else ()):
            if path.exists():
                self.client.log_artifact(parent, str(path), artifact_path="results")
        self.client.set_terminated(parent, status="FINISHED")
        info = self._read_sweep_info()
        info["finished_at"] = datetime.now(UTC).isoformat()
        self._write_sweep_info(info)

    def record_stop(self, reason: str) -> None:
        """The budget ended the sweep early: say so in sweep.json (the report shows it) and
        on the parent run."""
        info = self._read_sweep_info()
        info["stopped_by"] = reason
        self._write_sweep_info(info)
        self.client.set_tag(self.parent_run_id, "bkd.stopped_by", reason)

    def record_teachers(self, reports: list[dict[str, Any]]) -> None:
        """The teachers prepared before the trials (what each cost: device-seconds), in
        sweep.json for the report and summed on the parent run. A resumed sweep adds its own."""
        info = self._read_sweep_info()
        info.setdefault("teachers", []).extend(reports)
        self._write_sweep_info(info)
        spent = sum(float(r.get("device_seconds", 0.0)) for r in info["teachers"])
        self.client.log_metric(self.parent_run_id, "teacher_device_hours", spent / 3600)

    def unsynced_trials(self) -> dict[str, datetime]:
        """{trial id: finished_at} of the trials whose MLflow run was never completed."""
        return self.store.without_mlflow_run()

    def log_report(self, report_dir: Path) -> None:
        """Attach a built report folder to the parent run (artifact path ``report``)."""
        self.client.log_artifacts(self.parent_run_id, str(report_dir), artifact_path="report")

    # ---------------------------------------------------------------- trials

    def log_epoch(self, trial_id: str, params: dict[str, Any], metrics: EpochMetrics) -> None:
        """Log one epoch to the trial's child run (created on first use), once per epoch."""
        self._require_started()
        self._live.setdefault(trial_id, {})[metrics.epoch] = metrics
        try:
            from mlflow.entities import Param

            run_id, created = self._child(trial_id, params)
            if self._logged[trial_id].get(metrics.epoch) == metrics.top1:
                return
            new_params = [Param(k, param_value(v, k)) for k, v in params.items()] if created else []
            self._log_batches(run_id, metrics=epoch_metrics(metrics), params=new_params)
            self._logged[trial_id][metrics.epoch] = metrics.top1
        except Exception as exc:  # noqa: BLE001 - MLflow is a view; the trial goes on
            self._warn(trial_id, "log_epoch", exc)

    def finish_trial(self, record: TrialRecord, finished_at: datetime | None = None
                     ) -> str | None:
        """Complete the child run (params, final metrics, tags, artifacts, missing epochs),
        then upsert the trial's Parquet rows (exactly once per trial_id). A row whose run
        could not be completed keeps no run id: the next session sends it again, with its
        ``finished_at``. Returns the run id (None: MLflow failed)."""
        self._require_started()
        run_id = None
        live = self._live.pop(record.trial_id, {})
        history = {m.epoch: m for m in record.result.history}
        missing = {e: m for e, m in live.items() if e not in history}
        if missing:  # epochs reported live but absent from the result (e.g. a failed trial)
            merged = sorted({**missing, **history}.values(), key=lambda m: m.epoch)
            record = dataclasses.replace(
                record, result=record.result.model_copy(update={"history": merged}))
        try:
            run_id = self._finish_child(record)
        except Exception as exc:  # noqa: BLE001 - MLflow is a view; Parquet is the record
            self._warn(record.trial_id, "finish_trial", exc)
        self.store.upsert(record, mlflow_run_id=run_id, finished_at=finished_at)
        self._recorded += 1
        if self._recorded % COMPACT_EVERY == 0:
            self._compact()  # keeps mid-sweep reads (status, report) to a snapshot + a few files
        # forget the run: a retry after this finish finds it again by tag and reopens it
        self._children.pop(record.trial_id, None)
        self._logged.pop(record.trial_id, None)
        self._warned.discard(record.trial_id)
        return run_id

    # ---------------------------------------------------------------- internals

    def _require_started(self) -> None:
        if self._parent_id is None:
            raise RuntimeError("StudyTracker: call start_sweep() before logging trials")

    def _finish_child(self, record: TrialRecord) -> str:
        from mlflow.entities import Metric, Param, RunTag

        result = record.result
        run_id, _ = self._child(record.trial_id, record.params)
        logged = self._logged[record.trial_id]
        backfill = [m for m in result.history if logged.get(m.epoch) != m.top1]
        backfilled = [x for m in backfill for x in epoch_metrics(m)]

        run = self.client.get_run(run_id)
        leaves = {**record.params, **flatten(result.config or {})}
        leaves.setdefault("seed", record.seed)
        params = [Param(k, param_value(v, k)) for k, v in leaves.items()
                  if k not in run.data.params]  # a logged param cannot change value
        finals = final_metrics(record)
        stamp = now_ms()
        step = int(result.epochs_run)
        closing = [Metric(k, v, stamp, step) for k, v in finals.items()
                   if run.data.metrics.get(k) != v]  # a retry adds no duplicate point
        tags = {k: v for k, v in trial_tags(self.study.name, record).items() if v is not None}
        for stale in ("reason", "pruned_epoch"):
            if stale in run.data.tags and stale not in tags:
                self.client.delete_tag(run_id, stale)
        self._log_batches(run_id, metrics=backfilled + closing, params=params,
                          tags=[RunTag(k, tag_value(v)) for k, v in tags.items()])
        logged.update({m.epoch: m.top1 for m in backfill})
        try:  # copies of result.json: an artifact store this driver cannot reach must not
            # leave the run unfinished (and sent again by every later session)
            with tempfile.TemporaryDirectory(prefix="bkd_trial_") as tmp:
                config_path = Path(tmp) / "config.json"
                config_path.write_text(json.dumps(result.config, indent=2), encoding="utf-8")
                result_path = Path(tmp) / "result.json"
                result_path.write_text(result.model_dump_json(indent=2), encoding="utf-8")
                self.client.log_artifact(run_id, str(config_path))
                self.client.log_artifact(run_id, str(result_path))
        except Exception as exc:  # noqa: BLE001
            self._warn(record.trial_id, "log_artifact", exc)
        self.client.set_terminated(run_id, status=_RUN_STATUS[result.status])
        return run_id

    def _child(self, trial_id: str, params: dict[str, Any]) -> tuple[str, bool]:
        """(run id, created now) of the trial's child run: cached, found by tag, or new."""
        if trial_id in self._children:
            return self._children[trial_id], False
        if "'" in trial_id or "\\" in trial_id:
            raise ValueError(f"trial id {trial_id!r}: quotes are not allowed")
        parent = self.parent_run_id
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.trial_id = '{trial_id}' and "
                          f"tags.`mlflow.parentRunId` = '{parent}'",
            order_by=["attributes.start_time ASC"], max_results=10)
        created = not found
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":  # a retry reopens the run it left
                self.client.update_run(run_id, status="RUNNING")
            history = sorted(self.client.get_metric_history(run_id, "top1"),
                             key=lambda m: m.timestamp)  # the latest value per step wins
            steps = {m.step: m.value for m in history}
        else:
            tags = {"mlflow.parentRunId": parent, "trial_id": trial_id,
                    "study": self.study.name, "bkd_sweep.role": "trial"}
            run_id = self.client.create_run(self.experiment_id, tags=tags,
                                            run_name=trial_id).info.run_id
            steps = {}
        self._children[trial_id] = run_id
        self._logged[trial_id] = steps
        return run_id, created

    def _create_parent(self) -> str:
        from mlflow.entities import Param

        search = self.study.search
        tags = {"bkd_sweep.role": "sweep", "study": self.study.name}
        if self.study.description:
            tags["mlflow.note.content"] = self.study.description
        if self.study_file is not None:
            tags["study_file"] = str(self.study_file)
        run = self.client.create_run(self.experiment_id, tags=tags,
                                     run_name=f"{self.study.name}-sweep")
        params = {
            "search.sampler": search.sampler,
            "search.seeds": search.seeds,
            "search.params": sorted(search.params),
            "search.objectives": [o.model_dump() for o in search.objectives],
            "search.pruner": search.pruner.name,
            "search.n_trials": search.n_trials,
        }
        self._log_batches(run.info.run_id, params=[Param(k, param_value(v, k))
                                                   for k, v in params.items()])
        return run.info.run_id

    def _get_or_create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.study.name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(
                    name, artifact_location=self._artifact_location(),
                    tags={"bkd_sweep.study": name})
            except MlflowException:  # created meanwhile by another process
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id

    def _artifact_location(self) -> str | None:
        """For a local SQLite store: <db folder>/mlartifacts/<study> (MLflow's default would
        be ./mlruns under whatever directory the driver runs in). Servers choose their own."""
        if not self._uri.startswith("sqlite:///"):
            return None
        return (sqlite_path(self._uri).parent / "mlartifacts" / self.study.name).as_uri()

    def _log_batches(self, run_id: str, *, metrics: list | None = None,
                     params: list | None = None, tags: list | None = None) -> None:
        """log_batch within MLflow's per-call limits (one call in the common case)."""
        metrics, params, tags = list(metrics or []), list(params or []), list(tags or [])
        while metrics or params or tags:
            p = params[:_BATCH_PARAMS]
            t = tags[: _BATCH_PARAMS - len(p)]
            m = metrics[: _BATCH_METRICS - len(p) - len(t)]
            params, tags, metrics = params[len(p):], tags[len(t):], metrics[len(m):]
            self.client.log_batch(run_id, metrics=m, params=p, tags=t, synchronous=True)

    def _read_sweep_info(self) -> dict[str, Any]:
        try:
            return json.loads(self.location.read_text(SWEEP_FILE))
        except FileNotFoundError:
            return {}

    def _write_sweep_info(self, info: dict[str, Any]) -> None:
        self.location.write_text(json.dumps(info, indent=2), SWEEP_FILE)

    def _warn(self, trial_id: str, where: str, exc: Exception) -> None:
        if trial_id not in self._warned:
            self._warned.add(trial_id)
            log.warning("MLflow %s failed for trial %s (%s: %s); Parquet results are kept",
                        where, trial_id, type(exc).__name__, exc)


def attach_report(location: Location, out_dir: Path) -> None:
    """Log a built report on the sweep's MLflow parent run, when the sweep has one (the report
    itself never reads MLflow; this is only so the parent run carries it)."""
    try:
        if not location.exists(SWEEP_FILE) or not location.exists(STUDY_FILE):
            return
        study = Study.model_validate_json(location.read_text(STUDY_FILE))
        swept_on = json.loads(location.read_text(SWEEP_FILE)).get("tracking_uri")
        here = resolve_tracking_uri(study, location)
        if swept_on and redact_value(here) != swept_on:  # no stray store made here
            log.warning("report not attached to MLflow: the sweep tracked to %s, this shell "
                        "to %s (set MLFLOW_TRACKING_URI)", swept_on, redact_value(here))
            return
        StudyTracker(study, results_dir=location, study_file=None,
                     mlflow_uri=here).log_report(out_dir)
    except Exception as exc:  # noqa: BLE001 - the report is written; MLflow being away
        log.warning("report not attached to MLflow: %s", exc)  # must not fail it
