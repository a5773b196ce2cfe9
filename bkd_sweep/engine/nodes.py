"""Preflight on every node of a Ray cluster, before any trial starts.

A trial may land on any alive node, so what the driver checked on its own machine must hold on
each of them: one Ray task per alive node (pinned there, no CPU asked so it runs even on a full
node) runs ``preflight.NODE_CHECKS`` (variables, data roots, teacher checkpoints, results
folder) plus a write-and-read-back of the storage root, the GPUs Ray advertises against those
torch sees, and the versions of torch / spikingjelly / ray / bkd-sweep against the driver's.
The storage root must also be the driver's (``SharedProbe``): a node-local path passes a
write-and-read-back on every node, yet scatters checkpoints and teacher caches across them.
Before any of that, some alive node must fit one trial (Ray would leave it pending forever).
Every failing node gives one line; the driver then stops with exit 2 before anything runs.
Nodes that join later are checked the same way before their resources count (``NodeGate``).
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

from bkd_sweep.config import LoadedStudy, StudyError

VERSIONED = ("torch", "spikingjelly", "ray", "bkd-sweep")
NODE_CHECK_TIMEOUT_S = 300.0
NODE_RECHECK_S = 600.0  # a node that failed is checked again this long after (fixed by then?)


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


@dataclass(frozen=True)
class SharedProbe:
    """A file the driver writes under the storage root, which each node must read back, and
    one each node writes there, which the driver then reads: proof that they share the root
    (each node reading back its own file proves only that it can write). The same for a
    teacher cache set apart from the root (BKD_CACHE_DIR): node-local, each node would
    train its own teacher, and trials would distil from different ones."""

    root: str  # the storage root's URI, as every node is given it
    nonce: str
    cache: str | None = None  # BKD_CACHE_DIR's folder, when it is set

    PREFIX = ".bkd-shared-"

    @classmethod
    def place(cls, storage_uri: str, cache: str | None = None) -> "SharedProbe":
        """The driver's side: write its file in each folder (StorageError if it cannot)."""
        from bkd_sweep.storage import Location

        probe = cls(storage_uri, uuid.uuid4().hex, cache)
        for folder in probe.folders():
            Location.of(folder).write_text(probe.nonce, probe.name("driver"))
        return probe

    def folders(self) -> list[str]:
        return [self.root] + ([self.cache] if self.cache else [])

    def name(self, who: str) -> str:
        return f"{self.PREFIX}{self.nonce}-{who}"

    def _holds(self, folder: str, who: str) -> bool:
        from bkd_sweep.storage import Location

        try:
            return Location.of(folder).read_text(self.name(who)) == self.nonce
        except (OSError, ValueError):
            return False

    def _not_shared(self, folder: str, why: str) -> str:
        from bkd_sweep.redact import redact_text

        what = "storage" if folder == self.root else "teacher cache (BKD_CACHE_DIR)"
        return redact_text(f"{what} {folder} is not shared with the driver: {why} (a "
                           "node-local path? use a shared filesystem or an object store)")

    def node_side(self, node_id: str) -> str | None:
        """On a node: the problem, or None once it has seen the driver's files and written
        its own for the driver to read."""
        from bkd_sweep.storage import Location

        for folder in self.folders():
            if not self._holds(folder, "driver"):
                return self._not_shared(folder, "the driver's probe file is not visible on "
                                                "this node")
            Location.of(folder).write_text(self.nonce, self.name(node_id))
        return None

    def driver_side(self, node_id: str) -> str | None:
        """On the driver, after the node's side passed: the problem, or None."""
        for folder in self.folders():
            if not self._holds(folder, node_id):
                return self._not_shared(folder, "the probe file this node wrote is not "
                                                "visible to the driver")
        return None

    def remove(self, node_ids: list[str]) -> None:
        from bkd_sweep.storage import Location, StorageError

        for folder in self.folders():
            for who in ["driver", *node_ids]:
                try:
                    Location.of(folder).delete(self.name(who))
                except (OSError, StorageError):  # a leftover dot-file harms nothing
                    pass


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
                  gpus_advertised: float, shared: SharedProbe | None = None,
                  node_id: str = "") -> list[str]:
    """Everything wrong on the machine this runs on (an empty list: ready); with ``shared``,
    that includes a storage root other than the driver's."""
    from bkd_sweep.preflight import NODE_CHECKS
    from bkd_sweep.storage import Location, StorageError

    problems: list[str] = []
    for check in NODE_CHECKS:
        for problem in check(loaded):
            where = f"{problem.field}: " if problem.field else ""
            problems.append(f"{where}{problem.message}")
    try:
        Location.of(storage_uri).check_writable()
        not_shared = shared.node_side(node_id) if shared is not None else None
        if not_shared:
            problems.append(not_shared)
    except (StorageError, OSError) as exc:
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


