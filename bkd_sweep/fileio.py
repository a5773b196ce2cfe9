"""Atomic file writes and inter-process file locks: the one home for both.

A write goes to a temp file in the same folder, is fsynced, then ``os.replace``d over the
target, so a kill never leaves a half-written file for a reader. Locks are POSIX advisory
``flock`` locks on a side file (processes of one machine, or of a shared filesystem that
supports them).

Torch objects (checkpoints, teacher weights) also go through a storage ``Location``:
serialized in memory, then one ``write_bytes`` (atomic locally, one PUT on an object store),
and read back with ``weights_only=True`` only.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from bkd_sweep.storage import Location

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(handle)`` on a temp file beside ``path``, fsync, then replace ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(text: str, path: Path) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomic(data: Any, path: Path, *, indent: int | None = 2) -> None:
    """JSON with sorted keys and a trailing newline (study.json, sweep.json, result.json)."""
    write_text_atomic(json.dumps(data, indent=indent, sort_keys=True) + "\n", path)


def save_torch_atomic(obj: Any, path: Path) -> None:
    """torch.save through the same temp-then-replace write (checkpoints, teacher weights)."""
    import torch

    write_atomic(path, lambda handle: torch.save(obj, handle))


def torch_bytes(obj: Any) -> bytes:
    """``torch.save`` into memory: what one ``Location.write_bytes`` then stores."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def torch_from_bytes(data: bytes, map_location: Any = "cpu") -> Any:
    """``torch.load`` of saved bytes; tensors, dicts and plain values only (weights_only)."""
    import torch

    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)


def save_torch(obj: Any, folder: Location, name: str) -> int:
    """Store ``obj`` as ``folder/name`` in one write; returns the bytes written."""
    data = torch_bytes(obj)
    folder.write_bytes(data, name)
    return len(data)


def load_torch(folder: Location, name: str, map_location: Any = "cpu") -> Any:
    return torch_from_bytes(folder.read_bytes(name), map_location)


def write_parquet_atomic(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    write_atomic(path, lambda handle: pq.write_table(table, handle))


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is None:  # pragma: no cover - Windows: no inter-process exclusion
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def folder_lock(folder: Location, name: str) -> Iterator[None]:
    """``file_lock`` on ``folder/name`` for a local or shared folder; nothing on an object
    store, which has no lock: there a driver prepares shared files before workers read."""
    if folder.is_local:
        with file_lock(folder.local_path / name):
            yield
    else:
        yield
