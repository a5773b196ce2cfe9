"""The per-trial epoch log (trials/<id>/epochs.jsonl): a line cut by a kill costs that epoch
only, never the next one appended after it."""

from __future__ import annotations

import pytest

from bkd_sweep.engine.trial_files import EPOCH_LOG_FILE, TrialFiles
from bkd_sweep.records import EpochMetrics


def metrics(epoch: int) -> EpochMetrics:
    return EpochMetrics(epoch=epoch, top1=60.0 + epoch, top5=90.0, val_loss=1.0 / epoch,
                        loss=2.0 / epoch, lr=0.1, wall_seconds=1.0)


def cut_then_resume(files: TrialFiles) -> None:
    """Epoch 1 written, epoch 2's line cut halfway by a kill; the retry reports 2 and 3."""
    files.append_epoch(0, metrics(1))
    folder = files.trial_dir(0)
    whole = folder.read_text(EPOCH_LOG_FILE)
    cut = metrics(2).model_dump_json()
    folder.write_text(whole + cut[: len(cut) // 2], EPOCH_LOG_FILE)
    files.append_epoch(0, metrics(2))
    files.append_epoch(0, metrics(3))


def check(files: TrialFiles) -> None:
    epochs = files.read_epochs(0)
    assert sorted(epochs) == [1, 2, 3]
    assert [epochs[e].top1 for e in (1, 2, 3)] == [61.0, 62.0, 63.0]
    lines = files.trial_dir(0).read_text(EPOCH_LOG_FILE).splitlines()
    assert [EpochMetrics.model_validate_json(x).epoch for x in lines] == [1, 2, 3]


def test_a_cut_line_is_dropped_before_the_next_append(tmp_path):
    files = TrialFiles(tmp_path / "results" / "demo")
    cut_then_resume(files)
    check(files)


def test_a_log_cut_to_its_first_line_restarts_clean(tmp_path):
    files = TrialFiles(tmp_path / "demo")
    files.trial_dir(0).write_text('{"epoch": 1, "to', EPOCH_LOG_FILE)
    for e in (1, 2, 3):
        files.append_epoch(0, metrics(e))
    check(files)


@pytest.mark.server  # a moto S3 server process
def test_a_cut_line_is_dropped_on_an_object_store(s3):
    _, uri = s3
    files = TrialFiles(uri)
    cut_then_resume(files)
    check(files)
