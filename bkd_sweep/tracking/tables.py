"""The two results tables of a study folder as a dataset: a snapshot plus one part per trial.

Layout (inside results/<study>/, a local path or s3://bucket/prefix/<study>)::

    tables/trials/<trial_id>.parquet   one row: the trial (written by every upsert)
    tables/epochs/<trial_id>.parquet   the trial's epoch rows (zero rows is a valid part)
    trials.parquet, epochs.parquet     snapshots: every trial, written by compact()

A part is one whole-file write, so recording a trial rewrites nothing else, needs no lock and
costs the same at trial 10 and trial 10,000. A reader takes the snapshot and every part that
the snapshot does not cover; parts win per trial_id. The snapshot records in its metadata the
(size, mtime) of each part it holds, as the store listed them; a part rewritten since differs
and is read. Old folders hold only the snapshots (schema v1 or v2, no coverage): they load
as before.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from bkd_sweep.redact import redact_text
from bkd_sweep.storage import Location
from bkd_sweep.tracking.parquet_files import (
    DamagedFileError,
    conform,
    parquet_bytes,
    read_checked,
)
from bkd_sweep.tracking.schema import (
    EPOCHS_SCHEMA,
    PARAM_PREFIX,
    SCHEMA_VERSION_KEY,
    param_types,
    trials_schema,
)

log = logging.getLogger(__name__)
TABLES_DIR = "tables"
PART_SUFFIX = ".parquet"
COVERAGE_KEY = b"bkd_sweep.parts"  # snapshot metadata: trial_id -> "size:mtime_ns" of its part
_TRIAL_ID = re.compile(r"^[A-Za-z0-9_-]+$")  # a part's file name; never a path
_READ_THREADS = 16  # parts are small: reading them is waiting (S3 GETs), not computing


def extra_param_types(schemas: list[pa.Schema]) -> dict[str, pa.DataType]:
    """Param leaves not in today's TrialConfig (older/newer files): the first type seen."""
    known = set(param_types())
    extra: dict[str, pa.DataType] = {}
    for schema in schemas:
        for field in schema:
            path = field.name.removeprefix(PARAM_PREFIX)
            if field.name.startswith(PARAM_PREFIX) and path not in known:
                extra.setdefault(path, field.type)
    return extra


def with_extra_columns(base: pa.Schema, schemas: list[pa.Schema]) -> pa.Schema:
    """``base`` plus, at its end, every column of ``schemas`` that it lacks (one an older or
    newer schema had, e.g. v1's ``metric.final_top5``), with the first non-null type seen:
    no read or compact ever drops a stored column."""
    names = set(base.names)
    extra: dict[str, pa.Field] = {}
    for schema in schemas:
        for field in schema:
            seen = extra.get(field.name)
            if field.name not in names and (seen is None or pa.types.is_null(seen.type)):
                extra[field.name] = field.with_nullable(True)
    return pa.schema([*base, *extra.values()], metadata=base.metadata)


@dataclass(frozen=True)
class TableKind:
    """One of the two tables: where its snapshot and parts live, its schema, its order."""

    name: str
    snapshot: str
    sort_keys: tuple[tuple[str, str], ...]
    schema_of: Callable[[list[pa.Schema]], pa.Schema]

    @property
    def parts_dir(self) -> tuple[str, str]:
        return (TABLES_DIR, self.name)

    def part(self, trial_id: str) -> tuple[str, str, str]:
        if not _TRIAL_ID.match(trial_id):
            raise ValueError(f"trial id {trial_id!r} cannot name a file")
        return (*self.parts_dir, trial_id + PART_SUFFIX)


TRIALS = TableKind("trials", "trials.parquet",
                   (("trial_number", "ascending"), ("trial_id", "ascending")),
                   lambda schemas: with_extra_columns(
                       trials_schema(extra_param_types(schemas)), schemas))
EPOCHS = TableKind("epochs", "epochs.parquet",
                   (("trial_id", "ascending"), ("epoch", "ascending")),
                   lambda schemas: with_extra_columns(EPOCHS_SCHEMA, schemas))
KINDS = (EPOCHS, TRIALS)  # epochs first: a trial row always has its epochs beside it


class PartFile(NamedTuple):
    trial_id: str
    size: int
    mtime_ns: int  # as the storage lists it (object stores: whole seconds)

    @property
    def stamp(self) -> str:
        """What a snapshot records of a part it holds: "size:mtime_ns"."""
        return f"{self.size}:{self.mtime_ns}"


def list_parts(location: Location, kind: TableKind) -> list[PartFile]:
    """The parts of one table (temp files of a killed local writer and *.damaged skipped)."""
    selector = pafs.FileSelector(location.file(*kind.parts_dir), allow_not_found=True)
    try:
        infos = location.fs.get_file_info(selector)
    except FileNotFoundError:
        return []
    cut = len(PART_SUFFIX)
    parts = []
    for info in infos:
        name = info.base_name
        if not info.is_file or not name.endswith(PART_SUFFIX) or name.startswith("."):
            continue
        if not _TRIAL_ID.match(name[:-cut]):  # "t0001 (conflicted copy).parquet": no part
            _warn_stray(location.child(*kind.parts_dir, name).uri)
            continue
        parts.append(PartFile(name[:-cut], info.size, info.mtime_ns))
    parts.sort()
    return parts


_warned: set[str] = set()  # stray files already named: every read lists the parts again


def _warn_stray(file_uri: str) -> None:
    if file_uri not in _warned:
        _warned.add(file_uri)
        log.warning("%s: ignored (not a trial id's part file); move or delete it",
                    redact_text(file_uri))


