"""Report tables as typed values (compute first): ablation, main results, energy, Pareto.

A Table holds plain-text cells (Unicode ± † —) with emphasis and marker flags; the renderers
in ``render.py`` turn the same Table into Markdown, LaTeX and HTML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal, Sequence, TypeVar, get_args

from bkd_sweep.report.aggregate import (Stat, best_per_cell, excluded_counts, group_stats,
                                        keys_of, mean_of, nonfinite_note)
from bkd_sweep.report.data import (PERCENT_METRICS, REPORTED_AS, ResultsData, format_value,
                                   param_col, sort_key, val_note)
from bkd_sweep.report.pareto import ParetoFront, front_note
from bkd_sweep.config import CategoricalParam, DistillConfig, ParetoSpec, TableSpec
from bkd_sweep.report.stats import (MODE_PATH, Comparison, compare, compare_cells,
                                    significance_notes)

Emphasis = Literal["bold", "underline"]
V = TypeVar("V")
DAGGER = "†"
DASH = "—"
MAIN_KEYS = ("data.dataset", "student.arch", "teacher.arch", "student.timesteps")
BASELINE_MODE, BKDSNN_MODE = "none", "mixed"


@dataclass(frozen=True)
class Cell:
    """One table cell: plain text, its numeric value (for ranking), emphasis and a marker."""

    text: str
    value: float | None = None
    emphasis: Emphasis | None = None
    marker: bool = False  # fewer completed seeds than the study asked for
    significant: bool = False  # differs from the baseline mode (Welch p < ALPHA, n >= 3)


@dataclass(frozen=True)
class Table:
    name: str
    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    align: str  # one of l/r per column
    notes: tuple[str, ...] = ()
    comparisons: tuple[Comparison, ...] = ()  # each mode cell vs its baseline cell

    def column(self, j: int) -> list[Cell]:
        return [row[j] for row in self.rows]

    def cell(self, row_label: str, col_label: str) -> Cell:
        """The cell in the row whose first cell reads ``row_label``, under ``col_label``."""
        j = self.header.index(col_label)
        for row in self.rows:
            if row[0].text == row_label:
                return row[j]
        raise KeyError(row_label)


# --------------------------------------------------------------------------------------
# Number formatting: fixed, locale-free, so the same Parquet gives the same bytes


def decimals_for(metric: str, value: float | None, sig: int = 4) -> int:
    """Two decimals for percentages; otherwise enough for ``sig`` significant digits."""
    if metric in PERCENT_METRICS or value is None or value == 0 or not math.isfinite(value):
        return 2
    return max(0, sig - 1 - math.floor(math.log10(abs(value))))


def fmt(value: float, decimals: int, signed: bool = False) -> str:
    text = f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    if text.lstrip("+-").strip("0.") == "":  # no "-0.00"
        text = text.lstrip("+-")
        text = ("+" + text) if signed else text
    return text


def stat_text(stat: Stat, decimals: int) -> str:
    """'79.41 ± 0.12 (n=3)'; a single seed has no std: '79.41 (n=1)'."""
    if stat.std is None:
        return f"{fmt(stat.mean, decimals)} (n={stat.n})"
    return f"{fmt(stat.mean, decimals)} ± {fmt(stat.std, decimals)} (n={stat.n})"


def column_decimals(metric: str, values: Sequence[float | None]) -> int:
    """One precision per column (read down a column, digits line up): fixed for percentages,
    else 4 significant digits of the smallest non-zero magnitude."""
    finite = [abs(v) for v in values if v is not None and v != 0 and math.isfinite(v)]
    return decimals_for(metric, min(finite) if finite else None)


def stat_cell(stat: Stat | None, metric: str, seeds_expected: int | None,
              decimals: int | None = None) -> Cell:
    if stat is None:
        return Cell(DASH)
    decimals = decimals_for(metric, stat.mean) if decimals is None else decimals
    return Cell(stat_text(stat, decimals), value=round(stat.mean, decimals),
                marker=seeds_expected is not None and stat.n < seeds_expected)


def rank(cells: Sequence[Cell], mode: Literal["max", "min"],
         second: bool = True) -> list[Cell]:
    """Bold the best value, underline the second best (distinct displayed values; ties share)."""
    values = sorted({c.value for c in cells if c.value is not None}, reverse=mode == "max")
    if len(values) < 2:
        return list(cells)
    style = {values[0]: "bold", values[1]: "underline" if second else None}
    return [replace(c, emphasis=style.get(c.value)) if c.value is not None else c
            for c in cells]


def rank_columns(rows: list[list[Cell]], columns: Sequence[int],
                 mode: Literal["max", "min"]) -> list[list[Cell]]:
    for j in columns:
        ranked = rank([r[j] for r in rows], mode)
        for r, c in zip(rows, ranked):
            r[j] = c
    return rows


def standard_notes(rows: list[list[Cell]], seeds_expected: int | None, pruned: int,
                   failed: int, extra: Sequence[str] = (),
                   data: ResultsData | None = None) -> tuple[str, ...]:
    notes = ["Mean ± sample std over seeds of completed trials; n = completed seeds."]
    if data is not None:  # an accuracy table: say how it was selected, and the teacher
        notes.append(data.selection_note())
        notes.extend(filter(None, [data.teacher_note()]))
    notes.extend(extra)
    if any(c.marker for r in rows for c in r):
        notes.append(f"{DAGGER} fewer than {seeds_expected} completed seeds.")
    if pruned or failed:
        notes.append(f"{pruned} pruned, {failed} failed trials excluded.")
    return tuple(notes)


def _others_note(others: list[str], metric: str, data: ResultsData) -> list[str]:
    if not others:
        return []
    select, objective = data.selection(), data.study.search.objectives[0].metric
    why = ("the study's objective" if data.selects_by_objective() else
           f"standing in for the study's objective {objective}, which the results lack")
    by = (f"the best mean {select[0].removeprefix('metric.')} over seeds, {why}; the cell "
          f"shows its {metric}" if select else
          f"its mean {metric} (the results have no val metric to select on)")
    return [f"Each cell shows one configuration over {', '.join(others)}: the one with {by}."]


# --------------------------------------------------------------------------------------
# Tables


def ablation_table(data: ResultsData, spec: TableSpec, seeds_expected: int | None) -> Table:
    """Rows x cols of a declared TableSpec: mean ± std of the metric per cell."""
    metric_col = data.metric_col(spec.metric)
    for path in filter(None, (spec.rows, spec.cols)):
        if param_col(path) not in data.trials.columns:
            raise ValueError(f"table {spec.name!r}: unknown parameter {path!r}")
    cell_paths = [spec.rows] + ([spec.cols] if spec.cols else [])
    others = [k for k in data.config_keys if k not in cell_paths]
    best = best_per_cell(data.completed, cell_paths, others, metric_col, spec.mode,
                         data.selection())
    row_values = data.order(spec.rows, data.trials[param_col(spec.rows)].tolist())
    col_values = (data.order(spec.cols, data.trials[param_col(spec.cols)].tolist())
                  if spec.cols else [None])
    decimals = column_decimals(spec.metric, [s.mean for s in best.values()])
    axis = _mode_axis(spec, cell_paths)
    tests = {} if axis is None else compare_cells(best, axis, spec.baseline)
    rows: list[list[Cell]] = []
    shown: list[Comparison] = []  # in display order, for the footnotes
    for rv in row_values:
        row = [Cell(format_value(rv))]
        for cv in col_values:
            key = (rv,) if spec.cols is None else (rv, cv)
            cell = stat_cell(_lookup(best, key), spec.metric, seeds_expected, decimals)
            row.append(_mark(cell, _lookup(tests, key), shown))
        rows.append(row)
    rank_columns(rows, range(1, len(col_values) + 1), spec.mode)
    header = (spec.rows, *([format_value(c) for c in col_values] if spec.cols else
                           [spec.metric]))
    pruned, failed = excluded_counts(data.trials)
    label = f"test {spec.metric}" if spec.metric in REPORTED_AS else spec.metric
    caption = (f"{label} ({'higher' if spec.mode == 'max' else 'lower'} is better) by "
               f"{spec.rows}" + (f" (rows) and {spec.cols} (columns)" if spec.cols else ""))
    within = "in the same row" if axis == 1 else "in the same column"
    extra = [*val_note(spec.metric, metric_col), *_others_note(others, spec.metric, data),
             *nonfinite_note(data.completed, [metric_col]),
             *significance_notes(shown, spec.baseline or "", within,
                                 [p for p in cell_paths if p != MODE_PATH],
                                 lambda x: fmt(x, decimals, signed=True), others)]
    reported = _is_accuracy(metric_col) and metric_col.startswith("metric.test_")
    return Table(name=spec.name, caption=caption, header=header,
                 rows=tuple(tuple(r) for r in rows), align="l" + "r" * (len(header) - 1),
                 notes=standard_notes(rows, seeds_expected, pruned, failed, extra,
                                      data if reported else None),
                 comparisons=tuple(shown))


def _is_accuracy(metric: str) -> bool:
    return "top1" in metric or "top5" in metric


def _mode_axis(spec: TableSpec, cell_paths: list[str]) -> int | None:
    """Where distill.mode sits in a cell's key (rows 0, cols 1); None: no test in this table."""
    if spec.baseline is None or MODE_PATH not in cell_paths:
        return None
    modes = get_args(DistillConfig.model_fields["mode"].annotation)
    if spec.baseline not in modes:
        raise ValueError(f"table {spec.name!r}: baseline {spec.baseline!r} is not a "
                         f"{MODE_PATH}; one of {', '.join(modes)}")
    return cell_paths.index(MODE_PATH)


