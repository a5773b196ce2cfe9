"""Where a study's results live: a folder on a local or shared filesystem, or an object store.

A ``Location`` is a folder named by a URI: an absolute path (``/mnt/shared/bkd``, NFS/Lustre
or one machine's disk) or an object-store URI (``s3://bucket/prefix``, through pyarrow's
filesystems, which Ray Tune's ``storage_path`` speaks too). Everything a driver needs (journal,
Parquet, per-trial records, checkpoints, teacher cache) is written through one, so the same
sweep runs on a laptop and on a cluster whose nodes share nothing but the storage root.

S3 settings come from the standard AWS variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), never from the
study file, so no credential is written anywhere.

Object stores have no rename and no append: ``write_bytes`` is one PUT (atomic: a reader sees
the old object or the new one), locally it is write-to-temp + ``os.replace``.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.fs as pafs

from bkd_sweep.redact import redact_text

_REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "abfss://")


class StorageError(RuntimeError):
    """A storage root that cannot be used (unreachable, not writable, bad URI)."""


def is_remote(uri: str | os.PathLike) -> bool:
    return str(uri).startswith(_REMOTE_SCHEMES)


def _remote_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for a URI. S3 is built directly (not by ``from_uri``, which asks
    AWS for the bucket's region over the network): region from AWS_REGION /
    AWS_DEFAULT_REGION, endpoint from AWS_ENDPOINT_URL (passed explicitly: the
    S3FileSystem constructor does not read it, from_uri did)."""
    if uri.startswith("s3://") and "?" not in uri:
        options = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
                   "endpoint_override": os.environ.get("AWS_ENDPOINT_URL")}
        fs = pafs.S3FileSystem(**{k: v for k, v in options.items() if v})
        return fs, uri[len("s3://"):]
    return pafs.FileSystem.from_uri(uri)


@dataclass(frozen=True)
class Location:
    """One folder (``uri``) and the pyarrow filesystem that reaches it."""

    uri: str
    fs: pafs.FileSystem
    path: str  # the folder's path inside ``fs``

    @classmethod
    def of(cls, where: "Location | str | os.PathLike") -> "Location":
        """A Location from a URI or path (a relative path is made absolute here)."""
        if isinstance(where, Location):
            return where
        text = str(where)
        if is_remote(text):
            try:
                fs, path = _remote_filesystem(text)
            except (ValueError, OSError) as exc:
                raise StorageError(redact_text(f"storage {text}: {exc}")) from None
            base, mark, query = text.partition("?")
            return cls(uri=base.rstrip("/") + mark + query, fs=fs, path=path.rstrip("/"))
        if text.startswith("file://"):
            text = text[len("file://"):]
        local = str(Path(text).expanduser().resolve())
        return cls(uri=local, fs=pafs.LocalFileSystem(), path=local)

    # ------------------------------------------------------------------ naming

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def local_path(self) -> Path:
        """The folder as a Path (local and shared filesystems only)."""
        if not self.is_local:
            raise StorageError(f"{self.uri} is not a local path")
        return Path(self.path)

    def child(self, *parts: str) -> "Location":
        path = posixpath.join(self.path, *parts)
        if self.is_local:
            return Location(uri=path, fs=self.fs, path=path)
        # the parts go into the path, before any query (?region=..&scheme=..), which stays
        base, mark, query = self.uri.partition("?")
        return Location(uri=posixpath.join(base, *parts) + mark + query, fs=self.fs, path=path)

    def file(self, *parts: str) -> str:
        """The fs path of a file below this folder."""
        return posixpath.join(self.path, *parts)

    def __str__(self) -> str:
        return self.uri

    def __truediv__(self, part: str) -> "Location":
        return self.child(part)

    # ------------------------------------------------------------------ files

    def exists(self, *parts: str) -> bool:
        info = self.fs.get_file_info(self.file(*parts))
        return info.type != pafs.FileType.NotFound

    def is_dir(self, *parts: str) -> bool:
        """Whether the folder exists (on an object store: whether any object has its prefix)."""
        return self.fs.get_file_info(self.file(*parts)).type == pafs.FileType.Directory

    def makedirs(self, *parts: str) -> None:
        if self.is_local:  # object stores have no folders
            self.fs.create_dir(self.file(*parts), recursive=True)

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.file(*parts)) as stream:
            return stream.read()

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode("utf-8")

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a whole file so that a reader never sees part of it."""
        target = self.file(*parts)
        if not self.is_local:
            with self.fs.open_output_stream(target) as stream:  # one PUT
                stream.write(data)
            return
        folder = os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        temp = os.path.join(folder, f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)

    def write_text(self, text: str, *parts: str) -> None:
        self.write_bytes(text.encode("utf-8"), *parts)

    def delete(self, *parts: str) -> None:
        try:
            self.fs.delete_file(self.file(*parts))
        except FileNotFoundError:
            pass

    def list_files(self, *parts: str, suffix: str = "") -> Iterator[str]:
        """Names (relative to the folder ``parts``) of the files directly in it, sorted."""
        folder = self.file(*parts)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except FileNotFoundError:
            return iter(())
        names = sorted(posixpath.basename(i.path) for i in infos
                       if i.type == pafs.FileType.File and i.path.endswith(suffix))
        return iter(names)

    def list_dirs(self, *parts: str) -> list[str]:
        """Names of the sub-folders directly in ``parts`` (object stores: common prefixes)."""
        folder = self.file(*parts)
        infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in infos
                      if i.type == pafs.FileType.Directory)

    def check_writable(self) -> None:
        """Write, read back and delete a probe file; StorageError with the reason if not."""
        probe = f".probe-{uuid.uuid4().hex}"
        try:
            self.makedirs()
            self.write_bytes(b"bkd-sweep", probe)
            if self.read_bytes(probe) != b"bkd-sweep":
                raise StorageError(redact_text(f"storage {self.uri}: a file written could not "
                                                 "be read back"))
            self.delete(probe)
        except StorageError:
            raise
        except OSError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StorageError(redact_text(f"storage {self.uri}: not writable ({reason})")) \
                from None
