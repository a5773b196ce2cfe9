"""Kill the sweep driver (SIGKILL) mid-sweep, resume, and find every trial exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from bkd_sweep.engine.book import SweepBook
from bkd_sweep.config import load_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # the driver process starts its own Ray

HERE = Path(__file__).parent
ROOT = HERE.parents[1]  # on the driver's PYTHONPATH: it imports tests.engine.fakes
STUDY = """
name: killme
distill: {{mode: none}}
train: {{epochs: 6}}
search:
  sampler: grid
  params:
    distill.blur_ratio: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
resources: {{per_trial: {{cpu: 1}}}}
tracking: {{results_dir: {results}}}
"""


def _driver(study: Path, *extra: str) -> subprocess.Popen:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "BKD_FAKE_EPOCH_SECONDS": "0.5", "RAY_ADDRESS": "", "PYTHONPATH": path}
    return subprocess.Popen([sys.executable, str(HERE / "sweep_driver.py"), str(study), *extra],
                            env=env, cwd=study.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_sigkill_mid_sweep_then_resume_runs_each_trial_exactly_once(tmp_path):
    study = tmp_path / "killme.yaml"
    study.write_text(STUDY.format(results=tmp_path / "results"))
    trials = tmp_path / "results/killme/trials"
    proc = _driver(study)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # kill once two trials finished and others are mid-way
            done = list(trials.glob("*/result.json"))
            midway = [d for d in trials.glob("*") if (d / "ckpt/last.pt").exists()
                      and not (d / "result.json").exists()]
            if len(done) >= 2 and midway:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never reached two finished trials")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, at once
        proc.wait()
    finished_before = {p.parent.name for p in trials.glob("*/result.json")}
    interrupted = {d.name for d in trials.glob("*") if d.name not in finished_before}
    assert finished_before and interrupted

    resumed = _driver(study, "--resume")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "6/6 trials done (6 completed" in out

    loaded = load_study(study)
    book = SweepBook(loaded.study, tmp_path / "results/killme")
    frozen = book.optuna.trials
    assert [t.number for t in frozen] == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in frozen)
    for tid in finished_before:  # never rerun
        assert (trials / tid / "ckpt/starts.txt").read_text().split() == ["1"]
    resumed_midway = [tid for tid in interrupted
                      if (trials / tid / "ckpt/starts.txt").read_text().split()[-1] != "1"]
    assert resumed_midway  # at least one continued from its checkpoint, not from epoch 1

    from bkd_sweep.tracking import ResultStore, resolve_tracking_uri
    rows, epochs = ResultStore(tmp_path / "results/killme").read()
    assert sorted(rows.trial_id) == [f"t{i:04d}" for i in range(6)]  # one row per trial
    assert (rows.status == "completed").all()
    assert len(epochs) == 36 and not epochs.duplicated(["trial_id", "epoch"]).any()

    from mlflow.tracking import MlflowClient
    uri = resolve_tracking_uri(loaded.study, tmp_path / "results/killme")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("killme")
    runs = client.search_runs([experiment.experiment_id], "tags.`bkd_sweep.role` = 'trial'")
    assert sorted(r.data.tags["trial_id"] for r in runs) == [f"t{i:04d}" for i in range(6)]