def _mark(cell: Cell, comparison: Comparison | None, shown: list[Comparison]) -> Cell:
    """Record the cell's comparison and flag the cell when the difference is significant."""
    if comparison is None:
        return cell
    shown.append(comparison)
    return replace(cell, significant=comparison.significant)


def _has(data: ResultsData, metric: str) -> bool:
    try:
        data.metric_col(metric)
    except ValueError:
        return False
    return True


def _lookup(cells: dict[tuple, V], key: tuple) -> V | None:
    """Dict lookup tolerant of 4 vs 4.0 and None keys (values come from the same column)."""
    if key in cells:
        return cells[key]
    for k, v in cells.items():
        if len(k) == len(key) and all(sort_key(a) == sort_key(b) for a, b in zip(k, key)):
            return v
    return None


def default_table_specs(data: ResultsData) -> list[TableSpec]:
    """Rows distill.mode, cols each other searched categorical parameter (or none)."""
    cats = [p for p, s in data.study.search.params.items()
            if isinstance(s, CategoricalParam) and p != "distill.mode"
            and param_col(p) in data.trials.columns]
    if not cats:
        return [TableSpec(name="ablation", rows="distill.mode", cols=None)]
    if len(cats) == 1:
        return [TableSpec(name="ablation", rows="distill.mode", cols=cats[0])]
    return [TableSpec(name="ablation_" + "".join(ch if ch.isalnum() else "_"
                                                 for ch in p.lower()),
                      rows="distill.mode", cols=p) for p in cats]


