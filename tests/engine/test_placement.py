"""Where a sweep's work may run (bkd_sweep.engine.placement): on a cluster only on the nodes
that passed preflight, by Ray's node-id label. The cluster test (tests/cluster,
test_a_node_that_joins_later_counts_once_it_passed) shows it on real nodes, one failing."""

from __future__ import annotations

import time

import pytest

from bkd_sweep.config import load_study_text
from bkd_sweep.engine.book import SweepBook
from bkd_sweep.engine.placement import NODE_ID_LABEL, TrialResources, node_selector
from bkd_sweep.engine.searcher import OptunaSearcher

STUDY = """
name: placed
data: {dataset: digits}
distill: {mode: none}
search: {sampler: grid, params: {student.timesteps: [1, 2]}}
"""


def test_the_selector_names_each_allowed_node_once_in_order():
    assert node_selector(["b", "a", "b"]) == {NODE_ID_LABEL: "in(a,b)"}
    assert node_selector([]) is None and node_selector(None) is None


def test_a_trial_without_nodes_asks_what_a_resource_dict_asks():
    """Equal requests: Tune reuses a finished trial's actor only for an equal one."""
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

    resources = {"cpu": 2, "gpu": 0.5}
    assert TrialResources(resources)({"trial_id": "t0000"}) == \
        resource_dict_to_pg_factory(resources)
    placed = TrialResources(resources)({"nodes": ["n2", "n1"]})
    assert placed.bundles == [{"CPU": 2.0, "GPU": 0.5}]
    assert placed._bound.kwargs["bundle_label_selector"] == [{NODE_ID_LABEL: "in(n1,n2)"}]
    assert placed != resource_dict_to_pg_factory(resources)


def test_the_searcher_hands_each_trial_the_nodes_allowed_when_asked(tmp_path):
    allowed = {"n2", "n1"}
    book = SweepBook(load_study_text(STUDY).study, tmp_path / "placed")
    book.open()
    searcher = OptunaSearcher(book, nodes=lambda: allowed)
    first = searcher.suggest("tune-0")
    allowed.add("n3")  # a node passed its check meanwhile
    second = searcher.suggest("tune-1")
    assert (first["nodes"], second["nodes"]) == (["n1", "n2"], ["n1", "n2", "n3"])

    alone = SweepBook(load_study_text(STUDY).study, tmp_path / "alone")
    alone.open()
    assert "nodes" not in OptunaSearcher(alone).suggest("tune-0")  # one machine: anywhere


@pytest.mark.ray
def test_work_is_placed_only_on_a_listed_node(ray_session):
    import ray
    from ray.util import remove_placement_group

    here = ray.get_runtime_context().get_node_id()
    elsewhere = TrialResources({"cpu": 1})({"nodes": ["0" * 56]}).to_placement_group()
    placed = TrialResources({"cpu": 1})({"nodes": [here]}).to_placement_group()
    try:
        assert placed.wait(20)
        assert not elsewhere.wait(1)  # this node has a free CPU, but is not listed
    finally:
        remove_placement_group(elsewhere)
        remove_placement_group(placed)

    @ray.remote(num_cpus=0)
    def node_of_task() -> str:
        return ray.get_runtime_context().get_node_id()

    # the option of a teacher job run as a task (worker.prepare_teacher, workers > 1)
    on_here = node_of_task.options(label_selector=node_selector([here])).remote()
    assert ray.get(on_here, timeout=60) == here


