"""bench/run.py's results.json: the cheapest parts run on tiny sizes through run.py's own
functions, then the document's keys and shape, and RESULTS.md rendered from it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import figures  # noqa: E402
import run  # noqa: E402

REQUIRED = ("pruning_speedup", "pruning_top1_loss_pts", "seed_promotion_speedup",
            "ours_over_plain_sj", "bkd_overhead", "sweep_efficiency", "fixed_cost_per_trial_s",
            "record_cost_ratio_10k_vs_10", "report_10k_s", "plan_imagenet_s",
            "wall_vs_plain_tune")
VERDICTS = {"met", "missed", "reported", "error"}


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory) -> list:
    rows = []
    for key in ("engine", "store"):
        workdir = tmp_path_factory.mktemp(key)
        rows += run.BY_KEY[key].tiny(workdir)
    return rows


def test_every_issue_figure_has_a_target_and_a_part():
    assert figures.REQUIRED == REQUIRED
    owned = {k for p in run.PARTS for k in p.keys}
    assert set(REQUIRED) <= owned
    assert all(figures.TARGETS[k].text() for k in REQUIRED)


def test_tiny_parts_give_judged_named_figures(tiny_rows):
    named = {r.key: r for r in tiny_rows if r.key}
    assert {"engine_epoch_cost_ratio_10k_vs_10", "record_cost_ratio_10k_vs_10"} <= set(named)
    for row in named.values():
        assert isinstance(row.value, float) and row.value > 0
        assert row.met in ("yes", "no")
        assert row.target == figures.TARGETS[row.key].text()
        assert (row.met == "no") == bool(row.why) or row.met == "yes"


def test_results_json_keys_and_shape(tiny_rows, tmp_path):
    info = run.run_info(["engine", "store"], 12.0, "pytest")
    info["complete"] = True  # as a full run: every issue figure present, unmeasured = error
    path = tmp_path / "results.json"
    run.write_outputs(tiny_rows, info, path, markdown=False)
    doc = json.loads(path.read_text())
    assert set(REQUIRED) <= set(doc) and {"run", "rows"} <= set(doc)
    for key, entry in figures.figures_of(doc).items():
        assert set(entry) >= {"value", "target", "met", "figure", "measure", "detail", "reason"}
        assert entry["met"] in VERDICTS, key
        assert entry["value"] is None or isinstance(entry["value"], (int, float))
        if entry["met"] in ("missed", "error"):
            assert entry["reason"], key  # a missed target says why, measured
    assert doc["record_cost_ratio_10k_vs_10"]["met"] in ("met", "missed")
    assert doc["pruning_speedup"]["met"] == "error"  # not run here: says so, never absent
    assert doc["run"]["minutes"] == 0.2 and doc["run"]["machine"]["cores"]
    assert len(doc["rows"]) == len(tiny_rows)
    text = figures.render_markdown(doc, "## notes\n")
    for key in REQUIRED:
        assert f"`{key}`" in text


def test_only_takes_figure_keys_part_names_and_pieces():
    assert run.parts_for("pruning_speedup,plan,pruning_top1_loss_pts") == {
        "synthetic": ("pruning_speedup", "pruning_top1_loss_pts"), "plan": ()}
    assert run.parts_for("fixed") == {"synthetic": ("fixed_cost_per_trial_s", "sweep_start_s",
                                                    "ray_start_s")}
    assert run.parts_for("synthetic,pruning") == {"synthetic": ()}
    assert list(run.parts_for(None)) == run.DEFAULT and "pruning_real" not in run.DEFAULT
    with pytest.raises(SystemExit, match="not a part or figure"):
        run.parts_for("speed")


def test_sweep_efficiency_counts_per_slot_idle_and_the_teacher_as_busy():
    import pandas as pd
    from sweep import EfficiencyResult, SweepRun, _idle_reason

    # two slots, wall 0..30 s: slot A runs 2-10 and 10.5-20; slot B holds the teacher's
    # 6 s of training and starts 12-29 (its first trial starts after slot A's second)
    spans = [(2.0, 10.0), (10.5, 20.0), (12.0, 29.0)]
    trials = pd.DataFrame({"finished_at": [pd.Timestamp(end, unit="s") for _, end in spans],
                           "wall_seconds": [end - start for start, end in spans]})
    run = SweepRun("s", wall=30.0, engine_wall=30.0, concurrency=2, trials=trials,
                   results_root=Path("."), started_at=0.0, ended_at=30.0)
    start, end, between = run.idle_parts()
    assert (start, end, between) == pytest.approx((2.0 + 12.0, 10.0 + 1.0, 0.5))
    result = EfficiencyResult(run, teacher_files=1, distilling_trials=0,
                              teacher_train_seconds=6.0, teachers_first=True)
    assert result.busy == pytest.approx(8.0 + 9.5 + 17.0 + 6.0)
    assert result.efficiency_without_wait == pytest.approx(40.5 / 60.0)
    assert result.efficiency == pytest.approx(34.5 / 60.0)  # the trials alone
    reason = _idle_reason(result)
    assert reason.startswith("idle slot time 20 s of 60 s") and "8 s before" in reason
    # the teacher job's own seconds (data, build, training, evaluation) when sweep.json has
    # them: 7.4 s of it busy, like a trial's data loading and evaluation
    result = EfficiencyResult(run, teacher_files=1, distilling_trials=0,
                              teacher_train_seconds=6.0, teachers_first=True,
                              teacher_task_seconds=7.4)
    assert result.busy == pytest.approx(34.5 + 7.4)
    assert _idle_reason(result).startswith("idle slot time 18 s of 60 s")  # 18.1
    assert "7 s before" in _idle_reason(result)  # 14 - 7.4
    # the rows say what the driver's process had imported after the sweep
    from sweep import efficiency_rows

    assert "imported none of torch" in efficiency_rows(result)[0].detail
    run.driver_imports = ("torch",)
    assert efficiency_rows(result)[0].detail.endswith("the driver's process imported torch")
    # the CPUs' use before the first trial (2 s here), when it was sampled
    assert run.first_start() == pytest.approx(2.0) and "CPUs were" not in _idle_reason(result)
    run.cpu_before_first = 0.93
    assert ("the machine's CPUs were 93% busy in the 2 s before the first trial began"
            in _idle_reason(result))


def test_cpu_sampler_busy_share_between_two_stamps():
    from bench_common import CpuSampler

    cpu = CpuSampler()
    # (time, all jiffies, idle jiffies): 1-3 s: 400 jiffies, 100 idle -> 75% busy
    cpu.samples = [(0.0, 0, 0), (1.0, 200, 150), (2.0, 400, 200), (3.0, 600, 250),
                   (4.0, 800, 450)]
    assert cpu.busy_share(1.0, 3.0) == pytest.approx(0.75)
    assert cpu.busy_share(0.0, 4.0) == pytest.approx(1 - 450 / 800)
    assert cpu.busy_share(3.5, 3.9) is None  # fewer than two samples inside
    with CpuSampler(interval=0.01) as live:  # this machine's /proc/stat (Linux)
        deadline = time.time() + 0.2
        while time.time() < deadline:
            sum(range(10_000))  # keep one CPU busy
    share = live.busy_share(0.0, time.time())
    assert share is not None and 0.0 < share <= 1.0


def test_the_promotion_baseline_queues_a_configurations_seeds_at_once(tmp_path):
    """bench/pruning.py's baseline book (no seed promotion) still drives the engine's book:
    a sampled configuration's other seeds come right after its first."""
    import pruning

    from bkd_sweep.config import load_study

    copy = pruning.study_copy(tmp_path, "eager", {"search.seeds": [0, 1, 2],
                                                  "search.n_trials": 6})
    book = pruning._eager_seeds_book()(load_study(copy).study, tmp_path / "eager-book")
    book.open()
    first, *others = (book.next_trial() for _ in range(3))
    assert [s.seed for s in (first, *others)] == [0, 1, 2]
    assert all(s.params == first.params for s in others)