def main_results_table(data: ResultsData, seeds_expected: int | None) -> Table:
    """The paper's layout: baseline (mode none) vs BKDSNN (mode mixed) per student/teacher/T."""
    metric, metric_col = "top1", data.metric_col("top1")
    others = [k for k in data.config_keys if k not in MAIN_KEYS and k != "distill.mode"]
    cell_paths = [*MAIN_KEYS, "distill.mode"]
    best = best_per_cell(data.completed, cell_paths, others, metric_col, "max",
                         data.selection())
    groups = sorted(set(keys_of(data.trials, MAIN_KEYS)),
                    key=lambda k: tuple(sort_key(v) for v in k))
    group_keys = keys_of(data.trials, MAIN_KEYS)
    rows: list[list[Cell]] = []
    shown: list[Comparison] = []
    for group in groups:
        dataset, student, teacher, timesteps = group
        members = data.trials[[k == group for k in group_keys]]
        acc = mean_of(members, data.metric_col("teacher_top1")) if _has(data, "teacher_top1") \
            else None  # measured on test; else the declared accuracy
        acc = acc if acc is not None else mean_of(members, "param.teacher.accuracy")
        teacher_text = f"{teacher} ({fmt(acc, 2)})" if acc is not None else str(teacher)
        b = _lookup(best, (*group, BASELINE_MODE))
        o = _lookup(best, (*group, BKDSNN_MODE))
        base, ours = rank([stat_cell(b, metric, seeds_expected),
                           stat_cell(o, metric, seeds_expected)], "max", second=False)
        test = (compare(o.values, b.values if b else (), BKDSNN_MODE, BASELINE_MODE, group)
                if o is not None else None)
        ours = _mark(ours, test, shown)
        gain_cell = (Cell(fmt(o.mean - b.mean, 2, signed=True), value=round(o.mean - b.mean, 2))
                     if b is not None and o is not None else Cell(DASH))
        rows.append([Cell(format_value(dataset)), Cell(format_value(student)),
                     Cell(teacher_text), Cell(format_value(timesteps)), base, ours, gain_cell])
    pruned, failed = excluded_counts(data.trials)
    extra = [f"Baseline: distill.mode = {BASELINE_MODE}; BKDSNN: distill.mode = {BKDSNN_MODE}; "
             "gain = BKDSNN − baseline (top-1 %); teacher accuracy in parentheses."]
    extra += _others_note(others, metric, data) + significance_notes(
        shown, BASELINE_MODE, "in the same row", MAIN_KEYS,
        lambda x: fmt(x, 2, signed=True), others)
    return Table(name="main_results", caption="Main results: test top-1 accuracy (%)",
                 header=("dataset", "student", "teacher", "T", "baseline", "BKDSNN", "gain"),
                 rows=tuple(tuple(r) for r in rows), align="llllrrr",
                 notes=standard_notes(rows, seeds_expected, pruned, failed, extra, data),
                 comparisons=tuple(shown))


