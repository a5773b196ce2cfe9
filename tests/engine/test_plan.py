"""plan(): trial counts, resources and the device-hour estimate against hand computation."""

from __future__ import annotations

from pathlib import Path

import pytest

from bkd_sweep import space
from bkd_sweep.engine import plan
from bkd_sweep.engine.plan import (CPU_GFLOPS, GPU_TFLOPS, TRIAL_OVERHEAD_S, arch_gflops,
                                   trials_fitting)
from bkd_sweep.config import load_study, load_study_text

HERE = Path(__file__).parent


def test_imagenet_like_plan_counts_and_estimate(monkeypatch):
    monkeypatch.delenv("BKD_DATA", raising=False)  # plan works with unset variables
    p = plan(load_study(HERE / "studies/imagenet_like.yaml"))
    assert p.n_trials == 12 and len(p.trials) == 12 and p.device == "gpu"
    # sew_resnet18, distill none: val is 10% of train (128117 images), test (the official
    # 50000) once: 320 x (1153050 x 3 + 128117) x 3.6 x 4 + 50000 x 3.6 x 4
    n_val = round(1281167 * 0.1)
    n_train = 1281167 - n_val
    expected = 320 * (n_train * 3 + n_val) * 3.6 * 4 + 50000 * 3.6 * 4
    by_params = {tuple(t.params.values()): t for t in p.trials}
    first = by_params["sew_resnet18", "none"]
    assert first.gflop == pytest.approx(expected)
    assert first.device_hours == pytest.approx(
        (expected / (GPU_TFLOPS * 1000) + TRIAL_OVERHEAD_S) / 3600)
    logit = by_params["sew_resnet18", "logit"]  # + the teacher's forward on every train image
    assert logit.gflop == pytest.approx(expected + 320 * n_train * 3.6)
    # bkd / mixed add the restoration block G on resnet18's layer4 (512 x 7 x 7, as the
    # student's map: no align conv): two 3x3 512->512 convs, forward + backward per image
    g = 2 * 7 * 7 * (2 * 9 * 512 * 512) / 1e9
    for mode in ("bkd", "mixed"):
        assert by_params["sew_resnet18", mode].gflop == pytest.approx(
            logit.gflop + 320 * n_train * 3 * g)
    assert p.device_hours == pytest.approx(sum(t.device_hours for t in p.trials))
    assert p.wall_hours == pytest.approx(p.device_hours / (2 * 4))  # 2 trials x 4 GPUs
    text = p.render()
    assert "12 trials" in text and "gpu-hours" in text and "20 TFLOP/s" in text
    assert "t0011 seed=0 linked.backbone=sew_resnet18 distill.mode=logit" in text
    assert "method:" in text and "per worker" in text


def test_a_grid_runs_teacherless_trials_first_then_the_longest_first():
    """Grid run order (the plan lists it; the sweep enqueues it): the trials that need no
    teacher run while it is prepared, and within each group the costliest go first, so the
    sweep does not end on one long trial; trial ids follow that order."""
    p = plan(load_study(HERE / "studies/imagenet_like.yaml"))
    modes = [t.params["distill.mode"] for t in p.trials]
    assert modes[:3] == ["none"] * 3 and "none" not in modes[3:]
    for group in (p.trials[:3], p.trials[3:]):
        costs = [t.gflop for t in group]
        assert costs == sorted(costs, reverse=True)
    assert [t.params["linked.backbone"] for t in p.trials[:3]] == [
        "spikingformer_8_384", "sew_resnet34", "sew_resnet18"]
    assert [t.trial_id for t in p.trials] == [f"t{i:04d}" for i in range(12)]
    # BKD's restoration block makes bkd / mixed the costlier; equal costs keep grid order
    assert modes[3:6] == ["bkd", "mixed", "logit"]
    # a pruned grid keeps its written order: pruning verdicts depend on what finished first
    pruned = load_study(HERE / "studies/imagenet_like.yaml",
                        overrides={"search.pruner": {"name": "median"}})
    assert [t.params for t in plan(pruned).trials] == [
        params for params, _ in space.grid_trials(pruned.study.search)]


def test_small_digits_plan_by_hand():
    loaded = load_study_text("""
name: tiny
data: {dataset: digits, limit_train: 200}
student: {arch: spiking_cnn_small, timesteps: 4}
train: {epochs: 2}
distill: {mode: none}
""")
    p = plan(loaded)
    f = 0.011 * (8 / 32) ** 2
    n_test = round(1797 * 0.2)  # digits has no test split: 20% first, then val from the rest
    n_val = round((1797 - n_test) * 0.1)
    expected = 2 * (200 * 3 * f * 4 + n_val * f * 4) + n_test * f * 4
    assert p.n_trials == 1 and p.device == "cpu"
    assert p.trials[0].gflop == pytest.approx(expected)
    assert p.device_hours == pytest.approx((expected / CPU_GFLOPS + TRIAL_OVERHEAD_S) / 3600)


