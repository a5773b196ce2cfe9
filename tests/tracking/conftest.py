"""Synthetic studies and trial records (no training, no Ray) for the tracking tests."""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bkd_sweep.config import Study
from bkd_sweep.records import EnergyReport, EpochMetrics, TrialRecord, TrialResult
from bkd_sweep.tracking.schema import SCHEMA_VERSION_KEY
from tests.servers import s3 as s3_module

MODES = ("none", "bkd")
SEEDS = (0, 1)


def make_study(name: str = "demo", **top: Any) -> Study:
    """A tiny study: distill.mode x student.timesteps searched, two seeds, 3 epochs."""
    spec = {"params": {"distill.mode": list(MODES), "student.timesteps": [2, 4]},
            "seeds": list(SEEDS)}
    return Study.model_validate({"name": name, "train": {"epochs": 3}, "search": spec, **top})


def epoch_top1(trial_number: int, epoch: int) -> float:
    """A known, distinct curve per trial so stored values can be checked by hand."""
    return 50.0 + 10.0 * epoch + trial_number / 10


def make_record(study: Study, trial_number: int, params: dict[str, Any], seed: int, *,
                status: str = "completed", epochs: int = 3, energy: bool = True,
                offset: float = 0.0, pruned_epoch: int | None = None) -> TrialRecord:
    """A TrialRecord as the engine would hand it over. ``offset`` shifts every value (a retry
    that produced different numbers)."""
    config = study.trial_config(params, seed)
    history = [
        EpochMetrics(epoch=e, top1=epoch_top1(trial_number, e) + offset,
                     top5=90.0 + e + offset, val_loss=1.0 / e, loss=2.0 / e,
                     loss_terms={"task": 1.0 / e, "bkd": 0.5 / e} if params.get(
                         "distill.mode") == "bkd" else {"task": 1.0 / e},
                     lr=1e-3 / e, wall_seconds=0.5 * e)
        for e in range(1, epochs + 1)
    ]
    tops = [m.top1 for m in history]
    report = EnergyReport(energy_mj=0.01 * (trial_number + 1), sops=1e6, macs=2e5,
                          mean_firing_rate=0.12, timesteps=config.student.timesteps,
                          e_mac_pj=4.6, e_ac_pj=0.9, first_layer_once=False,
                          firing_rates={"lif1": 0.1, "lif2": 0.14})
    result = TrialResult.from_history(
        status, history, reason=None if status == "completed" else f"{status} by test",
        energy=report if energy else None,
        test_top1=max(tops) - 0.5 if tops and status == "completed" else None,
        wall_seconds=1.5 * len(history), devices=1, device="cpu",
        config=config.model_dump(mode="json"), config_hash=config.config_hash())
    result = result.model_copy(update={"device_seconds": 1.5})
    return TrialRecord(trial_id=f"t{trial_number:04d}", trial_number=trial_number,
                       params=dict(params), seed=seed, result=result,
                       pruned_epoch=pruned_epoch)


def grid_records(study: Study) -> list[TrialRecord]:
    """The full grid x seeds of make_study(): 8 completed trials."""
    out = []
    combos = itertools.product(MODES, (2, 4), SEEDS)
    for number, (mode, t, seed) in enumerate(combos):
        out.append(make_record(study, number, {"distill.mode": mode,
                                               "student.timesteps": t}, seed))
    return out


@pytest.fixture
def study() -> Study:
    return make_study()


@pytest.fixture
def results_dir(tmp_path: Path, study: Study) -> Path:
    return tmp_path / "results" / study.name


@pytest.fixture(autouse=True)
def _no_ambient_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their tracking URI explicitly; a user's environment must not leak in."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the session (each test uses its own study = experiment)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(name="make_record")
def _make_record_fixture():
    return make_record


@pytest.fixture(name="grid_records")
def _grid_records_fixture():
    return grid_records


@pytest.fixture(name="make_study")
def _make_study_fixture():
    return make_study


@pytest.fixture(name="epoch_top1")
def _epoch_top1_fixture():
    return epoch_top1


# ---------------------------------------------------------------- what a sweep leaves per trial


def record_like_a_sweep(results_dir: Path, store, record: TrialRecord,
                        run_id: str | None = None) -> None:
    """What the sweep driver writes for one finished trial: the epoch log and result.json
    (engine/trial_files.py, the real writer), then the trial's Parquet rows."""
    from bkd_sweep.engine.trial_files import TrialFiles

    files = TrialFiles(results_dir)
    for metrics in record.result.history:
        files.append_epoch(record.trial_number, metrics)
    files.write_result(record.trial_number, record.result, record.pruned_epoch,
                       params=record.params, seed=record.seed)
    store.upsert(record, mlflow_run_id=run_id)


def write_v1(results_dir: Path) -> None:
    """A results folder as schema v1 wrote it (before three splits): two trials, one epoch,
    and the study.json of make_study("old")."""
    results_dir.mkdir(parents=True)
    meta = {SCHEMA_VERSION_KEY: b"1"}
    trials = pa.table({
        "trial_id": ["t0000", "t0001"], "trial_number": [0, 1], "study": ["old", "old"],
        "status": ["completed", "completed"], "reason": [None, None], "seed": [0, 1],
        "param.distill.mode": ["none", "none"], "metric.top1": [91.5, 92.5],
        "metric.top5": [99.0, 99.5], "metric.teacher_top1": [95.0, 95.0],
        "metric.energy_mj": [0.01, 0.01], "schema_version": pa.array([1, 1], pa.int32()),
    }).replace_schema_metadata(meta)
    pq.write_table(trials, results_dir / "trials.parquet")
    epochs = pa.table({"trial_id": ["t0000"], "epoch": [1], "metric.top1": [91.5],
                       "schema_version": pa.array([1], pa.int32())}).replace_schema_metadata(meta)
    pq.write_table(epochs, results_dir / "epochs.parquet")
    study = make_study("old").model_dump(mode="json")
    (results_dir / "study.json").write_text(json.dumps(study))


@pytest.fixture(name="write_v1")
def _write_v1_fixture():
    return write_v1


@pytest.fixture(name="record_like_a_sweep")
def _record_like_a_sweep_fixture():
    return record_like_a_sweep


# ---------------------------------------------------------------- a real S3-compatible server

S3_BUCKET = "bkd-results"


@pytest.fixture
def moto_server(s3_server: str) -> str:
    """The session's S3 server (tests/conftest.py), with the bucket ``bkd-results``."""
    s3_module.ensure_bucket(s3_server, S3_BUCKET)
    return s3_server


@pytest.fixture
def s3(moto_server: str, monkeypatch: pytest.MonkeyPatch):
    """(boto3 client, study URI): the standard AWS variables point at the moto server, and
    each test gets its own prefix in the bucket."""
    import boto3

    for name, value in (("AWS_ENDPOINT_URL", moto_server), ("AWS_ACCESS_KEY_ID", "test"),
                        ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    prefix = uuid.uuid4().hex[:12]
    return boto3.client("s3"), f"s3://{S3_BUCKET}/{prefix}/demo"
