"""The report's per-epoch curves: mean and sample std per group and epoch, against pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bkd_sweep.report.plots import epoch_curve_stats


def test_epoch_curve_stats_match_a_grouped_mean_and_std():
    rng = np.random.default_rng(0)
    rows = [(f"t{t:04d}", e, float(rng.normal(50 + t, 3))) for t in range(7)
            for e in range(1, 6 if t != 3 else 3)]  # t0003 stopped after 2 epochs
    rows.append(("t0005", 6, float("nan")))  # a missing value is skipped
    epochs = pd.DataFrame(rows, columns=["trial_id", "epoch", "metric.top1"]).sample(
        frac=1.0, random_state=1)  # any row order
    group_of = {"t0000": 0, "t0001": 0, "t0002": 1, "t0003": 1, "t0004": 1, "t0005": 2}
    # t0006 is in no group (e.g. not completed)
    curves = epoch_curve_stats(epochs, group_of)
    assert sorted(curves) == [0, 1, 2]
    frame = epochs.assign(group=epochs["trial_id"].map(group_of)).dropna()
    expected = frame.groupby(["group", "epoch"])["metric.top1"].agg(["mean", "std"])
    for group, (x, mean, std, trials) in curves.items():
        want = expected.loc[group]
        assert x.tolist() == want.index.tolist()
        assert mean == pytest.approx(want["mean"].to_numpy())
        assert std == pytest.approx(want["std"].fillna(0.0).to_numpy())
        assert trials == frame.loc[frame["group"] == group, "trial_id"].nunique()
    assert curves[1][0].tolist() == [1, 2, 3, 4, 5] and curves[2][3] == 1
    assert curves[2][2].tolist() == [0.0] * 5  # one trial: no spread


def test_no_rows_of_any_group_give_no_curves():
    epochs = pd.DataFrame({"trial_id": ["t0000"], "epoch": [1], "metric.top1": [50.0]})
    assert epoch_curve_stats(epochs, {"t0001": 0}) == {}
    assert epoch_curve_stats(epochs.iloc[:0], {"t0000": 0}) == {}
