"""Whether a trial fits the cluster, node by node (a trial's worker never spans two nodes),
with plain resource dicts as ray.nodes() gives them: no Ray."""

from __future__ import annotations

import pytest

from bkd_sweep.config import StudyError, TrialResources, load_study_text
from bkd_sweep.engine.ray_setup import check_a_node_fits, concurrency, fits_on_nodes

TWO_4_CPU = [{"CPU": 4.0}, {"CPU": 4.0}]
GPU_NODES = [{"CPU": 64.0, "GPU": 8.0}, {"CPU": 16.0, "GPU": 2.0}]


def study(per_trial: str):
    return load_study_text(f"""
name: fit
data: {{dataset: digits}}
distill: {{mode: none}}
search: {{sampler: grid, params: {{student.timesteps: [1]}}}}
resources: {{per_trial: {per_trial}}}
""").study


def test_each_node_fits_its_own_share():
    assert fits_on_nodes(TrialResources(cpu=3), TWO_4_CPU) == 2  # totals would say 2 too
    assert fits_on_nodes(TrialResources(cpu=6), TWO_4_CPU) == 0  # totals would say 1
    assert fits_on_nodes(TrialResources(cpu=8, gpu=1), GPU_NODES) == 8 + 2
    # a multi-worker trial's workers may sit on different nodes
    assert fits_on_nodes(TrialResources(cpu=4, workers=2), TWO_4_CPU) == 1
    assert fits_on_nodes(TrialResources(cpu=8, gpu=1, workers=4), GPU_NODES) == 2


def test_a_trial_that_fits_no_node_is_refused_naming_the_largest():
    with pytest.raises(StudyError) as refused:
        check_a_node_fits(study("{cpu: 6}"), [{"CPU": 2.0}, *TWO_4_CPU], file="s.yaml")
    assert refused.value.one_line() == (
        "s.yaml: resources.per_trial: no node of the cluster fits one trial: it needs 6 CPUs "
        "and 0 GPUs on one node; the largest of 3 alive node(s) has 4 CPUs and 0 GPUs")
    nodes = [{"CPU": 64.0}, {"CPU": 16.0, "GPU": 2.0}, {"CPU": 2.0, "GPU": 1.0}]
    with pytest.raises(StudyError, match="has 16 CPUs and 2 GPUs"):  # a GPU trial: most GPUs
        check_a_node_fits(study("{cpu: 20, gpu: 1}"), nodes)
    check_a_node_fits(study("{cpu: 4}"), TWO_4_CPU)  # fits: no error


def test_concurrency_counts_per_node_when_given_the_nodes():
    s = study("{cpu: 3}")
    totals = {"CPU": 8.0}
    assert concurrency(s, totals, 10) == 2
    assert concurrency(s, totals, 10, nodes=[{"CPU": 4.0}, {"CPU": 2.0}, {"CPU": 2.0}]) == 1


def test_the_driver_waits_for_a_node_that_fits_then_refuses(monkeypatch, capsys):
    """`ray up` returns before its workers start (an autoscaler adds them later): the driver
    waits up to BKD_NODE_WAIT_S for a node that fits one trial, then goes on or refuses."""
    from bkd_sweep.config import load_study_text
    from bkd_sweep.engine import nodes

    loaded = load_study_text("name: w\ndistill: {mode: none}\n"
                             "resources: {per_trial: {cpu: 2}}\n")
    head = {"NodeID": "h", "Alive": True, "Resources": {"CPU": 1.0}}
    worker = {"NodeID": "w", "Alive": True, "Resources": {"CPU": 4.0}}
    seen = iter([[head], [head], [head, worker]])
    monkeypatch.setattr(nodes, "alive_nodes", lambda: next(seen))
    monkeypatch.setenv("BKD_NODE_WAIT_S", "30")
    assert nodes.nodes_that_fit_a_trial(loaded, poll_s=0.01) == [head, worker]
    assert "waiting up to 30 s for a node that fits one trial" in capsys.readouterr().err
    monkeypatch.setattr(nodes, "alive_nodes", lambda: [head])
    monkeypatch.setenv("BKD_NODE_WAIT_S", "0")
    assert nodes.nodes_that_fit_a_trial(loaded, poll_s=0.01) == [head]  # check_a_node_fits
    assert capsys.readouterr().err == ""  # no wait asked, none said
