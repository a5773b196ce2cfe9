"""Joining or starting Ray for a sweep, and how many trials it runs at once.

Engines: embedded Ray (``ray.init(address="local")``, this machine's CPUs/GPUs, a capped
object store), or the cluster at RAY_ADDRESS (e.g. inside a Ray job), joined with the local
Ray token and checked for reachability first (``ray.init`` would retry for minutes).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Callable

from bkd_sweep.config import Study, StudyError
from bkd_sweep.engine.plan import trials_fitting
from bkd_sweep.settings import settings

DEFAULT_OBJECT_STORE_MB = 384


def quiet_tune() -> None:
    """Our progress lines replace Tune's tables (the legacy reporter honours verbose=0), and
    our records (trials/<id>/, Parquet, MLflow) replace Tune's per-trial result.json,
    progress.csv and TensorBoard files: their writers cost the driver a write per report and
    the TensorBoard one imports torch (2 s before Tune starts the first trial)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # the ResultGrid that Tuner.fit returns (unused) looks for those files and warns per trial
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def init_ray(study: Study) -> bool:
    """Connect to RAY_ADDRESS's cluster, or start an embedded Ray. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if not is_embedded():
        from bkd_sweep.engine.submit import enable_token_auth

        enable_token_auth()  # a token-protected cluster (Ray's default) refuses us without it
        try:
            ray.init(address="auto", **quiet)
        except (ConnectionError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StudyError(f"cannot join the Ray cluster at RAY_ADDRESS="
                             f"{settings().ray_address}: {first}") from None
        return True
    mb = study.resources.object_store_mb or DEFAULT_OBJECT_STORE_MB
    # "local": always a fresh embedded instance, never another user's `ray start` cluster
    ray.init(address="local", object_store_memory=mb * 1024 * 1024, include_dashboard=False,
             **quiet)
    return True


def shutdown_ray() -> None:
    """``ray.shutdown()``, a second faster for an embedded Ray: Ray stops the GCS before its
    autoscaler monitor, whose SIGTERM handler then reports to the GCS that is gone, and
    ``ray.shutdown`` waits its one-second grace before killing it. A local cluster's monitor
    holds no state, so it is killed first, while nothing waits on it."""
    import ray

    try:
        from ray._private import ray_constants
        from ray._private.worker import _global_node as node  # set only where we started Ray

        monitors = node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node \
            else []
    except (ImportError, AttributeError):  # another Ray layout: the plain shutdown
        monitors = []
    for info in monitors:
        try:
            info.process.kill()  # Popen: a no-op once it has exited
            info.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):  # ray.shutdown still stops the rest
            pass
    ray.shutdown()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """One line at once for a wrong RAY_ADDRESS (ray.init would retry for minutes)."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # "auto", ray://..., or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise StudyError(f"cannot reach the Ray cluster at RAY_ADDRESS={address}: "
                         f"{exc.strerror or exc}") from None


def is_embedded() -> bool:
    """No cluster to join: RAY_ADDRESS unset, or a dashboard URL (that is for job submission)."""
    address = settings().ray_address or ""
    return not address or address.startswith(("http://", "https://"))


def node_resources() -> list[dict[str, float]]:
    """The resources of each alive node of the connected Ray cluster."""
    import ray

    return [dict(node.get("Resources", {})) for node in ray.nodes() if node.get("Alive")]


def fits_on_nodes(per_trial, nodes: list[dict[str, float]]) -> int:
    """Trials running at once on these nodes. A worker stays on one node, so each node fits
    its own share (totals would count a trial spread over nodes that Ray never places); a
    multi-worker trial's workers may sit on different nodes (Train's PACK is soft)."""
    one = per_trial.model_copy(update={"workers": 1})
    slots = sum(trials_fitting(one, node.get("CPU", 0.0), node.get("GPU", 0.0))
                for node in nodes)
    return slots // per_trial.workers


def check_a_node_fits(study: Study, nodes: list[dict[str, float]], file=None) -> None:
    """Refuse (StudyError) when the alive nodes cannot run one trial: Ray would leave it
    pending forever, and Tune's warning compares totals, so it would say nothing."""
    per_trial = study.resources.per_trial
    if fits_on_nodes(per_trial, nodes):
        return
    need_gpu = per_trial.gpu > 0
    largest = max(nodes, default={}, key=lambda n: ((n.get("GPU", 0.0), n.get("CPU", 0.0))
                                                   if need_gpu else n.get("CPU", 0.0)))
    each = "each of its workers needs" if per_trial.workers > 1 else "it needs"
    spread = (f" ({per_trial.workers} workers in all)" if per_trial.workers > 1 else "")
    raise StudyError(
        f"no node of the cluster fits one trial: {each} {per_trial.cpu:g} CPUs and "
        f"{per_trial.gpu:g} GPUs on one node{spread}; the largest of {len(nodes)} alive "
        f"node(s) has {largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs",
        field="resources.per_trial", file=file)


def concurrency(study: Study, cluster: dict[str, float], remaining: int,
                nodes: list[dict[str, float]] | None = None) -> int:
    """Trials to run at once: resources.max_concurrent, else as many as the cluster fits
    (per node when ``nodes`` is given, else in ``cluster``'s totals: one machine)."""
    per_trial = study.resources.per_trial
    fits = fits_on_nodes(per_trial, nodes if nodes is not None else [cluster])
    if fits == 0 and is_embedded():
        raise StudyError(
            f"one trial needs {per_trial.cpu * per_trial.workers:g} CPUs and "
            f"{per_trial.gpu * per_trial.workers:g} GPUs; this machine has "
            f"{cluster.get('CPU', 0):g} CPUs and {cluster.get('GPU', 0):g} GPUs",
            field="resources.per_trial")
    wanted = study.resources.concurrency_cap or max(fits, 1)
    return max(1, min(wanted, remaining))


def capacity_now(study: Study, remaining: int, refresh_s: float = 5.0,
                 nodes: Callable[[], list[dict[str, float]]] | None = None
                 ) -> Callable[[], int]:
    """Trials the alive nodes fit now (max_concurrent: auto), re-read from Ray every few
    seconds so nodes that join (or leave) change it. ``nodes``: the resources of the nodes
    to count (e.g. ``NodeGate.nodes``: only those that passed preflight); else every alive
    node's."""
    import ray

    state = {"at": -1e9, "value": 1}
    counted = nodes or node_resources

    def capacity() -> int:
        now = time.monotonic()
        if now - state["at"] > refresh_s:
            state["value"] = concurrency(study, ray.cluster_resources(), remaining,
                                         nodes=counted())
            state["at"] = now
        return state["value"]

    return capacity


def warn_local_mlflow(tracker, nodes: int) -> None:
    """With several nodes, a file-backed MLflow store works (only the driver writes it) but
    nobody else can watch it: say how to use a server instead."""
    uri = str(getattr(tracker, "tracking_uri", "") or "")
    if nodes > 1 and uri.startswith(("sqlite:", "file:", "/")):
        print(f"warning: MLflow uses a local store ({uri.split(':', 1)[0]}) on a {nodes}-node "
              "cluster; set tracking.mlflow_uri or MLFLOW_TRACKING_URI to a tracking server "
              "(mlflow server --backend-store-uri <database> --artifacts-destination <root>)",
              file=sys.stderr, flush=True)