def _on_node(loaded: LoadedStudy, storage_uri: str, driver_versions: dict[str, str],
             gpus: float, shared: SharedProbe | None, node_id: str) -> list[str]:
    return node_problems(loaded, storage_uri, driver_versions, gpus, shared, node_id)


def start_checks(loaded: LoadedStudy, storage_uri: str, nodes: list[dict[str, Any]],
                 shared: SharedProbe | None) -> dict[Any, dict[str, Any]]:
    """One node_problems task pinned to each node (no CPU asked: it runs on a full node);
    {its ref: the node}."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(_on_node)
    versions = software_versions()
    pending = {}
    for node in nodes:
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        gpus = float(node.get("Resources", {}).get("GPU", 0.0))
        pending[task.options(scheduling_strategy=strategy).remote(
            loaded, storage_uri, versions, gpus, shared, node["NodeID"])] = node
    return pending


def node_report(node: dict[str, Any], answer: Callable[[], list[str]],
                shared: SharedProbe | None) -> NodeReport:
    """A node's verdict from ``answer`` (the task's result); with ``shared``, the driver then
    reads the probe file a node wrote once it saw the driver's (no storage problem)."""
    try:
        problems = list(answer())
        if shared is not None and not any(p.startswith(("storage ", "teacher cache "))
                                          for p in problems):
            problems += [p for p in [shared.driver_side(node["NodeID"])] if p]
    except Exception as exc:  # noqa: BLE001 - a node that cannot run a task is a problem
        problems = [f"the check could not run: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}"]
    return NodeReport(node["NodeID"], node_address(node), problems)


def node_address(node: dict[str, Any]) -> str:
    """host:port of a node's raylet, as ray.nodes() lists it."""
    address = node.get("NodeManagerAddress", "?")
    return f"{address}:{node['NodeManagerPort']}" if node.get("NodeManagerPort") else address


def check_every_node(loaded: LoadedStudy, storage_uri: str, shared: SharedProbe | None = None,
                     nodes: list[dict[str, Any]] | None = None) -> list[NodeReport]:
    """Run node_problems on ``nodes`` (default: every alive node of the connected cluster)."""
    import ray

    pending = start_checks(loaded, storage_uri, alive_nodes() if nodes is None else nodes,
                           shared)
    return [node_report(node, lambda ref=ref: ray.get(ref, timeout=NODE_CHECK_TIMEOUT_S),
                        shared) for ref, node in pending.items()]


def place_probe(loaded: LoadedStudy, storage_uri: str) -> SharedProbe:
    from bkd_sweep.settings import cache_dir_for, settings
    from bkd_sweep.storage import StorageError

    cache = str(cache_dir_for(Path("."))) if settings().cache_dir else None
    try:
        return SharedProbe.place(storage_uri, cache)
    except (StorageError, OSError) as exc:
        raise StudyError(f"storage {storage_uri}: the driver cannot write there ({exc})",
                         field="storage", file=loaded.path) from None


def nodes_that_fit_a_trial(loaded: LoadedStudy, poll_s: float = 5.0) -> list[dict[str, Any]]:
    """The alive nodes, once one of them fits a trial or BKD_NODE_WAIT_S passed (nodes may
    still be starting: `ray up` returns before its workers, an autoscaler adds them)."""
    from bkd_sweep.engine.ray_setup import fits_on_nodes
    from bkd_sweep.settings import NODE_WAIT_S, settings

    wait_s = settings().node_wait_s
    deadline = time.monotonic() + (NODE_WAIT_S if wait_s is None else wait_s)
    nodes, said = alive_nodes(), False
    while not fits_on_nodes(loaded.study.resources.per_trial,
                            [dict(n.get("Resources", {})) for n in nodes]):
        if time.monotonic() >= deadline:
            break
        if not said:
            said = True
            print(f"waiting up to {deadline - time.monotonic():.0f} s for a node that fits "
                  "one trial (BKD_NODE_WAIT_S)", file=sys.stderr, flush=True)
        time.sleep(poll_s)
        nodes = alive_nodes()
    return nodes