def _config_rows(data: ResultsData, paths: list[str]) -> list[tuple]:
    """Configurations with at least one completed trial, in the fixed value order."""
    return sorted(set(keys_of(data.completed, paths)), key=data.config_order(paths))


def energy_table(data: ResultsData, seeds_expected: int | None) -> Table:
    """Per configuration: top-1, SOPs, mean firing rate, energy and its ratio to the teacher."""
    paths = data.config_keys
    done = data.completed
    configs = _config_rows(data, paths)
    columns = dict(top1=data.metric_col("top1"), sops="metric.sops", rate="metric.firing_rate",
                   energy="metric.energy_mj", teacher="metric.teacher_energy_mj")
    stats = {name: group_stats(done, paths, col) for name, col in columns.items()
             if col in done.columns}
    values: list[dict[str, Any]] = []
    for cfg in configs:
        v = {n: _lookup(stats.get(n, {}), cfg)
             for n in ("top1", "sops", "rate", "energy", "teacher")}
        v["sops_m"] = v["sops"].mean / 1e6 if v["sops"] else None
        v["rate_mean"] = v["rate"].mean if v["rate"] else None
        v["teacher_mean"] = v["teacher"].mean if v["teacher"] else None
        v["ratio"] = (v["energy"].mean / v["teacher"].mean
                      if v["energy"] and v["teacher"] and v["teacher"].mean else None)
        values.append(v)
    dec = {k: column_decimals("", [v[k] for v in values])
           for k in ("sops_m", "rate_mean", "teacher_mean", "ratio")}
    dec["energy"] = column_decimals("energy_mj", [v["energy"].mean for v in values
                                                  if v["energy"]])
    rows: list[list[Cell]] = []
    for cfg, v in zip(configs, values):
        row = [Cell(format_value(x)) for x in cfg] if paths else [Cell("all")]
        row.append(stat_cell(v["top1"], "top1", seeds_expected))
        row.append(_mean_cell(v["sops_m"], dec["sops_m"]))
        row.append(_mean_cell(v["rate_mean"], dec["rate_mean"]))
        row.append(stat_cell(v["energy"], "energy_mj", seeds_expected, dec["energy"]))
        row.append(_mean_cell(v["teacher_mean"], dec["teacher_mean"]))
        row.append(_mean_cell(v["ratio"], dec["ratio"]))
        rows.append(row)
    k = max(len(paths), 1)
    rank_columns(rows, [k], "max")
    rank_columns(rows, [k + 3], "min")
    pruned, failed = excluded_counts(data.trials)
    convention = data.study.energy.convention
    extra = ["Energy per sample: E = E_MAC × MACs + E_AC × SOPs; ratio = student energy / "
             "ANN teacher energy (same code path).",
             f"Energy convention: {convention} (" + (
                 "integer spike sums and event frames count as accumulates, a static image's "
                 "first layer once, as published SNN energy tables count" if convention ==
                 "paper" else "only binary inputs count as spikes; every layer x T") + ").",
             *nonfinite_note(done, columns.values())]
    header = (*(paths or ["configuration"]), "top1 (%)", "SOPs (M)", "firing rate",
              "energy (mJ)", "teacher (mJ)", "ratio to teacher")
    return Table(name="energy", caption="Energy per configuration (per sample)", header=header,
                 rows=tuple(tuple(r) for r in rows), align="l" * k + "rrrrrr",
                 notes=standard_notes(rows, seeds_expected, pruned, failed, extra, data))


