"""One driver per study: a lease file in the study's results folder.

Two drivers appending to one journal would hand out the same trial twice (and on an object
store would write the same journal object). ``DriverLease`` writes ``driver.lease`` (JSON:
host, pid, driver id, started_at, heartbeat_at) and a daemon thread refreshes heartbeat_at.
A second driver is refused while the heartbeat is fresher than the TTL; a stale lease (no
heartbeat for a TTL, or its process gone on this very host) is taken over, and said so.

    with DriverLease(results_dir, study.name):
        ...  # the sweep

Neither a local/shared path (through pyarrow) nor plain S3 offers compare-and-swap, so
taking the lease is: write ours, wait ``settle_s``, read it back, and keep it only if the
driver id read is ours (of two drivers writing at once, the later write wins for both).
The race that remains: a driver whose read-to-write takes longer than ``settle_s`` can
overwrite a lease another driver has already read back, and both run. A heartbeat that
finds another driver's id stops refreshing and sets ``lost`` (it never overwrites it).
Ages compare the reader's clock with the writer's: hosts are assumed to be NTP-synced
(skew far below the TTL).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from bkd_sweep.config import StudyError
from bkd_sweep.storage import Location

log = logging.getLogger(__name__)

LEASE_FILE = "driver.lease"
DEFAULT_TTL_S = 60.0
DEFAULT_HEARTBEAT_S = 10.0
# write -> read-back wait: object stores are slower to answer than a local or shared disk
DEFAULT_SETTLE_S = {True: 0.25, False: 1.0}  # keyed by Location.is_local


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class LeaseHolder:
    """What ``driver.lease`` says about the driver holding it."""

    host: str
    pid: int
    driver_id: str
    started_at: str
    heartbeat_at: str
    # containers on one host (--net=host, as Ray's docker launcher runs them) share its name
    # but not their process ids: a pid is only looked up within the same pid namespace
    pid_namespace: str = ""

    @classmethod
    def parse(cls, data: bytes) -> "LeaseHolder | None":
        """The holder, or None for a lease that cannot be read (a stray or foreign file)."""
        try:
            fields = json.loads(data)
            holder = cls(**{key: fields[key] for key in cls.__dataclass_fields__
                            if key in fields or key != "pid_namespace"})  # older leases lack it
            holder.age_s()
        except (ValueError, KeyError, TypeError):
            return None
        return holder

    def encode(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    def age_s(self) -> float:
        """Seconds since the last heartbeat (never negative: clocks skew a little)."""
        beat = datetime.fromisoformat(self.heartbeat_at)
        return max(0.0, (datetime.now(timezone.utc) - beat).total_seconds())

    def describe(self) -> str:
        return (f"pid {self.pid} on host {self.host}, last heartbeat "
                f"{self.age_s():.0f} s ago")


class DriverLeaseLost(RuntimeError):
    """Another driver took this study's lease (this one's heartbeat went stale: a laptop
    asleep, storage unreachable for a TTL): this driver stops and writes nothing more."""


class DriverLease:
    """The lease of one study's driver on its results folder (a local path or s3://...)."""

    def __init__(self, folder: Location | str | os.PathLike, study_name: str, *,
                 ttl_s: float = DEFAULT_TTL_S, heartbeat_s: float | None = None,
                 settle_s: float | None = None):
        self.folder = Location.of(folder)
        self.study_name = study_name
        self.ttl_s = ttl_s
        self.heartbeat_s = DEFAULT_HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.settle_s = DEFAULT_SETTLE_S[self.folder.is_local] if settle_s is None else settle_s
        self.holder = LeaseHolder(host=socket.gethostname(), pid=os.getpid(),
                                  pid_namespace=_pid_namespace(),
                                  driver_id=uuid.uuid4().hex, started_at=_now(),
                                  heartbeat_at=_now())
        self.took_over: str | None = None  # the line said when a stale lease was taken over
        self.lost: str | None = None  # set when another driver took the lease from us
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ------------------------------------------------------------------ public

    def acquire(self) -> "DriverLease":
        """Take the lease, or raise StudyError (one line) while another driver holds it."""
        if self._heartbeat is not None:
            return self
        current, readable = self._read()
        if readable and current is not None and current.driver_id != self.holder.driver_id:
            stale = self._why_stale(current)
            if stale is None:
                raise self._refusal(current)
            self.took_over = (f"study {self.study_name}: took over the driver lease of "
                              f"{current.describe()} ({stale})")
        elif not readable:
            self.took_over = (f"study {self.study_name}: took over an unreadable driver lease "
                              f"({self.folder.child(LEASE_FILE)})")
        self._write()
        time.sleep(self.settle_s)  # another driver writing now has written by then
        back, _ = self._read()
        if back is None or back.driver_id != self.holder.driver_id:
            raise self._refusal(back)
        if self.took_over:
            log.warning(self.took_over)
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True,
                                           name=f"lease-{self.study_name}")
        self._heartbeat.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and delete the lease, if it is still ours."""
        if self._heartbeat is None:
            return
        self._stop.set()
        self._heartbeat.join()
        self._heartbeat = None
        try:
            current, _ = self._read()
            if current is not None and current.driver_id == self.holder.driver_id:
                self.folder.delete(LEASE_FILE)
        except OSError as exc:  # the next driver will find it stale
            log.warning("study %s: could not remove the driver lease: %s", self.study_name, exc)

    def check(self) -> None:
        """Raise DriverLeaseLost once another driver has taken the lease."""
        if self.lost is not None:
            raise DriverLeaseLost(self.lost)

    def __enter__(self) -> "DriverLease":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    # ------------------------------------------------------------------ inside

    def _why_stale(self, current: LeaseHolder) -> str | None:
        """Why ``current`` may be taken over (None: its driver is alive)."""
        if current.host == self.holder.host and not _pid_alive(current.pid) \
                and current.pid_namespace == self.holder.pid_namespace:
            return "its process is gone"
        if current.age_s() > self.ttl_s:
            return f"no heartbeat for {current.age_s():.0f} s, more than {self.ttl_s:g} s"
        return None

    def _refusal(self, current: LeaseHolder | None) -> StudyError:
        who = current.describe() if current is not None else "the lease vanished as we took it"
        return StudyError(f"study {self.study_name} is being run by another driver ({who}); "
                          "wait for it, or stop it")

    def _read(self) -> tuple[LeaseHolder | None, bool]:
        """(the holder or None, whether the file was readable: a missing one is)."""
        try:
            data = self.folder.read_bytes(LEASE_FILE)
        except FileNotFoundError:
            return None, True
        holder = LeaseHolder.parse(data)
        return holder, holder is not None

    def _write(self) -> None:
        self.holder = LeaseHolder(**{**asdict(self.holder), "heartbeat_at": _now()})
        self.folder.write_bytes(self.holder.encode(), LEASE_FILE)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                current, _ = self._read()
                if current is None or current.driver_id != self.holder.driver_id:
                    self.lost = (f"study {self.study_name}: the driver lease was taken by "
                                 + (current.describe() if current else "nobody (deleted)"))
                    log.error(self.lost)
                    return
                self._write()
            except OSError as exc:  # storage briefly unreachable: try again next beat
                log.warning("study %s: driver lease heartbeat failed: %s", self.study_name, exc)


def _pid_namespace() -> str:
    """This process's pid namespace (Linux; elsewhere empty: one namespace per host)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
