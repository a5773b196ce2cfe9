"""pareto_front on hand-made point sets (ties, duplicates, dominated, missing); vs brute force;
the report's front is chosen on val (the selection metric), never on the test it shows."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkd_sweep.config import ParetoSpec, Study
from bkd_sweep.report import ParetoFront, build_report, pareto_front
from bkd_sweep.report.data import load_results_dir
from bkd_sweep.report.pareto import configuration_front, front_note, pareto_points
from tests.report.report_fixtures import write_results

# (energy, top1): lower energy and higher top1 are better
POINTS = [
    (1.0, 50.0),   # 0 front
    (2.0, 60.0),   # 1 front
    (2.0, 55.0),   # 2 dominated by 1 (same x, lower y)
    (3.0, 60.0),   # 3 dominated by 1 (same y, higher x)
    (4.0, 70.0),   # 4 front
    (4.0, 70.0),   # 5 identical to 4: neither dominates the other
    (5.0, 65.0),   # 6 dominated by 4
    (0.5, 40.0),   # 7 front (cheapest)
    (math.nan, 80.0),  # 8 missing x: never on the front
    (6.0, 70.0),   # 9 dominated by 4 (tie on y)
]


def frame(points) -> pd.DataFrame:
    return pd.DataFrame(points, columns=["energy", "top1"], index=[f"p{i}" for i in
                                                                    range(len(points))])


def test_hand_made_front() -> None:
    front = pareto_front(frame(POINTS), "energy", "top1", x_mode="min", y_mode="max")
    assert isinstance(front, ParetoFront)
    assert front.front == (7, 0, 1, 4, 5)  # positions, by x ascending
    assert front.on_front() == [True, True, False, False, True, True, False, True, False,
                                False]
    assert list(front.front_points()["energy"]) == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert list(front.points.index) == list(range(len(POINTS)))  # reset, positions == index


def test_modes_are_symmetric() -> None:
    flipped = [(-x, -y) for x, y in POINTS]
    front = pareto_front(frame(flipped), "energy", "top1", x_mode="max", y_mode="min")
    assert sorted(front.front) == [0, 1, 4, 5, 7]
    both_max = pareto_front(frame([(1, 1), (2, 2), (2, 1), (0, 3)]), "energy", "top1",
                            x_mode="max", y_mode="max")
    assert set(both_max.front) == {1, 3}


def test_edge_cases() -> None:
    same = pareto_front(frame([(1.0, 1.0)] * 3), "energy", "top1")
    assert same.front == (0, 1, 2)
    empty = pareto_front(frame([]), "energy", "top1")
    assert empty.front == () and empty.on_front() == []
    assert pareto_front(frame([(math.nan, math.nan)]), "energy", "top1").front == ()
    with pytest.raises(ValueError, match="no column"):
        pareto_front(frame(POINTS), "energy_mj", "top1")
    with pytest.raises(ValueError, match="mode"):
        pareto_front(frame(POINTS), "energy", "top1", x_mode="lowest")  # type: ignore[arg-type]
    nullable = pd.DataFrame({"energy": pd.array([1, None, 2], dtype="Int64"),
                             "top1": pd.array([1.0, 5.0, 2.0], dtype="Float64")})
    assert pareto_front(nullable, "energy", "top1").front == (0, 2)


def brute_force(points, x_mode: str, y_mode: str) -> set[int]:
    def better_eq(a, b, mode):
        return a <= b if mode == "min" else a >= b

    out = set()
    for i, (xi, yi) in enumerate(points):
        if math.isnan(xi) or math.isnan(yi):
            continue
        dominated = any(
            better_eq(xj, xi, x_mode) and better_eq(yj, yi, y_mode) and (xj != xi or yj != yi)
            for j, (xj, yj) in enumerate(points)
            if j != i and not (math.isnan(xj) or math.isnan(yj)))
        if not dominated:
            out.add(i)
    return out


small = st.one_of(st.integers(0, 5).map(float), st.just(math.nan))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(small, small), max_size=25),
       st.sampled_from(["min", "max"]), st.sampled_from(["min", "max"]))
def test_matches_brute_force(points, x_mode, y_mode) -> None:
    front = pareto_front(frame(points), "energy", "top1", x_mode=x_mode, y_mode=y_mode)
    assert set(front.front) == brute_force(points, x_mode, y_mode)
    xs = [points[i][0] for i in front.front]
    assert xs == sorted(xs)


def test_points_are_seed_means_per_configuration(fixture_results) -> None:
    data = load_results_dir(fixture_results)
    spec = ParetoSpec()
    points, paths = pareto_points(data, spec)
    assert paths == ["distill.mode", "student.arch", "student.timesteps"]
    assert len(points) == 8  # 4 modes x 2 students, T fixed
    row = points[(points["param.distill.mode"] == "mixed")
                 & (points["param.student.arch"] == "snn_a")].iloc[0]
    assert row["metric.energy_mj"] == pytest.approx(0.05)
    assert row["metric.test_top1"] == pytest.approx(230 / 3)
    assert row["n"] == 3
    bkd_a = points[(points["param.distill.mode"] == "bkd")
                   & (points["param.student.arch"] == "snn_a")].iloc[0]
    assert bkd_a["n"] == 2 and bkd_a["metric.test_top1"] == pytest.approx(74.5)  # pruned left out
    front = pareto_front(points, "metric.energy_mj", "metric.test_top1")
    # mixed/snn_a (0.05 mJ, 76.67 %) dominates every other configuration
    assert [tuple(points.iloc[i][["param.distill.mode", "param.student.arch"]])
            for i in front.front] == [("mixed", "snn_a")]
    assert np.isfinite(points["metric.energy_mj"].to_numpy(dtype=float)).all()


# mode -> (energy, val, test) per seed. On val, none (cheapest) and mixed (best val) are the
# front; on test, logit (78 at 0.06 mJ) would be and mixed (74, dearer than none) would not.
VAL_VS_TEST = {"none": (0.05, 80.0, 75.0), "mixed": (0.08, 85.0, 74.0),
               "logit": (0.06, 79.0, 78.0)}


def _val_vs_test_results(tmp_path, with_val: bool = True):
    study = Study.model_validate({
        "name": "front", "search": {"seeds": [0, 1, 2],
                                    "params": {"distill.mode": ["none", "logit", "mixed"]}},
        "report": {"tables": [{"name": "ablation", "rows": "distill.mode"}]}})
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    trials = [{"params": {"distill.mode": mode}, "seed": seed, "status": "completed",
               "finished_at": start + timedelta(minutes=3 * i + seed),
               "metrics": {"energy_mj": energy, "val_top1": val + seed if with_val else None,
                           "test_top1": test + seed, "selected_epoch": 3}}
              for i, (mode, (energy, val, test)) in enumerate(VAL_VS_TEST.items())
              for seed in range(3)]
    return write_results(tmp_path / "results" / "front", study, trials, [])


def _front_modes(front: ParetoFront) -> list[str]:
    return list(front.front_points()["param.distill.mode"])


def test_the_front_is_chosen_on_val_and_shows_test(tmp_path) -> None:
    out = build_report(_val_vs_test_results(tmp_path), tmp_path / "report")
    front = out.pareto
    assert _front_modes(front) == ["none", "mixed"]  # on test it would be none, logit
    assert front.chosen_on == ("metric.energy_mj", "metric.val_top1")
    # drawn and tabled at test top-1 (seed means: 75 + 1, 74 + 1), never at val
    assert (front.x, front.y) == ("metric.energy_mj", "metric.test_top1")
    assert list(front.front_points()["metric.test_top1"]) == [76.0, 75.0]
    table = out.tables["pareto"]
    assert table.cell("mixed", "Pareto").text == "yes" and table.cell("logit", "Pareto").text == ""
    assert table.cell("mixed", "top1 (mean)").text == "75.00 ± 1.00 (n=3)"
    said = "chosen on the mean val_top1 (max) and energy_mj (min) over seeds, so val selects"
    assert any(said in note for note in table.notes)
    assert said in out.index_html.read_text(encoding="utf-8")  # the figure's caption


def test_without_val_the_front_falls_back_to_test_and_says_so(tmp_path) -> None:
    data = load_results_dir(_val_vs_test_results(tmp_path, with_val=False))
    assert data.selection() is None
    front, _ = configuration_front(data, ParetoSpec(), "min", "max")
    assert _front_modes(front) == ["none", "logit"] and front.chosen_on is None
    assert "no val metric to select on" in front_note(front)
