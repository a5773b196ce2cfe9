"""What one node's preflight finds (the function each node's Ray task runs), without Ray."""

from __future__ import annotations

import pytest

from bkd_sweep.config import load_study_text
from bkd_sweep.engine.nodes import NodePreflightError, node_problems, software_versions

STUDY = """
name: nodes
data: {{dataset: cifar10, root: {root}}}
distill: {{mode: none}}
search: {{sampler: grid, params: {{student.timesteps: [1]}}}}
"""


def test_a_ready_node_has_no_problems(tmp_path, dataset_files):
    dataset_files.write_cifar10(tmp_path / "c10")
    loaded = load_study_text(STUDY.format(root=tmp_path / "c10"), tmp_path / "s.yaml")
    assert node_problems(loaded, str(tmp_path / "res"), software_versions(), 0.0) == []


def test_a_node_reports_data_storage_versions_and_gpus(tmp_path):
    loaded = load_study_text(STUDY.format(root=tmp_path / "missing"), tmp_path / "s.yaml")
    blocked = tmp_path / "file"
    blocked.write_text("a file where the storage root should be")
    driver = {**software_versions(), "torch": "0.0.1"}
    problems = node_problems(loaded, str(blocked / "root"), driver, gpus_advertised=64)
    assert problems[0] == f"data.root: cifar10: data root {tmp_path / 'missing'} does not exist"
    assert any(p.startswith(f"storage {blocked / 'root'}: not writable") for p in problems)
    assert any(p.startswith("torch ") and p.endswith("0.0.1 on the driver") for p in problems)
    assert problems[-1].startswith("Ray advertises 64 GPUs but torch sees ")


def test_the_refusal_is_a_header_then_one_line_per_node(tmp_path):
    error = NodePreflightError("preflight failed on 2 of 3 nodes; nothing was started:",
                               ["node a:1 (id x): data.root: gone", "node b:2 (id y): torch"],
                               tmp_path / "s.yaml")
    assert str(error).splitlines() == [
        f"{tmp_path / 's.yaml'}: preflight failed on 2 of 3 nodes; nothing was started:",
        "node a:1 (id x): data.root: gone", "node b:2 (id y): torch"]


def test_a_root_that_is_not_the_drivers_fails_on_the_node(tmp_path, dataset_files):
    """The same path naming another folder on the node (a node-local root): its own
    write-and-read-back passes, the driver's file is missing, and the line names the root."""
    from bkd_sweep.engine.nodes import SharedProbe

    dataset_files.write_cifar10(tmp_path / "c10")
    loaded = load_study_text(STUDY.format(root=tmp_path / "c10"), tmp_path / "s.yaml")
    driver = SharedProbe.place(str(tmp_path / "driver"))
    node = tmp_path / "node"  # what the same path holds on the node
    problems = node_problems(loaded, str(node), software_versions(), 0.0,
                             SharedProbe(str(node), driver.nonce), "n1")
    assert problems == [f"storage {node} is not shared with the driver: the driver's probe "
                        "file is not visible on this node (a node-local path? use a shared "
                        "filesystem or an object store)"]
    assert not list(node.glob(".bkd-shared-*"))  # no node file where the driver cannot look


def test_the_driver_reads_back_what_each_node_wrote(tmp_path, dataset_files):
    from bkd_sweep.engine.nodes import SharedProbe

    dataset_files.write_cifar10(tmp_path / "c10")
    loaded = load_study_text(STUDY.format(root=tmp_path / "c10"), tmp_path / "s.yaml")
    shared = SharedProbe.place(str(tmp_path / "root"))
    assert node_problems(loaded, shared.root, software_versions(), 0.0, shared, "n1") == []
    assert shared.driver_side("n1") is None
    assert shared.driver_side("n2").startswith(  # a node whose file the driver cannot see
        f"storage {tmp_path / 'root'} is not shared with the driver: the probe file this "
        "node wrote is not visible to the driver")
    shared.remove(["n1", "n2"])
    assert list((tmp_path / "root").iterdir()) == []


def test_a_teacher_cache_apart_from_the_root_must_be_shared_too(tmp_path, monkeypatch):
    """BKD_CACHE_DIR node-local: each node would train its own teacher. The root is shared,
    the cache folder the node sees is another one: the line names the cache."""
    from bkd_sweep.engine.nodes import SharedProbe, place_probe

    monkeypatch.setenv("BKD_CACHE_DIR", str(tmp_path / "cache"))
    driver = place_probe(load_study_text("name: c\n", tmp_path / "c.yaml"), str(tmp_path / "r"))
    assert driver.cache == str(tmp_path / "cache")
    node = SharedProbe(driver.root, driver.nonce, str(tmp_path / "node-cache"))
    assert node.node_side("n1") == (
        f"teacher cache (BKD_CACHE_DIR) {tmp_path / 'node-cache'} is not shared with the "
        "driver: the driver's probe file is not visible on this node (a node-local path? use "
        "a shared filesystem or an object store)")
    assert driver.node_side("n1") is None and driver.driver_side("n1") is None
    driver.remove(["n1"])
    assert list((tmp_path / "cache").iterdir()) == list((tmp_path / "r").iterdir()) == []


@pytest.mark.server
def test_an_object_store_root_goes_through_the_same_check(s3_env):
    """On S3 (a real moto server): the driver's and the node's files are objects; another
    prefix is another root."""
    from bkd_sweep.engine.nodes import SharedProbe
    from bkd_sweep.storage import Location

    s3_env("bkd-shared")
    shared = SharedProbe.place("s3://bkd-shared/root")
    assert shared.node_side("n1") is None and shared.driver_side("n1") is None
    elsewhere = SharedProbe("s3://bkd-shared/other", shared.nonce)
    assert elsewhere.node_side("n2").startswith(
        "storage s3://bkd-shared/other is not shared with the driver")
    shared.remove(["n1"])
    assert list(Location.of("s3://bkd-shared/root").list_files()) == []
