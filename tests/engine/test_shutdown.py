"""shutdown_ray: an embedded Ray's autoscaler monitor is gone before Ray's own shutdown
reaches it (Ray stops the GCS first, and the monitor's SIGTERM handler then reports to a GCS
that is gone while ray.shutdown waits a second), and every process Ray started is stopped."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# In its own interpreter: the test session's shared Ray must stay up.
SCRIPT = r"""
import json, logging, os
import ray
import ray._private.node as node_module
from ray._private import ray_constants

from bkd_sweep.engine.ray_setup import shutdown_ray

alive_when_reached = {}
original = node_module.Node._kill_process_impl


def record(self, process_type, **kwargs):
    infos = self.all_processes.get(process_type, [])
    alive_when_reached[process_type] = any(i.process.poll() is None for i in infos)
    return original(self, process_type, **kwargs)


node_module.Node._kill_process_impl = record
ray.init(address="local", num_cpus=1, object_store_memory=100 * 1024 * 1024,
         include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
node = ray._private.worker._global_node
started = [i.process.pid for infos in node.all_processes.values() for i in infos]
monitor = [i.process.pid for i in node.all_processes[ray_constants.PROCESS_TYPE_MONITOR]]
shutdown_ray()


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


left = [pid for pid in started if running(pid)]
print(json.dumps({"reached": alive_when_reached, "monitor": monitor, "started": started,
                  "left": left, "initialized": ray.is_initialized()}))
"""


@pytest.mark.slow
@pytest.mark.ray
def test_shutdown_ray_stops_the_monitor_first_and_everything_after() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["monitor"]) == 1
    # Ray's kill loop found the monitor already stopped, the GCS and raylet still running
    assert out["reached"]["monitor"] is False
    assert out["reached"]["gcs_server"] is True
    assert out["reached"]["raylet"] is True
    assert out["left"] == [] and len(out["started"]) >= 4
    assert out["initialized"] is False
    assert "Terminated with signal" not in proc.stderr  # no handler ran: nothing reported


def test_shutdown_ray_without_a_started_node_is_ray_shutdown(monkeypatch) -> None:
    """Joined to a cluster (no node of ours) or Ray down: only ray.shutdown is called."""
    import ray

    from bkd_sweep.engine import ray_setup

    calls = []
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr("ray._private.worker._global_node", None)
    ray_setup.shutdown_ray()
    assert calls == ["shutdown"]
