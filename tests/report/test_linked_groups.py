"""A linked group (``linked.<group>``: a bundle of overrides chosen by label) is part of a
configuration: the report never averages two bundles as if they were seeds."""

from __future__ import annotations

import statistics

from bkd_sweep.config import Study, TableSpec
from bkd_sweep.fileio import write_json_atomic
from bkd_sweep.report.data import load_results_dir
from bkd_sweep.report.tables import ablation_table, energy_table
from bkd_sweep.tracking import ResultStore
from tests.tracking.conftest import make_record


def test_report_tables_keep_linked_choices_apart(tmp_path):
    study = Study.model_validate({"name": "lk", "train": {"epochs": 3}, "search": {
        "params": {"distill.mode": ["none", "bkd"]},
        # declared big first: tables follow the declared label order
        "linked": {"backbone": {"big": {"student.timesteps": 4},
                                "small": {"student.timesteps": 2}}},
        "seeds": [0, 1]}})
    store = ResultStore(tmp_path / "lk")
    top1: dict[tuple[str, str], list[float]] = {}
    n = 0
    for label, offset in (("small", 0.0), ("big", 20.0)):
        for mode in ("none", "bkd"):
            for seed in (0, 1):
                rec = make_record(study, n, {"linked.backbone": label, "distill.mode": mode},
                                  seed, offset=offset)
                store.upsert(rec)
                top1.setdefault((label, mode), []).append(rec.result.test_top1)
                n += 1
    write_json_atomic(study.model_dump(mode="json"), tmp_path / "lk" / "study.json")
    data = load_results_dir(tmp_path / "lk")
    assert data.config_keys == ["linked.backbone", "distill.mode"]

    energy = energy_table(data, seeds_expected=2)
    got = {(r[0].text, r[1].text): r[2].text for r in energy.rows}
    assert list(got) == [("big", "none"), ("big", "bkd"), ("small", "none"), ("small", "bkd")]
    for key, values in top1.items():
        mean, std = statistics.mean(values), statistics.stdev(values)
        assert got[key] == f"{mean:.2f} ± {std:.2f} (n=2)"

    # per mode, the configuration val selects (big), over its own two seeds only
    table = ablation_table(data, TableSpec(name="a", rows="distill.mode", metric="top1"), 2)
    cells = {r[0].text: r[1].text for r in table.rows}
    for mode in ("none", "bkd"):
        values = top1[("big", mode)]
        assert cells[mode] == (f"{statistics.mean(values):.2f} ± "
                               f"{statistics.stdev(values):.2f} (n=2)")
