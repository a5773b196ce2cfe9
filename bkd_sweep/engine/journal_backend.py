"""Where the Optuna journal's log lines are kept: a file on a local/shared path, or objects.

Both backends implement Optuna's public ``BaseJournalBackend`` (``read_logs`` /
``append_logs``), so ``JournalStorage`` replays them alike.

* ``CheckedJournalFileBackend``: Optuna's ``JournalFileBackend`` (one append-only file, a
  symlink lock around each append) whose reads turn a damaged line into one ``StudyError``
  naming the file and line (Optuna's own error names neither).
* ``ObjectStoreJournalBackend``: object stores have no append, so each ``append_logs`` batch
  becomes one new object ``journal/<sequence>.jsonl`` and no object is ever rewritten. Only
  one driver writes a study's journal (engine/lease.py), so the next sequence number is one
  past the last object seen. A PUT is atomic, so an object is never seen half-written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

from bkd_sweep.config import StudyError
from bkd_sweep.storage import Location

OBJECT_DIGITS = 12  # journal/000000000042.jsonl: names sort in sequence order
_OBJECT_NAME = re.compile(r"^(\d{%d})\.jsonl$" % OBJECT_DIGITS)
_COLD_READERS = 16  # objects fetched at once when a journal is first read


def object_name(sequence: int) -> str:
    return f"{sequence:0{OBJECT_DIGITS}d}.jsonl"


def encode_logs(logs: list[dict[str, Any]]) -> bytes:
    """Log lines as Optuna's file backend writes them (one compact JSON object a line)."""
    return "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode()


def first_bad_line(path: str) -> int | None:
    """1-based number of the first line of a journal file that is not a whole JSON line
    (a last line without its newline is a cut write, not damage: not counted)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                return None
            try:
                json.loads(line)
            except ValueError:
                return number
    return None


def damaged_journal_error(path: str) -> StudyError:
    line = first_bad_line(path)
    where = f"line {line}" if line else "a line"
    return StudyError(f"the Optuna journal is damaged: {where} is not a JSON log line and "
                      "later lines follow it; restore the journal from a backup or start "
                      "over in a new results directory", file=path, line=line)


class CheckedJournalFileBackend(JournalFileBackend):
    """Optuna's file backend; a damaged line is one StudyError with file and line number."""

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        try:
            yield from super().read_logs(log_number_from)
        except ValueError:  # Optuna: "Invalid log format." or a JSONDecodeError
            raise damaged_journal_error(self._file_path) from None


class ReadOnlyJournalBackend(BaseJournalBackend):
    """A journal to watch, not to write (a dashboard beside a running driver: on an object
    store its write could take the sequence number of the driver's next one)."""

    def __init__(self, backend: BaseJournalBackend, where: str):
        self.backend = backend
        self.where = where

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        return self.backend.read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise StudyError("this journal was opened read-only (only the sweep's driver writes "
                         "it)", file=self.where)


class ObjectStoreJournalBackend(BaseJournalBackend):
    """The journal as numbered objects in ``folder`` (``<study>/journal/`` on S3).

    Reading: the first read lists the folder and fetches every object (in parallel); later
    reads ask for the next sequence numbers by name until one is missing, so a sync costs
    one request however long the journal is (a listing costs one request per 1000 objects).
    Lines are cached as read and decoded afresh for each reader: Optuna keeps references to
    the dicts it replays, so two storages must never share them.
    """

    def __init__(self, folder: Location):
        self.folder = folder
        self._lines: list[bytes] = []  # every log line of objects 0 .. _next_sequence - 1
        self._next_sequence = 0
        self._listed = False

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        self._catch_up()
        for line in self._lines[log_number_from:]:
            yield json.loads(line)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._catch_up()  # the sequence continues what is there now
        name = object_name(self._next_sequence)
        data = encode_logs(logs)
        # One PUT of a name no object has: a second writer would have to slip in between
        # this read and this write, which the driver lease rules out.
        self.folder.write_bytes(data, name)
        self._add(name, data)

    # ------------------------------------------------------------------ reading

    def _catch_up(self) -> None:
        if not self._listed:
            self._read_listing()
            self._listed = True
        while True:  # objects written since (by this process or, against the lease, another)
            name = object_name(self._next_sequence)
            try:
                data = self.folder.read_bytes(name)
            except FileNotFoundError:
                return
            self._add(name, data)

    def _read_listing(self) -> None:
        """Every object present, in sequence order, up to the first gap."""
        sequences = sorted(int(m.group(1)) for name in self.folder.list_files(suffix=".jsonl")
                           if (m := _OBJECT_NAME.match(name)))
        names = []
        for expected, sequence in enumerate(sequences):
            if sequence != expected:
                break  # a gap: what follows it is read once the gap is filled
            names.append(object_name(sequence))
        with ThreadPoolExecutor(max_workers=_COLD_READERS) as pool:
            for name, data in zip(names, pool.map(self.folder.read_bytes, names)):
                self._add(name, data)

    def _add(self, name: str, data: bytes) -> None:
        lines = data.splitlines(keepends=True)
        for number, line in enumerate(lines, start=1):
            try:
                json.loads(line)
            except ValueError:
                raise StudyError("the Optuna journal is damaged: not a JSON log line",
                                 file=self.folder.child(name).uri, line=number) from None
        self._lines.extend(lines)
        self._next_sequence += 1
