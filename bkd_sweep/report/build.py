"""build_report: results/<study>/ (Parquet + study.json) -> reports/<study>/ (tables, figures,
index.html). Reads no MLflow and imports neither torch nor ray."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bkd_sweep.report.aggregate import mean_of
from bkd_sweep.report.data import ResultsData, load_results_dir, param_col
from bkd_sweep.report.page import PageFigure, index_html
from bkd_sweep.report.pareto import ParetoFront, configuration_front, front_note
from bkd_sweep.report.plots import (device_hours_figure, epoch_curves_figure, pareto_figure,
                                    save_figure)
from bkd_sweep.report.render import EXTENSIONS, render
from bkd_sweep.report.tables import (Table, ablation_table, default_table_specs, energy_table,
                                     main_results_table, pareto_table)
from bkd_sweep.config import LOWER_IS_BETTER, ParetoSpec, ReportConfig, TableSpec

RESERVED_NAMES = frozenset({"main_results", "energy", "pareto", "index", "curves_epochs",
                            "curves_device_hours"})
PARETO_FORMATS = ("png", "pdf", "svg")
CURVE_FORMATS = ("png", "svg")


@dataclass(frozen=True)
class ReportOutput:
    """What build_report wrote: the folder, its index.html, every file, and the values behind
    the tables and the Pareto plot (for callers and tests that check values, not pixels)."""

    out_dir: Path
    index_html: Path
    files: tuple[Path, ...]
    tables: dict[str, Table]
    pareto: ParetoFront | None
    seconds: float


class ReportSpecError(ValueError):
    """The study's report section names a table, parameter or metric the results lack."""


def _check_specs(data: ResultsData, specs: list[TableSpec], pareto: ParetoSpec | None) -> None:
    """Every name the report section uses, checked before anything is written."""
    seen: set[str] = set()
    for spec in specs:
        where = f"report table {spec.name!r}"
        if spec.name in RESERVED_NAMES:
            raise ReportSpecError(f"{where}: the name is reserved; avoid: "
                                  + ", ".join(sorted(RESERVED_NAMES)))
        if spec.name in seen:
            raise ReportSpecError(f"{where}: the name appears twice")
        seen.add(spec.name)
        for path in filter(None, (spec.rows, spec.cols)):
            if param_col(path) not in data.trials.columns:
                raise ReportSpecError(f"{where}: unknown parameter {path!r}")
        _check_metric(data, spec.metric, where)
    for metric in (pareto.x, pareto.y) if pareto is not None else ():
        _check_metric(data, metric, "report pareto")


def _check_metric(data: ResultsData, metric: str, where: str) -> None:
    try:
        data.metric_col(metric)
    except ValueError as exc:
        raise ReportSpecError(f"{where}: {exc}") from None


def _objective_mode(data: ResultsData, metric: str) -> str:
    for obj in data.study.search.objectives:
        if obj.metric == metric:
            return obj.mode
    return "min" if metric in LOWER_IS_BETTER else "max"


class _ReportWriter:
    """Collects what a report writes: table files, HTML sections, figures."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.written: list[Path] = []
        self.tables: dict[str, Table] = {}
        self.sections: list[tuple[str, str]] = []
        self.figures: list[PageFigure] = []

    def table(self, table: Table, title: str) -> None:
        self.tables[table.name] = table
        for fmt, ext in EXTENSIONS.items():
            path = self.out_dir / f"{table.name}.{ext}"
            path.write_text(render(table, fmt), encoding="utf-8")
            self.written.append(path)
        self.sections.append((title, render(table, "html")))

    def figure(self, fig, name: str, formats: tuple[str, ...], caption: str) -> None:
        self.written += save_figure(fig, self.out_dir / name, formats)
        self.figures.append(PageFigure(name, caption, (self.out_dir / f"{name}.png").read_bytes(),
                                       tuple(f"{name}.{f}" for f in formats)))


def build_report(results_dir: Path, out_dir: Path, *, report_cfg: ReportConfig | None = None,
                 seeds_expected: int | None = None) -> ReportOutput:
    """Write ablation/main/energy/Pareto tables (md, tex, html), figures and index.html.

    ``report_cfg`` and ``seeds_expected`` default to study.json (its report section and
    len(search.seeds)); a cell with fewer completed seeds than expected is marked.
    """
    start = time.perf_counter()
    data = load_results_dir(results_dir)
    cfg = report_cfg if report_cfg is not None else data.study.report
    seeds = seeds_expected if seeds_expected is not None else len(data.study.search.seeds)
    specs = list(cfg.tables) or default_table_specs(data)
    _check_specs(data, specs, cfg.pareto)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _ReportWriter(out_dir)
    if cfg.main_results:
        writer.table(main_results_table(data, seeds), "Main results (baseline vs BKDSNN)")
    for spec in specs:
        writer.table(ablation_table(data, spec, seeds), f"Ablation: {spec.name}")
    if "metric.energy_mj" in data.trials.columns:
        writer.table(energy_table(data, seeds), "Energy")
    front = _pareto(data, cfg.pareto, writer) if cfg.pareto is not None else None
    _curves(data, writer)
    index = out_dir / "index.html"
    index.write_text(index_html(data, writer.sections, writer.figures), encoding="utf-8")
    writer.written.append(index)
    return ReportOutput(out_dir=out_dir, index_html=index, files=tuple(sorted(writer.written)),
                        tables=writer.tables, pareto=front, seconds=time.perf_counter() - start)


def _pareto(data, spec: ParetoSpec, writer: _ReportWriter):
    front, group_paths = configuration_front(data, spec, _objective_mode(data, spec.x),
                                             _objective_mode(data, spec.y))
    writer.table(pareto_table(front, spec, group_paths), "Pareto front")
    if len(front.points):  # nothing to draw before the first completed trial
        done = data.completed
        teacher_x = (mean_of(done, "metric.teacher_energy_mj") if spec.x == "energy_mj"
                     else None)
        teacher_y = (mean_of(done, data.metric_col("teacher_top1"))
                     if spec.y == "top1" and "metric.teacher_test_top1" in done else None)
        fig = pareto_figure(front, spec, data, teacher_x, teacher_y)
        writer.figure(fig, "pareto", PARETO_FORMATS,
                      f"{spec.y} vs {spec.x}: configuration means, Pareto front as a step "
                      "line, ANN teacher dashed. " + front_note(front))
    return front


def _curves(data, writer: _ReportWriter) -> None:
    for name, make, caption in (
            ("curves_epochs", epoch_curves_figure,
             "Validation top-1 per epoch per distillation mode (mean ± std over trials)"),
            ("curves_device_hours", device_hours_figure,
             "Best val top-1 so far per mode vs cumulative device-hours of the study")):
        fig = make(data)
        if fig is not None:
            writer.figure(fig, name, CURVE_FORMATS, caption)
