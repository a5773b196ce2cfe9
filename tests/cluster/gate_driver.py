"""A driver for the late-node test: ``python -m tests.cluster.gate_driver STUDY STORAGE``
from the repository root, RAY_ADDRESS naming the cluster.

Joins the cluster as `bkd-sweep run` does, passes preflight and prints the nodes that passed
and the capacity (max_concurrent: auto) as one JSON line; then reads the capacity to wait
for from stdin (the test adds nodes meanwhile), polls until it is reached and a node has
failed, and prints the capacity and the failed nodes' lines; then asks for one trial's
placement group (as the engine makes it, placement.TrialResources) per CPU of the cluster and
prints how many were placed, and how many of those on a node that failed.
"""

from __future__ import annotations

import json
import sys
import time

from bkd_sweep.config import load_study
from bkd_sweep.engine.nodes import preflight_gate
from bkd_sweep.engine.placement import TrialResources
from bkd_sweep.engine.ray_setup import capacity_now, init_ray


def placements(gate) -> dict:
    """One trial's placement group per CPU of every alive node, each asking for the nodes
    the gate allows: those on the passed nodes are placed, none on a failed one."""
    import ray
    from ray.util import placement_group_table, remove_placement_group

    alive = [n for n in ray.nodes() if n["Alive"]]
    allowed = gate.allowed()
    cpus = int(sum(n["Resources"].get("CPU", 0) for n in alive))
    fit = int(sum(n["Resources"].get("CPU", 0) for n in alive if n["NodeID"] in allowed))
    groups = [TrialResources({"cpu": 1})({"nodes": allowed}).to_placement_group()
              for _ in range(cpus)]
    ray.wait([g.ready() for g in groups], num_returns=fit, timeout=30)
    time.sleep(2)  # time for one more to be placed, were the failed node allowed
    nodes = [placement_group_table(g)["bundles_to_node_id"].get(0) for g in groups]
    for group in groups:
        remove_placement_group(group)
    placed = [n for n in nodes if n]
    return {"cpus": cpus, "placed": len(placed),
            "on_failed": sum(n in gate.failed for n in placed)}


def main() -> None:
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
    print(json.dumps(placements(gate)), flush=True)


if __name__ == "__main__":
    main()
