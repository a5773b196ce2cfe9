"""The cluster tier: one real multi-node Ray cluster (head + a node) shared by the module."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.cluster.ray_cluster import RayCluster

VENV_BIN = str(Path(sys.executable).parent)
ROOT = Path(__file__).resolve().parents[2]


def readme_line(prefix: str, containing: str = "") -> str:
    """The README's "On a cluster" command starting with ``prefix`` (and holding
    ``containing``): the first such line."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## On a cluster"):text.index("## Environment variables")]
    lines = [line for line in section.splitlines()
             if line.startswith(prefix) and containing in line]
    assert lines, (f"README's On a cluster section has no line starting {prefix!r}"
                   + (f" with {containing!r}" if containing else ""))
    return lines[0]


def cluster_env(cluster: RayCluster | None = None, connect: bool = False,
                **extra: str) -> dict[str, str]:
    """The environment of a command run against the cluster (as a user's shell would be,
    holding the cluster's token); ``connect``: RAY_ADDRESS names the cluster too."""
    env = {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
           "RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1", **extra}
    for name in ("RAY_ADDRESS", "BKD_STORAGE", "BKD_RESULTS_DIR", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    if cluster is not None:
        env.update(cluster.token_env())
        if connect:
            env["RAY_ADDRESS"] = cluster.address
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head with 1 CPU and one more node with 1 CPU: two trials at once, one per node."""
    logs = tmp_path_factory.mktemp("ray-logs")
    ray_cluster = RayCluster(logs, head_cpus=1, env={"PATH": cluster_env()["PATH"]})
    try:
        ray_cluster.make_token(tmp_path_factory.mktemp("token-home"))
        ray_cluster.start_head()
        ray_cluster.wait_for_nodes(1)
        ray_cluster.add_node("node1", cpus=1)
        ray_cluster.wait_for_nodes(2)
        yield ray_cluster
    finally:
        ray_cluster.stop()
