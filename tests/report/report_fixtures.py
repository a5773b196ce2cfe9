"""Hand-made results folders written per the Parquet contract (schema version 2) with pyarrow,
using the tracking stage's own Arrow schema (types and version metadata).

``fixture_results_dir``: 24 trials with known values (see TOP1 / ENERGY below), one pruned and one
failed. ``make_large_results``: a generated study of N trials for the scale test.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bkd_sweep.config import Study
from bkd_sweep.tracking.schema import SCHEMA_VERSION, EPOCHS_SCHEMA, coerce, trials_schema

PRUNED, FAILED = "pruned", "failed"
# (mode, arch) -> top1 per seed 0, 1, 2; PRUNED / FAILED mark the excluded trials
TOP1: dict[tuple[str, str], list[Any]] = {
    ("none", "snn_a"): [70.0, 71.0, 72.0],
    ("logit", "snn_a"): [73.0, 74.0, 75.0],
    ("bkd", "snn_a"): [74.0, 75.0, PRUNED],
    ("mixed", "snn_a"): [76.0, 76.5, 77.5],
    ("none", "snn_b"): [60.0, 62.0, 64.0],
    ("logit", "snn_b"): [67.0, 68.0, 69.0],
    ("bkd", "snn_b"): [66.0, 67.0, FAILED],
    ("mixed", "snn_b"): [68.0, 69.0, 70.0],
}
ENERGY: dict[tuple[str, str], list[float]] = {
    ("none", "snn_a"): [0.06] * 3, ("logit", "snn_a"): [0.055] * 3,
    ("bkd", "snn_a"): [0.05] * 3, ("mixed", "snn_a"): [0.04, 0.05, 0.06],
    ("none", "snn_b"): [0.12] * 3, ("logit", "snn_b"): [0.11] * 3,
    ("bkd", "snn_b"): [0.10] * 3, ("mixed", "snn_b"): [0.09, 0.10, 0.11],
}
TEACHER_TOP1, TEACHER_ENERGY = 90.0, 0.5
METRICS = ("val_top1", "test_top1", "test_top5", "selected_epoch", "final_top1", "energy_mj",
           "sops", "macs", "firing_rate", "teacher_val_top1", "teacher_test_top1",
           "teacher_energy_mj")
SPLIT_RULE = "test: 20% of each class; val: 10% of each class of the rest; seed 0"


def fixture_study(**report: Any) -> Study:
    return Study.model_validate({
        "name": "fixture",
        "description": "Hand-made fixture: four distillation modes on two students.",
        "search": {"seeds": [0, 1, 2],
                   "params": {"distill.mode": ["none", "logit", "bkd", "mixed"],
                              "student.arch": ["snn_a", "snn_b"]},
                   "objectives": [{"metric": "top1", "mode": "max"},
                                  {"metric": "energy_mj", "mode": "min"}]},
        "report": report or {"tables": [{"name": "ablation", "rows": "distill.mode",
                                         "cols": "student.arch", "metric": "top1"}]},
    })


def write_results(results_dir: Path, study: Study, trials: list[dict[str, Any]],
                  epochs: list[dict[str, Any]]) -> Path:
    """Write trials.parquet / epochs.parquet / study.json with the tracking stage's schema.

    ``trials``: dicts with params (dotted overrides), seed, status, reason, metrics (name ->
    value or None), epochs_run, device_seconds, finished_at.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    schema = trials_schema()
    rows = []
    for i, t in enumerate(trials):
        cfg = study.trial_config(t["params"], t["seed"])
        row: dict[str, Any] = {f.name: None for f in schema}
        row.update({
            "trial_id": f"t{i:04d}", "trial_number": i, "study": study.name,
            "status": t["status"], "reason": t.get("reason"), "seed": t["seed"]})
        row.update({f"param.{k}": coerce(v, schema.field(f"param.{k}").type)
                    for k, v in cfg.flat().items()})
        row.update({f"metric.{m}": t["metrics"].get(m) for m in METRICS})
        row.update({
            "epochs_run": t.get("epochs_run", 3), "epochs_planned": 3,
            "pruned_epoch": t.get("pruned_epoch"), "wall_seconds": t.get("wall_seconds", 120.0),
            "device_seconds": t.get("device_seconds", 100.0), "device": "cpu",
            "config_hash": cfg.config_hash(), "config_id": cfg.config_id(),
            "selection_on_test": False, "split_rule": SPLIT_RULE, "code_version": "test",
            "mlflow_run_id": None, "config_json": cfg.model_dump_json(),
            "firing_rates_json": json.dumps({"lif1": 0.1}),
            "finished_at": t["finished_at"], "schema_version": SCHEMA_VERSION})
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), results_dir / "trials.parquet")
    ep_rows = [{**{f.name: None for f in EPOCHS_SCHEMA}, **e, "schema_version": SCHEMA_VERSION}
               for e in epochs]
    pq.write_table(pa.Table.from_pylist(ep_rows, schema=EPOCHS_SCHEMA),
                   results_dir / "epochs.parquet")
    (results_dir / "study.json").write_text(json.dumps(study.model_dump(mode="json"),
                                                       indent=2), encoding="utf-8")
    return results_dir


