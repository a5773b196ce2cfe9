"""What one node's preflight finds (the function each node's Ray task runs), without Ray."""

from __future__ import annotations

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
