"""A 2-worker (gloo, CPU) trial: Ray Train's TorchTrainer inside the Tune trial, with the
storage root on a local path and on an object store (the session's moto S3 server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bkd_sweep.engine import run_study
from bkd_sweep.config import load_study_text
from bkd_sweep.storage import Location

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a real Ray instance (shared, or fresh)

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "bkd-sweeps"

STUDY = """
name: ddp
distill: {{mode: none}}
train: {{epochs: 2}}
resources: {{per_trial: {{cpu: 1, workers: 2}}}}
tracking: {{results_dir: {results}}}
"""


def test_two_worker_trial_runs_under_torch_distributed(ray_session, tmp_path, fakes,
                                                       fake_tracker):
    loaded = load_study_text(STUDY.format(results=tmp_path))
    summary = run_study(loaded, trial_fn=fakes.ddp_trial, tracker=fake_tracker, progress=False)
    assert summary.counts["completed"] == 1, summary.render()
    record = fake_tracker.records["t0000"]
    # world 2, ranks 0 + 1 all-reduced: 2 * 10 + 1
    assert [h.top1 for h in record.result.history] == [21.0, 21.0]
    assert record.result.device == "gloo x2"
    assert fake_tracker.epochs("t0000") == [1, 2]  # rank 0's reports reached Tune
    ckpt = json.loads((tmp_path / "ddp/trials/t0000/ckpt/last.pt").read_text())
    assert ckpt == {"epoch": 2, "world": 2}


S3_STUDY = """
name: ddp
storage: {storage}
distill: {{mode: none}}
train: {{epochs: 2}}
resources: {{per_trial: {{cpu: 1, workers: 2}}}}
"""

# The S3 case runs its driver in a fresh process: Ray workers take their environment from
# the process that started Ray, and the session's Ray (ray_session) started before s3_env set
# the AWS variables, so its trial and Train workers could not reach the moto server. A fresh
# driver starts its embedded Ray with them set, as `bkd-sweep run` does.
DRIVER = """
import json, sys
from bkd_sweep.config import load_study_text
from bkd_sweep.engine import run_study
from tests.engine import fakes

tracker = fakes.FakeTracker()
summary = run_study(load_study_text(sys.argv[1]), trial_fn=fakes.ddp_trial, tracker=tracker,
                    progress=False)
record = tracker.records.get("t0000")
print(json.dumps({"counts": summary.counts, "summary": summary.render(),
                  "top1": record and [h.top1 for h in record.result.history],
                  "device": record and record.result.device,
                  "epochs": tracker.epochs("t0000")}))
"""


@pytest.mark.server  # the session's moto S3 server
def test_two_worker_trial_on_an_object_store_root(s3_env, tmp_path):
    import boto3

    endpoint = s3_env(BUCKET)
    prefix = uuid.uuid4().hex[:10]
    root = f"s3://{BUCKET}/{prefix}"
    work = tmp_path / "cwd"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", DRIVER, S3_STUDY.format(storage=root)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["counts"]["completed"] == 1, out["summary"]
    assert out["top1"] == [21.0, 21.0]  # world 2, ranks 0 + 1 all-reduced
    assert out["device"] == "gloo x2"
    assert out["epochs"] == [1, 2]  # rank 0's reports reached Tune

    # rank 0's checkpoint is an object in the storage root, read back through pyarrow's S3
    ckpt = Location.of(root).child("ddp", "trials", "t0000", "ckpt")
    assert json.loads(ckpt.read_text("last.pt")) == {"epoch": 2, "world": 2}
    keys = {o["Key"].removeprefix(f"{prefix}/") for page in boto3.client(
        "s3", endpoint_url=endpoint).get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix) for o in page.get("Contents", [])}
    assert "ddp/trials/t0000/ckpt/last.pt" in keys, sorted(keys)
    assert any(k.startswith("ddp/ray/train/t0000/") for k in keys), sorted(keys)  # Ray Train's
    assert sorted(p.name for p in work.iterdir()) == []  # nothing of the study on this disk
