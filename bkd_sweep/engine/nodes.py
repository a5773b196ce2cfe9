"""Preflight on every node of a Ray cluster, before any trial starts.

A trial may land on any alive node, so what the driver checked on its own machine must hold on
each of them: one Ray task per alive node (pinned there, no CPU asked so it runs even on a full
node) runs ``preflight.NODE_CHECKS`` (variables, data roots, teacher checkpoints, results
folder) plus a write-and-read-back of the storage root, the GPUs Ray advertises against those
torch sees, and the versions of torch / spikingjelly / ray / bkd-sweep against the driver's.
Every failing node gives one line; the driver then stops with exit 2 before anything runs.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from bkd_sweep.config import LoadedStudy, StudyError

VERSIONED = ("torch", "spikingjelly", "ray", "bkd-sweep")
NODE_CHECK_TIMEOUT_S = 300.0


class NodePreflightError(StudyError):
    """Preflight failed on some nodes: a header line, then one line per failing node."""

    def __init__(self, header: str, node_lines: list[str], file) -> None:
        super().__init__(header, file=file)
        self.node_lines = node_lines

    def __str__(self) -> str:
        return "\n".join([self.one_line(), *self.node_lines])


@dataclass(frozen=True)
class NodeReport:
    """What one node answered."""

    node_id: str
    address: str
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"node {self.address} (id {self.node_id[:12]}): " + "; ".join(self.problems)


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from bkd_sweep.records import code_version

    found: dict[str, str] = {}
    for name in VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    found["bkd-sweep code"] = code_version()
    return found


def node_problems(loaded: LoadedStudy, storage_uri: str, driver_versions: dict[str, str],
                  gpus_advertised: float) -> list[str]:
    """Everything wrong on the machine this runs on (an empty list: ready)."""
    from bkd_sweep.preflight import NODE_CHECKS
    from bkd_sweep.storage import Location, StorageError

    problems: list[str] = []
    for check in NODE_CHECKS:
        for problem in check(loaded):
            where = f"{problem.field}: " if problem.field else ""
            problems.append(f"{where}{problem.message}")
    try:
        Location.of(storage_uri).check_writable()
    except StorageError as exc:
        problems.append(str(exc))
    ours = software_versions()
    for name, wanted in driver_versions.items():
        if ours.get(name) != wanted:
            problems.append(f"{name} {ours.get(name)} here, {wanted} on the driver")
    if gpus_advertised > 0:
        import torch

        seen = torch.cuda.device_count()
        if seen < gpus_advertised:
            problems.append(f"Ray advertises {gpus_advertised:g} GPUs but torch sees {seen}")
    return problems


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def check_every_node(loaded: LoadedStudy, storage_uri: str) -> list[NodeReport]:
    """Run node_problems on every alive node of the connected Ray cluster."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def on_node(driver_versions: dict[str, str], gpus: float) -> tuple[str, list[str]]:
        return socket.gethostname(), node_problems(loaded, storage_uri, driver_versions, gpus)

    versions = software_versions()
    pending = {}
    for node in alive_nodes():
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        gpus = float(node.get("Resources", {}).get("GPU", 0.0))
        ref = on_node.options(scheduling_strategy=strategy).remote(versions, gpus)
        pending[ref] = node
    reports = []
    for ref, node in pending.items():
        address = node.get("NodeManagerAddress", "?")
        try:
            _, problems = ray.get(ref, timeout=NODE_CHECK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a node that cannot run a task is a problem
            problems = [f"the check could not run: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}"]
        if node.get("NodeManagerPort"):
            address = f"{address}:{node['NodeManagerPort']}"
        reports.append(NodeReport(node["NodeID"], address, problems))
    return reports


def preflight_nodes(loaded: LoadedStudy, storage_uri: str) -> int:
    """Raise StudyError, one line per failing node, unless every alive node is ready.
    Returns the number of nodes checked."""
    reports = check_every_node(loaded, storage_uri)
    failing = [r for r in reports if r.problems]
    if failing:
        raise NodePreflightError(f"preflight failed on {len(failing)} of {len(reports)} "
                                 "nodes; nothing was started:",
                                 [" ".join(r.line().split()) for r in failing], loaded.path)
    return len(reports)
