"""build_report end to end: files, index.html, determinism, LaTeX, imports, 1,000 trials."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bkd_sweep.cli import main
from bkd_sweep.report import build_report
from bkd_sweep.report.build import ReportSpecError
from bkd_sweep.report.render import render
from bkd_sweep.config import ParetoSpec, ReportConfig, TableSpec
from bkd_sweep.tracking.schema import EPOCHS_SCHEMA, trials_schema

EXPECTED = {
    "index.html",
    *(f"{t}.{e}" for t in ("ablation", "main_results", "energy", "pareto")
      for e in ("md", "tex", "html")),
    "pareto.png", "pareto.pdf", "pareto.svg",
    "curves_epochs.png", "curves_epochs.svg", "curves_device_hours.png",
    "curves_device_hours.svg",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory, fixture_results_dir):
    root = tmp_path_factory.mktemp("built")
    results = fixture_results_dir(root / "results" / "fixture")
    return results, build_report(results, root / "reports" / "fixture")


def test_writes_every_artifact(built) -> None:
    _, out = built
    assert {p.name for p in out.files} == EXPECTED
    assert {p.name for p in out.out_dir.iterdir()} == EXPECTED
    assert all(p.stat().st_size > 0 for p in out.files)
    assert (out.out_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out.out_dir / "pareto.pdf").read_bytes()[:5] == b"%PDF-"
    assert "<svg" in (out.out_dir / "pareto.svg").read_text()
    assert set(out.tables) == {"ablation", "main_results", "energy", "pareto"}
    print(f"fixture report: {out.seconds:.2f} s")


def test_index_html_is_self_contained(built) -> None:
    _, out = built
    page = out.index_html.read_text(encoding="utf-8")
    assert "<title>bkd-sweep report: fixture</title>" in page
    assert "Hand-made fixture: four distillation modes on two students." in page
    for name in ("ablation", "main_results", "energy", "pareto"):  # fragments embedded as is
        assert (out.out_dir / f"{name}.html").read_text(encoding="utf-8") in page
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(imgs) == 3 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from a network
    assert '<link rel="stylesheet"' not in page and "<style>" in page
    counts = dict(re.findall(r'data-status-count="(\w+)">([^<]*)<', page))
    assert counts["completed"] == "22" and counts["pruned"] == "1" and counts["failed"] == "1"
    assert counts["total"] == "24"
    assert "CUDA out of memory" in page  # the failed trial's reason


@pytest.mark.slow  # builds the report twice more
def test_markdown_and_latex_are_byte_identical_across_runs(built, tmp_path) -> None:
    results, first = built
    second = build_report(results, tmp_path / "again")
    for path in first.files:
        twin = second.out_dir / path.name
        assert path.read_bytes() == twin.read_bytes(), path.name


def test_overrides_and_default_tables(fixture_results, tmp_path) -> None:
    cfg = ReportConfig(tables=[], pareto=None, main_results=False)
    out = build_report(fixture_results, tmp_path / "r", report_cfg=cfg, seeds_expected=2)
    assert set(out.tables) == {"ablation", "energy"} and out.pareto is None
    ablation = out.tables["ablation"]  # default: rows distill.mode, cols the other categorical
    assert ablation.header == ("distill.mode", "snn_a", "snn_b")
    assert not any(c.marker for r in ablation.rows for c in r)  # 2 seeds expected: none short
    assert not (tmp_path / "r" / "pareto.png").exists()
    with pytest.raises(ValueError, match="reserved"):
        build_report(fixture_results, tmp_path / "x", report_cfg=ReportConfig(
            tables=[TableSpec(name="energy", rows="distill.mode")]))


def test_empty_study_still_reports(fixture_results, tmp_path) -> None:
    empty = tmp_path / "results" / "empty"
    empty.mkdir(parents=True)
    shutil.copy(fixture_results / "study.json", empty / "study.json")
    pq.write_table(trials_schema().empty_table(), empty / "trials.parquet")
    pq.write_table(EPOCHS_SCHEMA.empty_table(), empty / "epochs.parquet")
    out = build_report(empty, tmp_path / "reports" / "empty")
    assert out.index_html.exists()
    assert out.tables["main_results"].rows == () and out.pareto.front == ()
    assert [r[0].text for r in out.tables["ablation"].rows] == []
    assert not (tmp_path / "reports" / "empty" / "curves_epochs.png").exists()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_compiles(built, tmp_path) -> None:
    _, out = built
    body = "\n".join(rf"\input{{{(out.out_dir / f'{n}.tex').as_posix()}}}"
                     for n in ("ablation", "main_results", "energy", "pareto"))
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n"
                   "\\usepackage[margin=1cm,landscape]{geometry}\n\\begin{document}\n"
                   f"{body}\n\\end{{document}}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "doc.pdf").exists()


@pytest.mark.slow  # a fresh interpreter imports the report stack
def test_no_torch_ray_or_mlflow_imported(fixture_results, tmp_path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from bkd_sweep.report import build_report
        from bkd_sweep.report.browser_check import check_in_browser
        build_report(Path({str(fixture_results)!r}), Path({str(tmp_path / 'r')!r}))
        bad = sorted(m for m in ("torch", "ray", "mlflow", "spikingjelly", "timm", "optuna")
                     if m in sys.modules)
        print("IMPORTED", bad)
        sys.exit(1 if bad else 0)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.slow
def test_thousand_trials(tmp_path, make_large_results) -> None:
    results = make_large_results(tmp_path / "results" / "large", n_trials=1000)
    start = time.perf_counter()
    out = build_report(results, tmp_path / "reports" / "large")
    print(f"\n1,000-trial report: {time.perf_counter() - start:.2f} s")
    df = pd.read_parquet(results / "trials.parquet")
    done = df[df["status"] == "completed"]
    keys = ["param.distill.mode", "param.student.arch"]
    others = ["param.student.timesteps", "param.distill.blur_ratio"]
    # random sampling drew some (configuration, seed) pairs twice: each counts once, its latest
    once = done.sort_values("finished_at").drop_duplicates(["config_id", "seed"], keep="last")
    assert len(once) < len(done)
    # each ablation cell = the (T, blur) configuration of that cell with the best mean val
    # top-1 (the study's objective), shown as its test top-1 mean ± std (n)
    per_cfg = once.groupby(keys + others, dropna=False).agg(
        val=("metric.val_top1", "mean"), mean=("metric.test_top1", "mean"),
        std=("metric.test_top1", "std"), count=("metric.test_top1", "count"))
    best = per_cfg.reset_index().sort_values("val").groupby(keys).tail(1)
    table = out.tables["ablation"]
    assert len(best) == 20
    for _, row in best.iterrows():
        spread = f" ± {row['std']:.2f}" if row["count"] > 1 else ""
        expect = f"{row['mean']:.2f}{spread} (n={row['count']})"
        cell = table.cell(row["param.distill.mode"], row["param.student.arch"])
        assert cell.text == expect
    # a failed (configuration, seed) that another run completed dropped nothing: not counted
    completed_pairs = set(zip(done["config_id"], done["seed"]))
    failed_rows = df[df["status"] == "failed"]
    failed = sum(p not in completed_pairs for p in zip(failed_rows["config_id"],
                                                       failed_rows["seed"]))
    assert 0 < failed < len(failed_rows)
    pruned = (df["status"] == "pruned").sum()
    assert f"{pruned} pruned, {failed} failed trials excluded." in table.notes
    # energy table: one row per configuration with a completed trial
    configs = done.groupby(keys + others).ngroups
    assert len(out.tables["energy"].rows) == configs
    # Pareto: configuration means; chosen on mean val top-1 (the objective), shown at test:
    # no front point dominated on (energy, val), every other point dominated
    pts = out.pareto.points
    assert len(pts) == configs and out.pareto.y == "metric.test_top1"
    assert out.pareto.chosen_on == ("metric.energy_mj", "metric.val_top1")
    xy = list(zip(pts["metric.energy_mj"], pts["metric.val_top1"]))
    front = set(out.pareto.front)

    def dominates(a, b):
        return a[0] <= b[0] and a[1] >= b[1] and a != b

    for i, p in enumerate(xy):
        assert math.isfinite(p[0]) and math.isfinite(p[1])
        dominated = any(dominates(q, p) for q in xy)
        assert dominated == (i not in front)
    assert "pruned" in render(table, "md") and out.index_html.stat().st_size > 10_000


def test_a_text_column_as_metric_is_refused_in_one_line(fixture_results_dir, tmp_path,
                                                        capsys) -> None:
    results = fixture_results_dir(tmp_path / "results" / "fixture", tables=[
        {"name": "by_device", "rows": "distill.mode", "metric": "device"}])
    assert main(["report", str(results), "--no-mlflow", "--out", str(tmp_path / "out")]) == 2
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert line.startswith("error: report table 'by_device': metric 'device' is a text "
                           "column, not a number; available: energy_mj, ")
    assert not (tmp_path / "out").exists()  # refused before anything is written
    with pytest.raises(ReportSpecError, match=r"^report pareto: metric 'finished_at' is a "
                                              r"datetime64\[.*\] column, not a number; "):
        build_report(results, tmp_path / "r", report_cfg=ReportConfig(
            pareto=ParetoSpec(x="finished_at")))
