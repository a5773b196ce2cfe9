"""A journal file whose last write was cut (driver killed mid-write, disk full), made whole.

Optuna reads such a journal (it skips a last line without its newline), but its next append
is glued onto the cut line: that line is then not JSON, and once a line follows it Optuna
refuses the whole journal, for good. So before a driver appends, the bytes after the last
complete JSON line are moved to ``optuna.journal.cut-<UTC time>`` beside it (kept, not
deleted) and the journal is truncated to its last complete line.

Only the driver holding the study's lease (engine/lease.py) may repair: a reader could see
the unfinished last line of a live driver's write in progress.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

_BLOCK = 64 * 1024
_STALE_LOCK_S = 10.0  # an append holds Optuna's lock for milliseconds


def repair_journal_file(path: str | os.PathLike) -> str | None:
    """Move an unfinished last line aside; the one-line note saying so (None: nothing cut)."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        keep = _end_of_last_good_line(handle, size)
        if keep == size:
            _drop_stale_lock(path)
            return None
        handle.seek(keep)
        cut = handle.read()
    aside = _aside_name(path)
    with open(aside, "xb") as out:  # first the copy, then the truncation: nothing is lost
        out.write(cut)
        out.flush()
        os.fsync(out.fileno())
    with open(path, "r+b") as handle:
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    _drop_stale_lock(path)
    note = (f"journal {path}: its last line was cut (an interrupted write); moved those "
            f"{len(cut)} bytes to {aside.name} and kept the {keep} bytes before them")
    log.warning(note)
    return note


def _end_of_last_good_line(handle, size: int) -> int:
    """Offset just past the last line that is complete (newline) and JSON; ``size`` when
    the journal ends well. Only the last line is judged: damage further up is the
    reader's to report (journal_backend.damaged_journal_error)."""
    if size == 0:
        return 0
    handle.seek(size - 1)
    if handle.read(1) != b"\n":  # cut mid-line: keep up to the previous newline
        return _line_start(handle, size)
    start = _line_start(handle, size - 1)
    handle.seek(start)
    try:
        json.loads(handle.read(size - start))
    except ValueError:  # complete but not JSON: a cut line an append was glued onto
        return start
    return size


def _line_start(handle, end: int) -> int:
    """Offset just past the last newline before ``end`` (0: none)."""
    position = end
    while position > 0:
        start = max(0, position - _BLOCK)
        handle.seek(start)
        block = handle.read(position - start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


def _aside_name(path: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.cut-{stamp}")
    n = 1
    while aside.exists():  # two repairs within a second
        aside = path.with_name(f"{path.name}.cut-{stamp}-{n}")
        n += 1
    return aside


def _drop_stale_lock(path: Path) -> None:
    """A driver killed inside an append leaves Optuna's lock behind, and the next append
    would wait out Optuna's 30 s grace period; under the driver lease nobody else appends,
    so an old one is removed now."""
    lock = Path(f"{path}.lock")
    try:
        age = time.time() - lock.lstat().st_mtime  # lstat: Optuna's lock is a symlink
    except FileNotFoundError:
        return
    if age > _STALE_LOCK_S:
        lock.unlink(missing_ok=True)
        log.warning("journal %s: removed Optuna's lock left by a driver that stopped "
                    "while appending (%.0f s old)", path, age)
