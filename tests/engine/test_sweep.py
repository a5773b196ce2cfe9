"""End-to-end sweeps on a real (shared) Ray instance with fast injected trial functions."""

from __future__ import annotations

import logging

import pytest
from optuna.trial import TrialState

from bkd_sweep.engine import run_study
from bkd_sweep.engine.book import SweepBook
from bkd_sweep.config import load_study_text

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a real (shared) Ray instance

PRUNING = """
name: pruning
teacher: {{checkpoint: train}}
train: {{epochs: 4}}
distill: {{blur_ratio: 0.0}}
search:
  sampler: grid
  params:
    distill.mode: [bkd, mixed, none, logit]
  pruner: {{name: median, startup_trials: 1, warmup_epochs: 1}}
resources: {{per_trial: {{cpu: 1}}, max_concurrent: 1}}
tracking: {{results_dir: {results}}}
"""


def test_median_pruner_prunes_worse_trials_early(ray_session, tmp_path, fakes, fake_tracker):
    loaded = load_study_text(PRUNING.format(results=tmp_path))
    warned: list[logging.LogRecord] = []
    catcher = logging.Handler(logging.WARNING)
    catcher.emit = warned.append
    logging.getLogger("ray.tune").addHandler(catcher)
    try:
        summary = run_study(loaded, trial_fn=fakes.curve_trial, tracker=fake_tracker,
                            progress=False)
    finally:
        logging.getLogger("ray.tune").removeHandler(catcher)
    # Tune's per-trial logs are off, and nothing warns that they are missing
    assert not [r.getMessage() for r in warned if "fetch metrics" in r.getMessage()]
    # curves: plateau bkd 75, mixed 80, none 60, logit 70, x (1 - exp(-epoch/2)); sequential.
    # epoch 2 (first prunable): none 37.9 and logit 44.2 < median(47.4, 50.6) of completed
    assert summary.counts == {"completed": 2, "pruned": 2, "failed": 0, "running": 0,
                              "waiting": 0, "retried": 0}
    assert summary.ok and summary.best[0]["trial_id"] == "t0001"
    assert summary.best[0]["params"] == {"distill.mode": "mixed"}
    book = SweepBook(loaded.study, tmp_path / "pruning")
    states = [t.state for t in book.optuna.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                      TrialState.PRUNED]
    assert book.optuna.trials[1].value == pytest.approx(80 * (1 - 2.718281828459045 ** -2))
    assert sorted(fake_tracker.finishes()) == ["t0000", "t0001", "t0002", "t0003"]
    for tid in ("t0002", "t0003"):
        record = fake_tracker.records[tid]
        assert record.result.status == "pruned" and record.pruned_epoch == 2
        assert record.result.epochs_run == 2 < 4
        assert record.result.reason == "pruned by median pruner at epoch 2"
        assert fake_tracker.epochs(tid) == [1, 2]
    done = fake_tracker.records["t0001"]
    assert done.result.status == "completed" and done.result.epochs_run == 4
    assert done.params == {"distill.mode": "mixed"} and done.seed == 0
    assert fake_tracker.epochs("t0001") == [1, 2, 3, 4]
    assert fake_tracker.calls[0] == ("start", False) and fake_tracker.calls[-1] == ("end",)
    assert (tmp_path / "pruning/trials/t0001/ckpt/last.pt").exists()
    assert (tmp_path / "pruning/trials/t0002/result.json").exists()
    # Tune's own per-trial logs (result.json, progress.csv, TensorBoard) are not written:
    # our records replace them, and their TensorBoard writer imports torch in the driver
    tune_files = [p for p in (tmp_path / "pruning" / "ray").rglob("*") if p.is_file()]
    assert tune_files and not [p for p in tune_files if p.name in ("result.json", "progress.csv")
                               or p.name.startswith("events.out.tfevents")]


CRASHES = """
name: crashes
distill: {{mode: none}}
train: {{epochs: 4}}
search:
  sampler: grid
  params:
    distill.blur_ratio: [0.0, 0.5]
resources: {{per_trial: {{cpu: 1}}, max_failures: 1}}
tracking: {{results_dir: {results}}}
"""


