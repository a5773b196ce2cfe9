"""A journal whose last write was cut (driver killed mid-write, disk full).

Optuna alone: the next append is glued onto the cut line and, from the append after it on,
the journal cannot be read at all. With the repair (SweepBook opens the journal with it) the
cut bytes are moved aside and the resumed sweep appends to a journal that keeps loading.
A journal damaged further up is one StudyError naming the file and the line."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bkd_sweep.config import StudyError, load_study_text
from bkd_sweep.engine.book import SweepBook
from bkd_sweep.engine.journal import JOURNAL_FILE, journal_storage, repair_journal
from bkd_sweep.records import EpochMetrics, TrialResult

STUDY = """
name: cutjournal
distill: {mode: none}
train: {epochs: 2}
search:
  sampler: grid
  params:
    distill.blur_ratio: [0.0, 0.2, 0.4, 0.6]
  objectives: [{metric: top1, mode: max}]
  pruner: {name: none}
"""


def finish(book: SweepBook, status: str, top1: float) -> None:
    """Run the next trial of ``book`` to ``status`` (the driver's calls, no Ray)."""
    spec = book.next_trial()
    history = [EpochMetrics(epoch=1, top1=top1, top5=top1, val_loss=1.0, loss=1.0, lr=0.1,
                            wall_seconds=1.0)]
    for metrics in history:
        book.observe_epoch(spec.number, metrics)
    if status == "pruned":
        book.prune(spec.number, 1, "pruned by test")
        return
    result = TrialResult.from_history(
        status, history, reason="boom" if status == "failed" else None,
        config=spec.config.model_dump(mode="json"), config_hash=spec.config.config_hash(),
        wall_seconds=1.0, devices=1, device="cpu")
    book.complete(spec.number, result)


def cut_mid_write(journal: Path) -> bytes:
    """Append the first half of a real log line, as a driver killed inside write() leaves."""
    last = journal.read_bytes().splitlines(keepends=True)[-1]
    cut = last[: len(last) // 2]
    with open(journal, "ab") as handle:
        handle.write(cut)
    return cut


def plain_optuna_study(journal: Path) -> optuna.Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name="cutjournal", storage=storage)


def states_and_values(where: Path) -> list[tuple[TrialState, float | None]]:
    study = optuna.load_study(study_name="cutjournal", storage=journal_storage(where))
    return [(t.state, t.value) for t in study.trials]


@pytest.fixture
def swept(tmp_path: Path) -> SweepBook:
    """A real sweep journal: one completed, one pruned, one failed trial."""
    book = SweepBook(load_study_text(STUDY).study, tmp_path / "cutjournal")
    book.open()
    finish(book, "completed", 40.0)
    finish(book, "pruned", 10.0)
    finish(book, "failed", 5.0)
    return book


def test_without_repair_optuna_glues_the_next_append_and_the_journal_is_lost(swept):
    journal = swept.results_dir / JOURNAL_FILE
    cut_mid_write(journal)
    study = plain_optuna_study(journal)
    assert len(study.trials) == 3 + 1  # still readable (3 run, 1 queued grid point)
    study.set_user_attr("first_append", 1)  # glued onto the cut line: silently lost
    assert "first_append" not in plain_optuna_study(journal).user_attrs
    with pytest.raises(ValueError):  # written, but the glued line now has a line after it
        study.set_user_attr("second_append", 2)
    with pytest.raises(ValueError):  # JSONDecodeError: the whole journal, from now on
        plain_optuna_study(journal)
    with pytest.raises(StudyError) as info:  # ours names the file and the line
        optuna.load_study(study_name="cutjournal", storage=journal_storage(swept.results_dir))
    bad_line = len(journal.read_bytes().splitlines()) - 1
    assert info.value.file == str(journal) and info.value.line == bad_line
    assert str(info.value).startswith(f"{journal}:{bad_line}: the Optuna journal is damaged")
    assert "\n" not in str(info.value)


def test_resume_after_a_cut_write_moves_the_cut_aside_and_keeps_every_trial(swept, caplog):
    journal = swept.results_dir / JOURNAL_FILE
    whole = journal.read_bytes()
    before = states_and_values(swept.results_dir)
    cut = cut_mid_write(journal)

    with caplog.at_level(logging.WARNING, logger="bkd_sweep.engine.journal_repair"):
        note = repair_journal(swept.results_dir)
    asides = list(swept.results_dir.glob(f"{JOURNAL_FILE}.cut-*"))
    assert len(asides) == 1 and asides[0].read_bytes() == cut
    assert journal.read_bytes() == whole
    assert note == (f"journal {journal}: its last line was cut (an interrupted write); moved "
                    f"those {len(cut)} bytes to {asides[0].name} and kept the {len(whole)} "
                    "bytes before them")
    assert [r.getMessage() for r in caplog.records] == [note]

    resumed = SweepBook(swept.study, swept.results_dir)  # the driver's resume: appends
    resumed.open()
    finish(resumed, "completed", 70.0)
    fresh = states_and_values(swept.results_dir)  # a new reader, as the next session
    assert fresh[:3] == before[:3] == [(TrialState.COMPLETE, 40.0), (TrialState.PRUNED, None),
                                       (TrialState.FAIL, None)]
    assert fresh[3] == (TrialState.COMPLETE, 70.0)
    assert len(plain_optuna_study(journal).trials) == 4  # Optuna's own reader agrees


def test_sweep_book_repairs_on_open(swept):
    cut = cut_mid_write(swept.results_dir / JOURNAL_FILE)
    resumed = SweepBook(swept.study, swept.results_dir)
    (aside,) = swept.results_dir.glob(f"{JOURNAL_FILE}.cut-*")
    assert aside.read_bytes() == cut
    resumed.open()
    finish(resumed, "completed", 55.0)
    assert len(states_and_values(swept.results_dir)) == 4


def test_a_glued_last_line_is_moved_aside_too(swept):
    """A journal a cut write was already glued onto (an append after the cut, before this
    fix): its last line is complete but not JSON."""
    journal = swept.results_dir / JOURNAL_FILE
    whole = journal.read_bytes()
    half_line = whole.splitlines(keepends=True)[-1][:40]
    journal.write_bytes(whole + half_line + b'{"op_code":2,"study_id":0,"user_attr":{"a":1}}\n')
    assert "moved those" in repair_journal(swept.results_dir)
    assert journal.read_bytes() == whole


def test_a_whole_journal_is_left_alone(swept):
    journal = swept.results_dir / JOURNAL_FILE
    whole = journal.read_bytes()
    assert repair_journal(swept.results_dir) is None
    assert journal.read_bytes() == whole
    assert not list(swept.results_dir.glob(f"{JOURNAL_FILE}.cut-*"))
    assert repair_journal(swept.results_dir.parent / "no-sweep-here") is None


def test_a_journal_of_only_a_cut_line_is_emptied(tmp_path):
    journal = tmp_path / JOURNAL_FILE
    journal.write_bytes(b'{"op_code":0,"worker_id":"w","study_na')
    assert "moved those 38 bytes" in repair_journal(tmp_path)
    assert journal.read_bytes() == b""


def test_damage_in_the_middle_is_one_line_naming_file_and_line(swept):
    journal = swept.results_dir / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[4] = b"#### disk error ####\n"
    journal.write_bytes(b"".join(lines))
    assert repair_journal(swept.results_dir) is None  # not a cut write: not ours to fix
    with pytest.raises(StudyError) as info:
        SweepBook(swept.study, swept.results_dir)
    assert info.value.line == 5 and info.value.file == str(journal)
    assert "\n" not in str(info.value)


def test_optunas_lock_left_by_a_killed_append_is_removed(swept, caplog):
    journal = swept.results_dir / JOURNAL_FILE
    lock = Path(f"{journal}.lock")
    os.symlink(journal, lock)  # what JournalFileSymlinkLock holds during an append
    old = time.time() - 120
    os.utime(lock, (old, old), follow_symlinks=False)
    cut_mid_write(journal)
    started = time.perf_counter()
    resumed = SweepBook(swept.study, swept.results_dir)
    resumed.open()
    finish(resumed, "completed", 60.0)
    assert time.perf_counter() - started < 5  # not Optuna's 30 s grace period
    assert not os.path.lexists(lock)
    assert any("removed Optuna's lock" in r.getMessage() for r in caplog.records)


def test_a_fresh_lock_is_left_to_its_writer(swept):
    journal = swept.results_dir / JOURNAL_FILE
    lock = Path(f"{journal}.lock")
    os.symlink(journal, lock)
    repair_journal(swept.results_dir)
    assert os.path.lexists(lock)
    lock.unlink()
    assert json.loads(journal.read_bytes().splitlines()[-1])  # untouched, still JSON