@pytest.mark.ray
def test_a_joined_node_whose_check_never_answers_is_failed_not_waited_on(
        ray_session, tmp_path, monkeypatch, capsys):
    import ray

    import bkd_sweep.engine.nodes as nodes

    @ray.remote(num_cpus=0)
    def silent_check() -> list[str]:
        time.sleep(60)
        return []

    joined = {"NodeID": "f" * 56, "NodeManagerAddress": "10.0.0.9", "NodeManagerPort": 7,
              "Alive": True, "Resources": {"CPU": 4.0}}
    monkeypatch.setattr(nodes, "alive_nodes", lambda: [joined])
    monkeypatch.setattr(nodes, "start_checks",
                        lambda loaded, uri, listed, shared: {silent_check.remote(): listed[0]})
    monkeypatch.setattr(nodes, "NODE_CHECK_TIMEOUT_S", 0.5)
    loaded = load_study_text(STUDY, tmp_path / "s.yaml")
    gate = nodes.NodeGate(loaded, str(tmp_path / "root"), passed=[])
    assert gate.nodes() == [] and gate.failed == {}  # its check started, not answered yet
    time.sleep(0.6)
    assert gate.nodes() == [] and gate.allowed() == []
    assert list(gate.failed.values()) == [
        f"node 10.0.0.9:7 (id {'f' * 12}): its preflight check did not answer in 0 s"]
    assert gate.nodes() == []  # not checked again
    warnings = [line for line in capsys.readouterr().err.splitlines() if "failed" in line]
    assert len(warnings) == 1 and "nothing of this sweep runs there" in warnings[0]


@pytest.mark.ray
def test_a_joined_node_that_failed_is_checked_again_and_counts_once_it_passes(
        ray_session, tmp_path, monkeypatch, capsys):
    """A mount or data copy not ready when the node joined: it fails, is rechecked after
    NODE_RECHECK_S, the same failure is said once, and it counts once a recheck passes."""
    import ray

    import bkd_sweep.engine.nodes as nodes

    checks = tmp_path / "checks"  # how many checks the node ran
    checks.write_text("0")
    answers = [["data root /mnt/data does not exist"]] * 2 + [[]]

    @ray.remote(num_cpus=0)
    def check(path: str) -> list[str]:
        ran = int(open(path).read())
        open(path, "w").write(str(ran + 1))
        return answers[ran]

    class NoProbe:  # the storage probe is the cluster test's part
        def driver_side(self, node_id):
            return None

        def remove(self, node_ids):
            pass

    joined = {"NodeID": "e" * 56, "NodeManagerAddress": "10.0.0.8", "NodeManagerPort": 7,
              "Alive": True, "Resources": {"CPU": 4.0}}
    monkeypatch.setattr(nodes, "alive_nodes", lambda: [joined])
    monkeypatch.setattr(nodes, "place_probe", lambda loaded, uri: NoProbe())
    monkeypatch.setattr(nodes, "start_checks",
                        lambda loaded, uri, listed, shared: {check.remote(str(checks)):
                                                             listed[0]})
    monkeypatch.setattr(nodes, "NODE_RECHECK_S", 1.0)
    gate = nodes.NodeGate(load_study_text(STUDY, tmp_path / "s.yaml"), str(tmp_path), [])

    def after_check(n: int) -> list[dict[str, float]]:
        """gate.nodes() once the node's n-th check has answered."""
        deadline = time.monotonic() + 30
        while int(checks.read_text()) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # its result reaches the driver
        return gate.nodes()

    assert gate.nodes() == []  # the first check started
    assert after_check(1) == [] and gate.allowed(refresh_s=0) == []
    assert list(gate.failed.values()) == [
        f"node 10.0.0.8:7 (id {'e' * 12}): data root /mnt/data does not exist"]
    assert gate.nodes() == [] and checks.read_text() == "1"  # not yet due again
    time.sleep(1.1)
    assert gate.nodes() == []  # due: the second check started; it fails the same way
    assert after_check(2) == [] and gate.failed
    time.sleep(1.1)
    gate.nodes()  # the third check, which passes
    assert after_check(3) == [{"CPU": 4.0}] and gate.allowed() == ["e" * 56]
    assert gate.failed == {}
    err = capsys.readouterr().err.splitlines()
    assert len([line for line in err if "failed preflight" in line]) == 1
    assert [line for line in err if "passed preflight on a recheck" in line] == [
        "note: node 10.0.0.8:7 passed preflight on a recheck; this sweep uses it from now on"]