def test_crashed_trial_retries_from_checkpoint_and_failure_is_recorded(ray_session, tmp_path,
                                                                       fakes, fake_tracker):
    loaded = load_study_text(CRASHES.format(results=tmp_path))
    summary = run_study(loaded, trial_fn=fakes.crash_or_fail, tracker=fake_tracker,
                        progress=False)
    assert summary.counts["completed"] == 1 and summary.counts["failed"] == 1
    trials = tmp_path / "crashes/trials"
    # t0000 crashed after epoch 2 and its retry resumed at epoch 3
    assert (trials / "t0000/ckpt/starts.txt").read_text().split() == ["1", "3"]
    # given no GPU by Ray, a trial sees none (Ray 2.60 leaves a GPU node's visible)
    assert (trials / "t0000/ckpt/visible_gpus.txt").read_text() == ""
    ok = fake_tracker.records["t0000"].result
    assert ok.status == "completed" and [h.epoch for h in ok.history] == [1, 2, 3, 4]
    # t0001 raised on both attempts (max_failures 1) and is failed with the exception's line
    assert (trials / "t0001/ckpt/starts.txt").read_text().split() == ["1", "1"]
    failed = fake_tracker.records["t0001"].result
    assert failed.status == "failed" and "ValueError: bad batch (blur 0.5)" in failed.reason
    assert fake_tracker.finishes().count("t0001") == 1
    book = SweepBook(loaded.study, tmp_path / "crashes")
    assert [t.state for t in book.optuna.trials] == [TrialState.COMPLETE, TrialState.FAIL]


LEASED = """
name: leased
teacher: {{checkpoint: train}}
train: {{epochs: 6}}
search:
  sampler: grid
  params: {{distill.mode: [none, logit, bkd, mixed]}}
resources: {{per_trial: {{cpu: 1}}, max_concurrent: 1}}
tracking: {{results_dir: {results}}}
"""


def test_a_driver_whose_lease_was_taken_stops_and_writes_nothing_more(
        ray_session, tmp_path, fakes, fake_tracker, monkeypatch):
    """Another driver took the study (this one's heartbeat looked stale to it): this one
    stops its trials, records nothing more and leaves the other's lease in place."""
    import json

    from bkd_sweep.engine import lease

    monkeypatch.setattr(lease, "DEFAULT_HEARTBEAT_S", 0.1)
    loaded = load_study_text(LEASED.format(results=tmp_path))
    with pytest.raises(lease.DriverLeaseLost, match="driver lease was taken by pid"):
        run_study(loaded, trial_fn=fakes.lease_thief, tracker=fake_tracker, progress=False)
    assert fake_tracker.records == {}  # 4 trials x 6 epochs x 0.3 s would have finished
    assert ("end",) not in fake_tracker.calls
    assert json.loads((tmp_path / "leased/driver.lease").read_text())["driver_id"] == "thief"


SECRET_ROOT = """
name: secret_root
data: {{dataset: digits, root: "{root}"}}
train: {{epochs: 1}}
distill: {{mode: none}}
search: {{sampler: grid, params: {{student.timesteps: [1]}}}}
resources: {{per_trial: {{cpu: 1}}}}
tracking: {{results_dir: {results}}}
"""


def test_tunes_state_holds_no_credential(ray_session, tmp_path, fakes, fake_tracker):
    """Tune writes the configs and last results it is given into its experiment state (JSON
    under results/<study>/ray/) and pickles its searcher, scheduler, callbacks and stopper
    into tuner.pkl there: it gets params and a seed, the worker builds the config, the final
    report carries it redacted, and the driver's objects pickle empty (driver_only)."""
    root = "s3://AKIA:TOKEN1234@minio:9000/data"  # a data root with a credential in it
    loaded = load_study_text(SECRET_ROOT.format(root=root, results=tmp_path))
    summary = run_study(loaded, trial_fn=fakes.curve_trial, tracker=fake_tracker,
                        progress=False)
    assert summary.counts["completed"] == 1
    assert fake_tracker.records["t0000"].result.config["data"]["root"] == \
        "s3://AKIA:***@minio:9000/data"
    states = [p for p in (tmp_path / "secret_root/ray").rglob("*") if p.is_file()]
    assert {p.suffix for p in states} >= {".json", ".pkl"}
    assert not [p for p in states if b"TOKEN1234" in p.read_bytes()]
