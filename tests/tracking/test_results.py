"""bkd_sweep.results: load() by name or directory, summary_table() values, light imports."""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bkd_sweep.results import load, rebuild, summary_table
from bkd_sweep.tracking import ResultStore
from bkd_sweep.fileio import write_json_atomic


def _stored(study, results_dir, records):
    store = ResultStore(results_dir)
    for rec in records:
        store.upsert(rec)
    write_json_atomic(study.model_dump(mode="json"), results_dir / "study.json")
    return store


def test_load_round_trip_by_name_and_by_directory(study, results_dir, grid_records,
                                                  monkeypatch):
    records = grid_records(study)
    _stored(study, results_dir, records)
    by_dir = load(results_dir)
    by_name = load(study.name, results_root=results_dir.parent)
    monkeypatch.chdir(results_dir.parent.parent)  # default root: ./results
    by_default = load(study.name)
    for res in (by_dir, by_name, by_default):
        assert res.directory == results_dir.resolve()
        assert list(res.trials["trial_id"]) == [r.trial_id for r in records]
        assert len(res.epochs) == 3 * len(records)
        assert res.study == json.loads((results_dir / "study.json").read_text())
        assert res.seeds == [0, 1]
    top1 = by_dir.trials.set_index("trial_id")["metric.test_top1"].to_dict()
    assert top1 == {r.trial_id: pytest.approx(r.result.test_top1) for r in records}
    assert by_dir.config_columns() == ["param.distill.mode", "param.student.timesteps"]


def test_load_missing_names_what_exists(tmp_path: Path, study, make_record):
    root = tmp_path / "results"
    ResultStore(root / "other").upsert(make_record(study, 0, {"distill.mode": "none"}, 0))
    with pytest.raises(FileNotFoundError, match=r"no results for 'nope'.*studies there: other"):
        load("nope", results_root=root)
    with pytest.raises(FileNotFoundError, match="none stored there"):
        load("nope", results_root=tmp_path / "empty")


def test_summary_table_aggregates_seeds_per_configuration(study, results_dir, make_record):
    bkd4 = {"distill.mode": "bkd", "student.timesteps": 4}
    none2 = {"distill.mode": "none", "student.timesteps": 2}
    records = [make_record(study, 0, bkd4, 0), make_record(study, 1, bkd4, 1),
               make_record(study, 2, none2, 0),
               make_record(study, 3, none2, 1, status="pruned", epochs=1, pruned_epoch=1),
               make_record(study, 4, {"distill.mode": "none", "student.timesteps": 4}, 0,
                           status="failed", epochs=0, energy=False)]
    _stored(study, results_dir, records)
    text = summary_table(load(results_dir))
    lines = text.splitlines()
    assert lines[0].startswith("demo: 5 trials (3 completed, 1 pruned, 1 failed)")
    header = lines[1].split()
    assert header[:4] == ["distill.mode", "student.timesteps", "n", "completed"]
    rows = {tuple(line.split()[:2]): line for line in lines[3:-3]}
    bkd_top1 = [records[0].result.test_top1, records[1].result.test_top1]
    mean, std = statistics.mean(bkd_top1), statistics.stdev(bkd_top1)
    assert f"{mean:.2f} ± {std:.2f}" in rows[("bkd", "4")]
    assert rows[("bkd", "4")].split()[2:6] == ["2", "2", "0", "0"]
    energy = statistics.mean([r.result.energy_mj for r in records[:2]])
    assert rows[("bkd", "4")].split()[-1] == f"{energy:.4g}"
    # one completed seed of two: marked; the failed-only cell has no top-1
    assert rows[("none", "2")].split()[2:6] == ["2", "1*", "1", "0"]
    assert rows[("none", "4")].split()[2:6] == ["1", "0*", "0", "1"]
    assert rows[("none", "4")].split()[-2:] == ["-", "-"]
    total = lines[-2].split()
    assert total[:5] == ["total", "5", "3", "1", "1"]
    # best: the test mean of the configuration with the best mean val top-1 (val selects),
    # not the luckiest single test value
    configs = {"bkd4": records[:2], "none2": records[2:3]}
    chosen = max(configs.values(), key=lambda rs: statistics.mean(r.result.val_top1 for r in rs))
    assert total[5:7] == ["best", f"{statistics.mean(r.result.test_top1 for r in chosen):.2f}"]
    assert lines[-1].startswith("* fewer completed seeds than the study's 2")


def test_summary_table_without_study_json_groups_varying_params(study, results_dir,
                                                                make_record):
    store = ResultStore(results_dir)
    for n, mode in enumerate(("none", "bkd", "bkd")):
        store.upsert(make_record(study, n, {"distill.mode": mode, "student.timesteps": 4}, n))
    res = load(results_dir)
    assert res.study is None
    assert res.config_columns() == ["param.distill.mode"]  # timesteps and seed do not count
    text = summary_table(res)
    assert "\nbkd " in text and "\nnone " in text and "*" not in text


def test_summary_table_of_an_empty_study(tmp_path: Path):
    (tmp_path / "fresh").mkdir()
    assert summary_table(load(tmp_path / "fresh")).endswith("no finished trials yet")


