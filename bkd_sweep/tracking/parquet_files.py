"""Reading and writing one Parquet file of a study folder, checked.

Every results file is read whole from its Location (one GET on an object store) and parsed
from memory, so a truncated or garbage file is told apart from an unreachable one: the first
raises ``DamagedFileError`` with one line naming the file and the repair command, never a
pyarrow traceback. A file written under an unknown schema version raises
``SchemaVersionError``; a version 1 trials table is upgraded to today's names.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from bkd_sweep.storage import Location
from bkd_sweep.tracking.schema import READABLE_VERSIONS, file_schema_version, upgrade_v1


SMALL_FILE_ROWS = 1000


class SchemaVersionError(RuntimeError):
    """A results file written with a schema version this code does not read."""


class DamagedFileError(RuntimeError):
    """A results file that is not a readable Parquet file (truncated, garbage, wrong rows)."""

    def __init__(self, file_uri: str, reason: str, study_uri: str):
        self.file_uri, self.reason, self.study_uri = file_uri, reason, study_uri
        super().__init__(f"{file_uri}: damaged Parquet file ({reason}); rebuild with: "
                         f"bkd-sweep results --rebuild {study_uri}")


def short_reason(exc: BaseException) -> str:
    """The first sentence of an Arrow error, short enough for one line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= 100 else text[:97] + "..."


def parquet_bytes(table: pa.Table) -> bytes:
    """The whole Parquet file of ``table`` in memory (so it is stored in one write)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def parse_parquet(data: bytes, columns: list[str] | None = None
                  ) -> tuple[pa.Table, dict[bytes, bytes]]:
    """(table, key-value metadata) of a Parquet file's bytes; Arrow errors propagate.

    ``columns`` that the file lacks are skipped (a v1 file has fewer)."""
    if not data:
        raise ValueError("empty file")
    parquet = pq.ParquetFile(pa.BufferReader(data))
    schema = parquet.schema_arrow
    wanted = None if columns is None else [c for c in columns if c in schema.names]
    # a one-trial part decodes faster on this thread than spread over a pool
    threads = parquet.metadata.num_rows > SMALL_FILE_ROWS
    return parquet.read(columns=wanted, use_threads=threads), dict(schema.metadata or {})


def read_checked(location: Location, *parts: str, columns: list[str] | None = None
                 ) -> tuple[pa.Table, dict[bytes, bytes]] | None:
    """A results file in today's terms (None when it does not exist).

    Raises DamagedFileError when it cannot be parsed, SchemaVersionError when it was written
    under a version this bkd-sweep does not read."""
    try:
        data = location.read_bytes(*parts)
    except FileNotFoundError:
        return None
    file_uri = location.child(*parts).uri
    try:
        table, metadata = parse_parquet(data, columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DamagedFileError(file_uri, short_reason(exc), location.uri) from None
    version = file_schema_version(pa.schema([], metadata=metadata))
    if version not in READABLE_VERSIONS:
        raise SchemaVersionError(
            f"{file_uri}: schema version {version}, this bkd-sweep reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}")
    if table.schema.get_field_index("trial_id") < 0:
        raise DamagedFileError(file_uri, "no trial_id column", location.uri)
    if version == 1 and "status" in table.column_names:
        table = upgrade_v1(table)
    return table, metadata


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (missing ones null), in order, cast.

    A column ``schema`` lacks is dropped: callers build ``schema`` with every stored column
    (tables.with_extra_columns) so that nothing is lost."""
    if table.schema.equals(schema):  # every part written today: nothing to do
        return table
    names = set(table.schema.names)  # once: listing names costs per call
    columns = []
    for field in schema:
        if field.name in names:
            columns.append(table[field.name].cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
