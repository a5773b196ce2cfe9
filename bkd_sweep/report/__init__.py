"""Reports from a study's Parquet results: ablation, main-results and energy tables (Markdown,
LaTeX, HTML), the Pareto front and training curves, tied together in a self-contained
index.html. Reads results/<study>/ only; never MLflow, torch or ray."""

from bkd_sweep.report.build import ReportOutput, build_report
from bkd_sweep.report.pareto import ParetoFront, pareto_front

__all__ = ["ParetoFront", "ReportOutput", "build_report", "pareto_front"]