def read_part(location: Location, kind: TableKind, trial_id: str,
              columns: list[str] | None = None) -> pa.Table | None:
    """One trial's part, checked to hold that trial's rows only (None if it vanished)."""
    found = read_checked(location, *kind.part(trial_id), columns=columns)
    if found is None:
        return None
    table = found[0]
    ids = set(table["trial_id"].to_pylist())
    if ids - {trial_id} or (kind is TRIALS and table.num_rows != 1):
        raise DamagedFileError(location.child(*kind.part(trial_id)).uri,
                               f"holds {table.num_rows} rows of {sorted(ids)}, expected "
                               f"trial {trial_id}", location.uri)
    return table


def _read_parts(location: Location, kind: TableKind, parts: list[PartFile],
                columns: list[str] | None) -> list[tuple[PartFile, pa.Table]]:
    def one(part: PartFile) -> pa.Table | None:
        return read_part(location, kind, part.trial_id, columns)

    if len(parts) <= 4:
        tables = [one(p) for p in parts]
    else:
        with ThreadPoolExecutor(min(_READ_THREADS, len(parts))) as pool:
            tables = list(pool.map(one, parts))
    return [(p, t) for p, t in zip(parts, tables) if t is not None]


def coverage_of(metadata: dict[bytes, bytes] | None, file_uri: str, study_uri: str
                ) -> dict[str, str]:
    """A snapshot's part list: trial_id -> "size:mtime_ns" ({} for an old single file)."""
    raw = (metadata or {}).get(COVERAGE_KEY)
    if raw is None:
        return {}
    try:
        covered = json.loads(raw)
    except ValueError:
        covered = None
    if not isinstance(covered, dict):
        raise DamagedFileError(file_uri, "unreadable part list", study_uri)
    return covered


@dataclass
class View:
    """A table as readers see it, and the parts it holds (for compact's coverage)."""

    table: pa.Table | None  # None: nothing stored
    parts: list[PartFile]


def read_view(location: Location, kind: TableKind, columns: list[str] | None = None) -> View:
    """The snapshot with every part it does not cover laid over it (parts win per trial)."""
    found = read_checked(location, kind.snapshot, columns=columns)
    snapshot, metadata = found if found is not None else (None, None)
    covered = coverage_of(metadata, location.child(kind.snapshot).uri, location.uri)
    held, stale = [], []
    for part in list_parts(location, kind):
        (held if covered.get(part.trial_id) == part.stamp else stale).append(part)
    fresh = _read_parts(location, kind, stale, columns)
    held += [p for p, _ in fresh]
    if not fresh:
        if snapshot is not None:  # an old single file or a current snapshot: as written
            keep = {k: v for k, v in (metadata or {}).items() if k != COVERAGE_KEY}
            snapshot = snapshot.replace_schema_metadata(keep)
        return View(snapshot, held)
    return View(_merge(kind, snapshot, fresh, columns), held)


def _merge(kind: TableKind, snapshot: pa.Table | None,
           fresh: list[tuple[PartFile, pa.Table]], columns: list[str] | None) -> pa.Table:
    pieces = [t for _, t in fresh]
    if snapshot is not None:
        replaced = pa.array([p.trial_id for p, _ in fresh], pa.string())
        pieces.insert(0, snapshot.filter(pc.invert(pc.is_in(snapshot["trial_id"], replaced))))
    groups = _by_schema(pieces)
    schema = kind.schema_of([members[0].schema for members in groups])
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns if c in schema.names],
                           metadata=schema.metadata)
    table = pa.concat_tables([conform(pa.concat_tables(members), schema)
                              for members in groups])
    keys = [k for k in kind.sort_keys if k[0] in schema.names]
    return table.sort_by(keys).replace_schema_metadata(schema.metadata)


def _by_schema(tables: list[pa.Table]) -> list[list[pa.Table]]:
    """Tables grouped by equal schema (parts share one or a few): each group is concatenated
    as is and conformed once, not table by table."""
    groups: list[list[pa.Table]] = []
    for table in tables:
        for members in groups:
            if members[0].schema.equals(table.schema):
                members.append(table)
                break
        else:
            groups.append([table])
    return groups


def write_part(location: Location, kind: TableKind, trial_id: str, table: pa.Table) -> None:
    location.write_bytes(parquet_bytes(table), *kind.part(trial_id))


def storage_clock_ns(location: Location) -> int:
    """The storage's own time now: the mtime of a file written for it (parts get their
    mtimes from the same clock, which need not be this machine's)."""
    name = f".clock-{uuid.uuid4().hex}"
    location.write_bytes(b"", TABLES_DIR, name)
    try:
        return int(location.fs.get_file_info(location.file(TABLES_DIR, name)).mtime_ns)
    finally:
        location.delete(TABLES_DIR, name)


def compact_table(location: Location, kind: TableKind, clock_ns: int) -> int:
    """Write ``kind``'s snapshot from the current view; returns its rows (-1: nothing stored).

    A part counts as covered only if it was last written in a whole second before
    ``clock_ns`` (taken before listing): one rewritten after it was read here then has a
    later mtime even on a store with one-second mtimes, so readers will not miss it."""
    view = read_view(location, kind)
    if view.table is None:
        return -1
    second = clock_ns // 1_000_000_000
    covered = {p.trial_id: p.stamp for p in view.parts if p.mtime_ns // 1_000_000_000 < second}
    schema = kind.schema_of([view.table.schema])
    table = conform(view.table, schema).sort_by(list(kind.sort_keys))
    metadata = {SCHEMA_VERSION_KEY: schema.metadata[SCHEMA_VERSION_KEY],
                COVERAGE_KEY: json.dumps(covered, separators=(",", ":")).encode()}
    location.write_bytes(parquet_bytes(table.replace_schema_metadata(metadata)), kind.snapshot)
    return table.num_rows
