"""The driver lease on a local study folder (S3: test_journal_storage.py): a second driver is
refused with one line, a stale lease is taken over, release removes only our own lease, the
heartbeat keeps it fresh. Short TTLs and heartbeats; no sleep over 2 s."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bkd_sweep.config import StudyError
from bkd_sweep.engine.lease import LEASE_FILE, DriverLease

FAST = dict(ttl_s=1.0, heartbeat_s=0.1, settle_s=0.05)


def write_lease(folder: Path, *, host: str, pid: int, beat_age_s: float,
                namespace: str | None = None) -> None:
    """Another driver's lease, as that driver would have written it (by default from this
    process's pid namespace)."""
    beat = datetime.now(timezone.utc) - timedelta(seconds=beat_age_s)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LEASE_FILE).write_text(json.dumps({
        "host": host, "pid": pid, "driver_id": "other-driver",
        "pid_namespace": os.readlink("/proc/self/ns/pid") if namespace is None else namespace,
        "started_at": (beat - timedelta(hours=1)).isoformat(), "heartbeat_at": beat.isoformat()}))


def lease_of(folder: Path) -> dict:
    return json.loads((folder / LEASE_FILE).read_text())


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_acquire_writes_who_holds_it_and_release_removes_it(tmp_path):
    folder = tmp_path / "quickstart"
    lease = DriverLease(folder, "quickstart", **FAST).acquire()
    held = lease_of(folder)
    assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
    assert held["driver_id"] == lease.holder.driver_id and len(held["driver_id"]) == 32
    assert set(held) == {"host", "pid", "driver_id", "started_at", "heartbeat_at",
                         "pid_namespace"}
    assert held["pid_namespace"] == os.readlink("/proc/self/ns/pid")
    lease.release()
    assert not (folder / LEASE_FILE).exists()


def test_a_second_driver_is_refused_with_one_line(tmp_path):
    write_lease(tmp_path, host="node-1", pid=1234, beat_age_s=3)
    with pytest.raises(StudyError) as info:
        DriverLease(tmp_path, "quickstart", **{**FAST, "ttl_s": 60}).acquire()
    assert str(info.value) == ("study quickstart is being run by another driver (pid 1234 on "
                               "host node-1, last heartbeat 3 s ago); wait for it, or stop it")
    assert lease_of(tmp_path)["driver_id"] == "other-driver"  # left alone


def test_a_live_driver_of_this_process_refuses_another(tmp_path):
    with DriverLease(tmp_path, "quickstart", **FAST):
        with pytest.raises(StudyError, match=rf"\(pid {os.getpid()} on host "):
            DriverLease(tmp_path, "quickstart", **FAST).acquire()


def test_a_stale_lease_is_taken_over_and_said_so(tmp_path, caplog):
    write_lease(tmp_path, host="node-1", pid=1234, beat_age_s=75)
    with caplog.at_level(logging.WARNING, logger="bkd_sweep.engine.lease"):
        lease = DriverLease(tmp_path, "quickstart", **{**FAST, "ttl_s": 60}).acquire()
    try:
        assert lease_of(tmp_path)["driver_id"] == lease.holder.driver_id
        assert lease.took_over == ("study quickstart: took over the driver lease of pid 1234 "
                                   "on host node-1, last heartbeat 75 s ago (no heartbeat for "
                                   "75 s, more than 60 s)")
        assert [r.getMessage() for r in caplog.records] == [lease.took_over]
    finally:
        lease.release()


def test_a_fresh_lease_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    write_lease(tmp_path, host=socket.gethostname(), pid=dead_pid(), beat_age_s=1)
    with DriverLease(tmp_path, "quickstart", **{**FAST, "ttl_s": 60}) as lease:
        assert lease.took_over.endswith("(its process is gone)")
        assert lease_of(tmp_path)["driver_id"] == lease.holder.driver_id


def test_a_fresh_lease_from_another_container_of_this_host_is_refused(tmp_path):
    """Containers run with --net=host share the host's name, not their process ids: a pid
    that is not alive here may be a live driver there."""
    write_lease(tmp_path, host=socket.gethostname(), pid=dead_pid(), beat_age_s=1,
                namespace="pid:[4026530000]")
    with pytest.raises(StudyError, match="being run by another driver"):
        DriverLease(tmp_path, "quickstart", **{**FAST, "ttl_s": 60}).acquire()


def test_an_unreadable_lease_is_taken_over(tmp_path):
    (tmp_path / LEASE_FILE).write_text("{not json")
    with DriverLease(tmp_path, "quickstart", **FAST) as lease:
        assert "unreadable driver lease" in lease.took_over


def test_the_heartbeat_refreshes_the_lease_and_keeps_it_past_the_ttl(tmp_path):
    with DriverLease(tmp_path, "quickstart", **FAST) as lease:
        first = lease_of(tmp_path)["heartbeat_at"]
        time.sleep(1.5)  # longer than the 1 s TTL: only the heartbeat keeps it fresh
        held = lease_of(tmp_path)
        assert held["heartbeat_at"] > first and held["started_at"] == lease.holder.started_at
        with pytest.raises(StudyError, match="is being run by another driver"):
            DriverLease(tmp_path, "quickstart", **FAST).acquire()


def test_release_leaves_a_lease_another_driver_took(tmp_path, caplog):
    lease = DriverLease(tmp_path, "quickstart", **FAST).acquire()
    write_lease(tmp_path, host="node-2", pid=99, beat_age_s=0)  # e.g. after we stalled
    deadline = time.monotonic() + 2
    while lease.lost is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lease.lost and "pid 99 on host node-2" in lease.lost  # the heartbeat noticed
    lease.release()
    assert lease_of(tmp_path)["driver_id"] == "other-driver"  # not overwritten, not deleted


def test_of_two_drivers_starting_at_once_exactly_one_gets_the_lease(tmp_path):
    """No compare-and-swap: both write, wait, read back; the later write wins for both."""
    start = threading.Barrier(2)
    outcomes: list[object] = []

    def driver() -> None:
        lease = DriverLease(tmp_path, "quickstart", ttl_s=60, heartbeat_s=0.1, settle_s=0.3)
        start.wait()
        try:
            outcomes.append(lease.acquire())
        except StudyError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=driver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [o for o in outcomes if isinstance(o, DriverLease)]
    lost = [o for o in outcomes if isinstance(o, StudyError)]
    assert len(won) == 1 and len(lost) == 1
    assert re.match(r"study quickstart is being run by another driver", str(lost[0]))
    assert lease_of(tmp_path)["driver_id"] == won[0].holder.driver_id
    won[0].release()