def _metrics(top1: float | None, energy: float | None) -> dict[str, Any]:
    return {"test_top1": top1, "val_top1": None if top1 is None else top1 + 0.25,
            "final_top1": None if top1 is None else top1 - 0.5,
            "test_top5": None if top1 is None else min(100.0, top1 + 15.0),
            "selected_epoch": 3, "energy_mj": energy,
            "sops": None if energy is None else energy * 1e9 / 0.9,
            "macs": None if energy is None else 1e6, "firing_rate": 0.15,
            "teacher_val_top1": TEACHER_TOP1 + 0.5, "teacher_test_top1": TEACHER_TOP1,
            "teacher_energy_mj": TEACHER_ENERGY}


def fixture_trials() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    trials, epochs = [], []
    for (mode, arch), values in TOP1.items():
        for seed, top1 in enumerate(values):
            i = len(trials)
            energy = ENERGY[(mode, arch)][seed]
            t = {"params": {"distill.mode": mode, "student.arch": arch}, "seed": seed,
                 "finished_at": start + timedelta(minutes=i), "device_seconds": 100.0 + i}
            if top1 == PRUNED:  # a pruned trial has a (low) top1: it must not be averaged
                t.update(status="pruned", reason="median pruner at epoch 1", pruned_epoch=1,
                         epochs_run=1, metrics=_metrics(50.0, None))
                epochs.append({"trial_id": f"t{i:04d}", "epoch": 1, "metric.top1": 50.0})
            elif top1 == FAILED:
                t.update(status="failed", reason="RuntimeError: CUDA out of memory",
                         epochs_run=0, metrics=_metrics(None, None))
            else:
                t.update(status="completed", metrics=_metrics(top1, energy))
                for e in (1, 2, 3):
                    epochs.append({"trial_id": f"t{i:04d}", "epoch": e,
                                   "metric.top1": top1 - 2.0 * (3 - e), "metric.loss": 1.0 / e,
                                   "lr": 1e-3})
            trials.append(t)
    return trials, epochs


def fixture_results_dir(results_dir: Path, **report: Any) -> Path:
    trials, epochs = fixture_trials()
    return write_results(results_dir, fixture_study(**report), trials, epochs)


def two_mode_results_dir(results_dir: Path, mixed: list[float], none: list[float],
                         **report: Any) -> Path:
    """A study of distill.mode none vs mixed only, one completed trial per given top1 value
    (seed = its position), for significance tests with a chosen effect and seed count."""
    study = Study.model_validate({
        "name": "two_modes",
        "search": {"seeds": list(range(max(len(mixed), len(none), 1))),
                   "params": {"distill.mode": ["none", "mixed"]},
                   "objectives": [{"metric": "top1", "mode": "max"}]},
        "report": report or {"tables": [{"name": "ablation", "rows": "distill.mode"}]},
    })
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    trials = [{"params": {"distill.mode": mode}, "seed": seed, "status": "completed",
               "metrics": _metrics(top1, 0.05), "finished_at": start + timedelta(minutes=i)}
              for i, (mode, seed, top1) in enumerate(
                  [("none", s, v) for s, v in enumerate(none)]
                  + [("mixed", s, v) for s, v in enumerate(mixed)])]
    return write_results(results_dir, study, trials, [])


def make_large_results(results_dir: Path, n_trials: int = 1000, seed: int = 0) -> Path:
    """A generated study: 4 modes x 5 students x 3 timesteps x blur ratios, 3 seeds, mixed
    statuses, 5 epochs per trial."""
    rng = np.random.default_rng(seed)
    modes, archs, steps, blurs = ["none", "logit", "bkd", "mixed"], \
        [f"snn_{k}" for k in "abcde"], [2, 4, 8], [0.15, 0.4, 0.6]
    study = Study.model_validate({
        "name": "large",
        "search": {"sampler": "random", "seeds": [0, 1, 2], "n_trials": n_trials,
                   "params": {"distill.mode": modes, "student.arch": archs,
                              "student.timesteps": steps,
                              "distill.blur_ratio": {"values": blurs,
                                                     "when": {"distill.mode": ["bkd", "mixed"]}}},
                   "objectives": [{"metric": "top1"}, {"metric": "energy_mj", "mode": "min"}]},
        "report": {"tables": [{"name": "ablation", "rows": "distill.mode",
                               "cols": "student.arch"}]},
    })
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    trials, epochs = [], []
    for i in range(n_trials):
        mode, arch = modes[rng.integers(4)], archs[rng.integers(5)]
        t_steps = int(steps[rng.integers(3)])
        params: dict[str, Any] = {"distill.mode": mode, "student.arch": arch,
                                  "student.timesteps": t_steps}
        if mode in ("bkd", "mixed"):
            params["distill.blur_ratio"] = float(blurs[rng.integers(3)])
        top1 = float(70 + 2 * modes.index(mode) + archs.index(arch) + t_steps / 4
                     + rng.normal(0, 0.5))
        energy = float(0.01 * t_steps * (1 + archs.index(arch)) * (1 + 0.1 * rng.random()))
        u = rng.random()
        status = "completed" if u < 0.85 else ("pruned" if u < 0.95 else "failed")
        metrics = _metrics(top1 if status != "failed" else None,
                           energy if status == "completed" else None)
        trials.append({"params": params, "seed": int(rng.integers(3)), "status": status,
                       "reason": None if status == "completed" else status, "metrics": metrics,
                       "finished_at": start + timedelta(seconds=37 * i),
                       "device_seconds": float(60 + rng.integers(60))})
        for e in range(1, 6 if status == "completed" else 2):
            epochs.append({"trial_id": f"t{i:04d}", "epoch": e,
                           "metric.top1": top1 - (5 - e) + float(rng.normal(0, 0.2))})
    return write_results(results_dir, study, trials, epochs)
