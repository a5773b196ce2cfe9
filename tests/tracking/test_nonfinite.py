"""A diverged trial (inf or NaN metrics) survives every JSON hop: worker report -> driver,
the epoch log, result.json and the Parquet rows."""

from __future__ import annotations

import json
import math

from bkd_sweep.engine.scheduler import epoch_metrics
from bkd_sweep.engine.searcher import final_result
from bkd_sweep.engine.trial_files import TrialFiles
from bkd_sweep.engine.worker import epoch_payload, final_payload
from bkd_sweep.records import EpochMetrics, TrialResult, parse_epoch_log
from bkd_sweep.tracking import ResultStore


def diverged(epoch: int) -> EpochMetrics:
    return EpochMetrics(epoch=epoch, top1=10.0, top5=50.0, val_loss=math.inf, loss=math.nan,
                        loss_terms={"task": -math.inf}, lr=0.1, wall_seconds=1.0)


def assert_diverged(m: EpochMetrics, epoch: int) -> None:
    assert m.epoch == epoch and m.top1 == 10.0
    assert m.val_loss == math.inf and math.isnan(m.loss)
    assert m.loss_terms["task"] == -math.inf


def failed_result(study, make_record) -> TrialResult:
    rec = make_record(study, 0, {"distill.mode": "bkd", "student.timesteps": 2}, 0,
                      status="failed")
    history = [diverged(1), diverged(2)]
    return rec.result.model_copy(update={"history": history, "final_top1": math.nan,
                                         "val_top1": math.inf})


def test_epoch_report_round_trips_inf_and_nan():
    got = epoch_metrics(epoch_payload(diverged(4)))
    assert got is not None
    assert_diverged(got, 4)


def test_final_report_round_trips_inf_and_nan(study, make_record):
    got = final_result(final_payload(failed_result(study, make_record)))
    assert got is not None and got.status == "failed"
    assert got.val_top1 == math.inf and math.isnan(got.final_top1)
    assert [m.epoch for m in got.history] == [1, 2]
    assert_diverged(got.history[1], 2)


def test_epoch_log_keeps_a_diverged_epoch(results_dir):
    line = diverged(2).model_dump_json()
    assert json.loads(line)["val_loss"] == math.inf  # plain json reads the file too
    assert_diverged(parse_epoch_log(line + "\n")[2], 2)
    files = TrialFiles(results_dir)
    files.append_epoch(5, diverged(1))
    files.append_epoch(5, diverged(2))
    epochs = files.read_epochs(5)
    assert sorted(epochs) == [1, 2]
    assert_diverged(epochs[2], 2)


def test_result_file_and_parquet_keep_inf_and_nan(study, make_record, results_dir):
    result = failed_result(study, make_record)
    files = TrialFiles(results_dir)
    files.write_result(0, result, None)
    back, _ = files.read_result(0)
    assert back.val_top1 == math.inf and math.isnan(back.final_top1)
    rec = make_record(study, 0, {"distill.mode": "bkd", "student.timesteps": 2}, 0,
                      status="failed")
    rec.result = result
    store = ResultStore(results_dir)
    store.upsert(rec)
    trials, epochs = store.read()
    assert trials.loc[0, "metric.val_top1"] == math.inf
    assert list(epochs["metric.val_loss"]) == [math.inf, math.inf]
    assert all(math.isnan(v) for v in epochs["metric.loss"])