def _mean_cell(value: float | None, decimals: int | None = None) -> Cell:
    if value is None:
        return Cell(DASH)
    d = decimals_for("", value) if decimals is None else decimals
    return Cell(fmt(value, d), value=round(value, d))


def pareto_table(front: ParetoFront, spec: ParetoSpec, group_paths: list[str]) -> Table:
    """Every configuration's mean (x, y) with its Pareto membership; front rows in bold."""
    pts = front.points
    on = front.on_front()
    xs = [_float(v) for v in pts[front.x].tolist()]
    ys = [_float(v) for v in pts[front.y].tolist()]
    inf = float("inf")
    order = sorted(range(len(pts)), key=lambda i: (
        inf if xs[i] is None else xs[i], inf if ys[i] is None else -ys[i], i))
    x_dec = column_decimals(spec.x, xs)
    y_dec = column_decimals(spec.y, ys)
    rows: list[list[Cell]] = []
    for i in order:
        rec = pts.iloc[i]
        x, y = xs[i], ys[i]
        style = "bold" if on[i] else None
        y_stat = (Stat(y, _float(rec.get("y_std")), int(rec["n"]))
                  if y is not None else None)
        cells = [Cell(format_value(rec[param_col(p)])) for p in group_paths]
        cells.append(_mean_cell(x, x_dec))
        cells.append(stat_cell(y_stat, spec.y, None, y_dec))
        cells.append(Cell("yes" if on[i] else ""))
        rows.append([replace(c, emphasis=style) for c in cells])
    header = (*group_paths, f"{spec.x} (mean)", f"{spec.y} (mean)", "Pareto")
    notes = ("Means over seeds per configuration (completed trials); Pareto-optimal "
             "configurations in bold.", front_note(front))
    return Table(name="pareto", caption=f"Pareto front: {spec.y} vs {spec.x}", header=header,
                 rows=tuple(tuple(r) for r in rows),
                 align="l" * len(group_paths) + "rrl", notes=notes)


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f