def test_bkd_restoration_block_is_costed_on_the_map_the_loss_compares():
    """A vector teacher (pre_logits): G runs at the student's map, after a 1x1 align conv
    from the student's width to the teacher's; a map teacher of another size: G runs at the
    teacher's map. Once per image (the time-averaged feature), forward + backward."""
    base = """
name: g
data: {dataset: cifar10, root: /nowhere, limit_train: 100, limit_val: 10, limit_test: 10}
student: {arch: spikformer_2_256, timesteps: 4}
teacher: {arch: vit_small_patch16_224, checkpoint: /nowhere/t.pth, input_size: 224,
          feature: pre_logits}
train: {epochs: 3}
"""
    costs = {mode: plan(load_study_text(base + f"distill: {{mode: {mode}}}\n")).trials[0].gflop
             for mode in ("logit", "bkd", "mixed")}
    # spikformer at 32px keeps 8x8 tokens of width 256; vit_small's pre-logits are 384 wide
    g = 2 * 8 * 8 * (256 * 384 + 2 * 9 * 384 * 384) / 1e9
    assert costs["bkd"] == pytest.approx(costs["logit"] + 3 * 100 * 3 * g)
    assert costs["mixed"] == pytest.approx(costs["bkd"])

    layer3 = base.replace("vit_small_patch16_224", "resnet18_cifar").replace(
        "input_size: 224,\n          feature: pre_logits", "feature: layer3")
    logit, bkd = (plan(load_study_text(layer3 + f"distill: {{mode: {mode}}}\n")).trials[0]
                  for mode in ("logit", "bkd"))
    g = 2 * 8 * 8 * (256 * 256 * 0 + 2 * 9 * 256 * 256) / 1e9  # layer3: 256 x 8 x 8, no align
    assert bkd.gflop == pytest.approx(logit.gflop + 3 * 100 * 3 * g)

    unknown = plan(load_study_text(base.replace("feature: pre_logits", "feature: blocks.3")
                                   + "distill: {mode: bkd}\n"))
    assert any("restoration block not costed" in n and "vit_small_patch16_224" in n
               for n in unknown.notes)


def test_large_grid_is_counted_not_listed_and_sampled_spaces_are_averaged():
    big = plan(load_study_text("""
name: big
distill: {mode: none}
search:
  sampler: grid
  seeds: [0, 1, 2]
  params:
    student.timesteps: [1, 2, 4, 8, 16]
    train.epochs: [1, 2, 3]
"""))
    assert big.n_trials == 45
    assert "not listed" in big.render() and "t0044" not in big.render()
    sampled = plan(load_study_text("""
name: sampled
distill: {mode: none}
search:
  sampler: tpe
  n_trials: 10
  params:
    student.timesteps: [2, 4]
    distill.blur_ratio: {low: 0.1, high: 0.5}
"""))
    costs = [t.device_hours for t in sampled.trials]
    assert len(costs) == 2 and sampled.device_hours == pytest.approx(10 * sum(costs) / 2)
    assert "sampled at run time" in sampled.render()


def test_unknown_architecture_gets_default_with_note_and_fit_counts():
    cost, note = arch_gflops("my_net", 64)
    assert cost == pytest.approx(1.0 * (64 / 32) ** 2) and "not in the cost table" in note
    transformer, none = arch_gflops("spikingformer_4_384", 32)
    assert none is None and 0.5 < transformer < 5  # ~1.3 GFLOPs at 8x8 tokens
    from bkd_sweep.config import TrialResources
    assert trials_fitting(TrialResources(cpu=1), 2, 0) == 2
    assert trials_fitting(TrialResources(cpu=2, gpu=1, workers=2), 16, 2) == 1
    assert trials_fitting(TrialResources(cpu=1, gpu=1), 8, 0) == 0


@pytest.mark.slow  # a fresh interpreter plans the ImageNet study
def test_plan_for_a_cluster_fills_its_gpus():
    """`plan --cluster 8x8`: 4-worker trials on 8-GPU nodes, two a node, 16 at once."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "bkd_sweep.cli", "plan",
                           "studies/imagenet_ablation.yaml", "--cluster", "8x8"], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("max concurrent trials: as many as the cluster fits; cluster 8 nodes x 8 gpus "
            "(64 gpus) fits 16 at once") in done.stdout
    estimate = next(l for l in done.stdout.splitlines() if l.startswith("estimate:"))
    hours = float(estimate.split()[1])
    wall = float(estimate.split("(~")[1].split()[0])
    assert "at 16 concurrent trial(s)" in estimate
    assert wall == pytest.approx(hours / 64, rel=1e-2)  # 16 trials x 4 GPUs busy
    bad = subprocess.run([sys.executable, "-m", "bkd_sweep.cli", "plan",
                          "studies/imagenet_ablation.yaml", "--cluster", "8y8"], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: --cluster '8y8': expected NODESxGPUS or NODESxGPUSxCPUS with positive whole "
        "numbers, e.g. 8x8"]