def test_reading_results_imports_no_heavy_stack():
    code = ("import bkd_sweep.results, sys; "
            "assert 'ray' not in sys.modules and 'mlflow' not in sys.modules "
            "and 'torch' not in sys.modules, sorted(m for m in ('ray', 'mlflow', 'torch') "
            "if m in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_summary_best_is_the_val_selected_configuration_not_the_best_test(study, results_dir,
                                                                          make_record):
    """bkd4 wins on val (91 vs 90) and loses on test (80 vs 85): 'best' shows bkd4's 80."""
    def record(number, params, seed, val, test):
        rec = make_record(study, number, params, seed)
        return dataclasses.replace(rec, result=rec.result.model_copy(
            update={"val_top1": val, "test_top1": test}))

    bkd4 = {"distill.mode": "bkd", "student.timesteps": 4}
    none2 = {"distill.mode": "none", "student.timesteps": 2}
    _stored(study, results_dir, [record(0, bkd4, 0, 91.0, 79.0), record(1, bkd4, 1, 91.0, 81.0),
                                 record(2, none2, 0, 90.0, 85.0)])
    total = summary_table(load(results_dir)).splitlines()[-2].split()
    assert total[5:7] == ["best", "80.00"]


def linked_study(make_study):
    """Two backbones as a linked group (their timesteps differ) crossed with distill.mode."""
    return make_study("lk", search={
        "params": {"distill.mode": ["none", "bkd"]},
        "linked": {"backbone": {"small": {"student.timesteps": 2},
                                "big": {"student.timesteps": 4}}},
        "seeds": [0, 1]})


def linked_records(study, make_record):
    """small scores about 79.5, big about 99.5: two seeds of every (backbone, mode)."""
    records, n = [], 0
    for label, offset in (("small", 0.0), ("big", 20.0)):
        for mode in ("none", "bkd"):
            for seed in (0, 1):
                params = {"linked.backbone": label, "distill.mode": mode}
                records.append(make_record(study, n, params, seed, offset=offset))
                n += 1
    return records


def test_linked_groups_are_part_of_the_configuration(tmp_path, make_study, make_record):
    study = linked_study(make_study)
    records = linked_records(study, make_record)
    res = load(_stored(study, tmp_path / "lk", records).location)
    assert res.config_columns() == ["param.linked.backbone", "param.distill.mode"]
    lines = summary_table(res).splitlines()
    assert lines[1].split()[:3] == ["linked.backbone", "distill.mode", "n"]
    rows = {tuple(line.split()[:2]): line.split() for line in lines[3:-2]}
    assert sorted(rows) == [("big", "bkd"), ("big", "none"), ("small", "bkd"),
                            ("small", "none")]
    for (label, mode), cells in rows.items():
        mine = [r.result.test_top1 for r in records
                if r.params == {"linked.backbone": label, "distill.mode": mode}]
        assert cells[2:4] == ["2", "2"]  # n, completed: the two seeds, not four trials
        assert " ".join(cells[6:9]) == (f"{statistics.mean(mine):.2f} ± "
                                        f"{statistics.stdev(mine):.2f}")


def test_configuration_params_are_the_spaces_params_but_seed(make_study):
    from bkd_sweep.results import configuration_params
    from bkd_sweep.space import all_params  # optuna: the reader itself must not import it

    study = make_study("lk", search={
        "params": {"distill.mode": ["none", "bkd"], "seed": [0, 1]},
        "linked": {"backbone": {"small": {"student.timesteps": 2},
                                "big": {"student.timesteps": 4}}}})
    assert configuration_params(study.search) == ["linked.backbone", "distill.mode"]
    assert configuration_params(study.search) == [
        p for p in all_params(study.search) if p != "seed"]


def test_a_bare_name_is_a_study_not_a_folder_here(tmp_path, make_study, make_record,
                                                  monkeypatch):
    study = make_study("reports")
    _stored(study, tmp_path / "results" / "reports",
            [make_record(study, 0, {"distill.mode": "bkd"}, 0)])
    (tmp_path / "reports").mkdir()  # the repo's own folder of the same name: no results
    (tmp_path / "reports" / "notes.md").write_text("not a study")
    monkeypatch.chdir(tmp_path)
    res = load("reports")
    assert res.directory == (tmp_path / "results" / "reports").resolve()
    assert list(res.trials["trial_id"]) == ["t0000"]
    rebuild("reports")  # rebuilds the study, writes nothing into ./reports
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["notes.md"]
    assert (tmp_path / "results" / "reports" / "trials.parquet").exists()
    # said as a path, it is that folder (which holds no trials)
    for as_path in ("./reports", Path("reports"), str(tmp_path / "reports")):
        res = load(as_path)
        assert res.directory == (tmp_path / "reports").resolve() and res.trials.empty
    # a folder here that holds a study's results is read by its bare name
    other = make_study("local")
    _stored(other, tmp_path / "local", [make_record(other, 3, {"distill.mode": "none"}, 1)])
    res = load("local")
    assert res.directory == (tmp_path / "local").resolve()
    assert list(res.trials["trial_id"]) == ["t0003"]
