"""A driver for the late-node test: ``python -m tests.cluster.gate_driver STUDY STORAGE``
from the repository root, RAY_ADDRESS naming the cluster.

Joins the cluster as `bkd-sweep run` does, passes preflight and prints the nodes that passed
and the capacity (max_concurrent: auto) as one JSON line; then reads the capacity to wait
for from stdin (the test adds nodes meanwhile), polls until it is reached and a node has
failed, and prints the capacity and the failed nodes' lines.
"""

from __future__ import annotations

import json
import sys
import time

from bkd_sweep.config import load_study
from bkd_sweep.engine.nodes import preflight_gate
from bkd_sweep.engine.ray_setup import capacity_now, init_ray

if __name__ == "__main__":
    loaded = load_study(sys.argv[1])
    init_ray(loaded.study)
    gate = preflight_gate(loaded, sys.argv[2])
    capacity = capacity_now(loaded.study, 100, refresh_s=0, nodes=gate.nodes)
    print(json.dumps({"passed": len(gate.passed), "capacity": capacity()}), flush=True)
    want = int(sys.stdin.readline())
    deadline = time.time() + 120
    while time.time() < deadline and not (capacity() == want and gate.failed):
        time.sleep(0.5)
    time.sleep(2)  # and the failed node is still not counted a little later
    print(json.dumps({"capacity": capacity(), "failed": sorted(gate.failed.values())}),
          flush=True)