def preflight_gate(loaded: LoadedStudy, storage_uri: str) -> "NodeGate":
    """Raise StudyError unless some alive node fits a trial and every alive node is ready
    (one line per failing node); else the gate that checks nodes joining later."""
    from bkd_sweep.engine.ray_setup import check_a_node_fits

    nodes = nodes_that_fit_a_trial(loaded)
    check_a_node_fits(loaded.study, [dict(n.get("Resources", {})) for n in nodes],
                      file=loaded.path)
    shared = place_probe(loaded, storage_uri)
    try:
        reports = check_every_node(loaded, storage_uri, shared, nodes)
    finally:
        shared.remove([n["NodeID"] for n in nodes])
    failing = [r for r in reports if r.problems]
    if failing:
        raise NodePreflightError(f"preflight failed on {len(failing)} of {len(reports)} "
                                 "nodes; nothing was started:",
                                 [" ".join(r.line().split()) for r in failing], loaded.path)
    return NodeGate(loaded, storage_uri, [r.node_id for r in reports])


class NodeGate:
    """The nodes a sweep uses: those that passed preflight. Their resources are what
    max_concurrent: auto counts, their ids what trials and teacher jobs are placed on
    (placement.node_selector). A node that joins later gets the same check before it counts,
    as a task the gate polls without waiting (capacity is asked often); one that fails, or
    whose check has not answered in NODE_CHECK_TIMEOUT_S, is named on stderr and not used,
    then checked again every NODE_RECHECK_S (a mount or a data copy that was not ready when
    it joined): it counts once it passes, and the same failure is not named twice."""

    def __init__(self, loaded: LoadedStudy, storage_uri: str, passed: list[str]):
        self.loaded = loaded
        self.storage_uri = storage_uri
        self.passed: set[str] = set(passed)
        self.failed: dict[str, str] = {}  # node id: its line
        self._failed_at: dict[str, float] = {}  # node id: when its check ended (monotonic)
        # a check's ref: its node, its probe and when it started (time.monotonic)
        self._pending: dict[Any, tuple[dict[str, Any], SharedProbe, float]] = {}
        self._looked_at = time.monotonic()

    def nodes(self) -> list[dict[str, float]]:
        """The resources of the alive nodes that passed; starts checks of new ones."""
        self._looked_at = time.monotonic()
        alive = alive_nodes()
        self._collect()
        now = time.monotonic()
        waiting = {node_id for node_id, ended in self._failed_at.items()
                   if now - ended < NODE_RECHECK_S}  # failed, not yet due for a recheck
        known = self.passed | waiting | {n["NodeID"] for n, _, _ in self._pending.values()}
        for node in (n for n in alive if n["NodeID"] not in known):
            try:  # a probe of its own: each is removed when its node's check ends
                shared = place_probe(self.loaded, self.storage_uri)
            except StudyError:  # the storage blinked: the node is checked on a later call
                break
            for ref in start_checks(self.loaded, self.storage_uri, [node], shared):
                self._pending[ref] = (node, shared, time.monotonic())
        return [dict(n.get("Resources", {})) for n in alive if n["NodeID"] in self.passed]

    def allowed(self, refresh_s: float = 5.0) -> list[str]:
        """The ids of the nodes work may be placed on (looks for joiners every few s)."""
        if time.monotonic() - self._looked_at > refresh_s:
            self.nodes()
        return sorted(self.passed)

    def _collect(self) -> None:
        import ray

        if not self._pending:
            return
        done, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
        late = [ref for ref, (_, _, started) in self._pending.items() if ref not in done
                and time.monotonic() - started > NODE_CHECK_TIMEOUT_S]
        for ref in [*done, *late]:
            node, shared, _ = self._pending.pop(ref)
            if ref in late:
                ray.cancel(ref, force=True)
                report = NodeReport(node["NodeID"], node_address(node), [
                    f"its preflight check did not answer in {NODE_CHECK_TIMEOUT_S:.0f} s"])
            else:
                report = node_report(node, lambda ref=ref: ray.get(ref), shared)
            shared.remove([node["NodeID"]])
            self._record(node["NodeID"], report)

    def _record(self, node_id: str, report: NodeReport) -> None:
        """A check's answer: passed (after a failure: said once), or failed (said unless it
        failed the same way last time)."""
        if not report.problems:
            self.passed.add(node_id)
            self._failed_at.pop(node_id, None)
            if self.failed.pop(node_id, None) is not None:
                print(f"note: node {report.address} passed preflight on a recheck; this sweep "
                      "uses it from now on", file=sys.stderr, flush=True)
            return
        line = " ".join(report.line().split())
        self._failed_at[node_id] = time.monotonic()
        if self.failed.get(node_id) != line:
            print(f"warning: a node that joined failed preflight; nothing of this sweep runs "
                  f"there until a recheck passes (every {NODE_RECHECK_S / 60:.0f} min): "
                  f"{line}", file=sys.stderr, flush=True)
        self.failed[node_id] = line
