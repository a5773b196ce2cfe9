"""The bench's named figures, their targets, bench/results.json and bench/RESULTS.md.

Every part returns rows (bench_common.Row); a row with a ``key`` is a named figure of
results.json, judged here against its target. RESULTS.md is rendered from results.json
alone, so the two always agree.
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_common import Row, render_table

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
MET = {"yes": "met", "no": "missed", "-": "reported", "error": "error"}
BEGIN, END = "<!-- gpu.py begin -->", "<!-- gpu.py end -->"  # bench/gpu.py's table
_OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt}


@dataclass(frozen=True)
class Target:
    op: str | None  # ">=", "<=", "<", ">"; None: reported, no target
    threshold: float | None = None
    unit: str = ""
    what: str = ""  # one line: what the figure is

    def text(self) -> str:
        if self.op is None:
            return "- (reported)"
        return f"{self.op} {self.threshold:g}{self.unit}"

    def met(self, value: float | None) -> bool | None:
        if self.op is None or value is None:
            return None
        return bool(_OPS[self.op](value, self.threshold))


TARGETS: dict[str, Target] = {
    "pruning_speedup": Target(">=", 2.0, "x", "epochs without / with the default pruner "
                              "(pruner: auto), TPE, >= 24 synthetic trials x 12 epochs"),
    "pruning_top1_loss_pts": Target("<=", 1.0, "", "best val top-1 without - with the "
                                    "default pruner, points"),
    "seed_promotion_speedup": Target(None, None, "x", "epochs without / with seed promotion, "
                                     "3 seeds"),
    "ours_over_plain_sj": Target("<=", 1.0, "", "our step / plain spikingjelly step, mode "
                                 "none, paper-like student"),
    "bkd_overhead": Target("<=", 1.10, "", "mixed / (none + teacher forward) step, "
                           "paper-like pair"),
    "sweep_efficiency": Target(">=", 0.90, "", "busy seconds (trials, the teacher's "
                               "training) / (sweep wall x concurrency), quickstart, teacher "
                               "wait counted"),
    "fixed_cost_per_trial_s": Target("<", 0.7, " s", "sweep wall x concurrency - trial "
                                     "function seconds, per trivially short trial"),
    "record_cost_ratio_10k_vs_10": Target("<=", 1.5, "", "one ResultStore.upsert with 10,000 "
                                          "trials stored / with 10 (300 epochs each)"),
    "report_10k_s": Target("<", 10.0, " s", "`bkd-sweep report` on 10,000 trials x 300 "
                           "epochs"),
    "plan_imagenet_s": Target("<", 5.0, " s", "`bkd-sweep plan studies/imagenet_ablation.yaml`"),
    "wall_vs_plain_tune": Target("<=", 0.75, "", "bkd-sweep wall / default Ray Tune wall, same "
                                 "quickstart trials, interleaved"),
}
REQUIRED = tuple(TARGETS)  # results.json always has these (error rows when a part failed)
TARGETS.update({
    "results_10k_s": Target("<", 2.0, " s", "`bkd-sweep results` on 10,000 trials x 300 epochs"),
    "engine_epoch_cost_ratio_10k_vs_10": Target("<=", 1.5, "", "the driver's work per epoch "
                                                "report with 10,000 trials in the study / 10"),
    "ours_compiled_over_plain_sj": Target("<=", 0.8, "", "our step with train.compile: true "
                                          "/ plain spikingjelly step, mode none, paper-like "
                                          "student (the issue's aim)"),
    "sweep_start_s": Target(None, None, " s", "run_study's call until the first trivially "
                            "short trial finished (Ray already up), once per sweep"),
    "ray_start_s": Target(None, None, " s", "ray.init as the engine calls it, once per sweep"),
})


def judge(key: str, value: float | None, why: str = "") -> dict[str, Any]:
    """Row keyword arguments for a named figure: its target and verdict (and, when missed,
    the measured reason)."""
    target = TARGETS[key]
    met = target.met(value)
    verdict = "-" if met is None else ("yes" if met else "no")
    return {"target": target.text(), "met": verdict, "key": key, "value": value,
            "why": why if met is False else ""}


def error_rows(keys: tuple[str, ...], part: str, reason: str) -> list[Row]:
    """Rows for named figures a part could not measure."""
    reason = " ".join(str(reason).split())[:300] or "unknown failure"
    return [Row(part, TARGETS[k].what, "error", f"error: {reason}", TARGETS[k].text(), "error",
                key=k) for k in keys]


# --------------------------------------------------------------------------------------
# results.json


def figure_entry(row: Row) -> dict[str, Any]:
    return {"value": row.value, "target": row.target, "met": MET.get(row.met, row.met),
            "figure": row.figure, "measure": f"{row.part}: {row.measure}",
            "detail": row.detail, "reason": row.why or (row.detail if row.met == "error" else "")}


def results_document(rows: list[Row], run: dict[str, Any]) -> dict[str, Any]:
    """results.json: one entry per named figure (REQUIRED first), ``run`` (when, where, how
    long, which parts) and ``rows`` (every row of the tables, named or not)."""
    doc: dict[str, Any] = {}
    named = {r.key: r for r in rows if r.key}
    for key in REQUIRED:
        if key in named:
            doc[key] = figure_entry(named[key])
        elif run.get("complete", True):
            doc[key] = figure_entry(Row("-", TARGETS[key].what, "error", "error: not measured",
                                        TARGETS[key].text(), "error", key=key))
    for key, row in named.items():
        doc.setdefault(key, figure_entry(row))
    doc["run"] = run
    doc["rows"] = [r.to_dict() for r in rows]
    return doc


def write_json(doc: dict[str, Any], path: Path = RESULTS_JSON) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def figures_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in doc.items() if k not in ("run", "rows")}


# --------------------------------------------------------------------------------------
# RESULTS.md (from results.json only)


def targets_table(doc: dict[str, Any]) -> str:
    body = []
    for key, fig in figures_of(doc).items():
        if fig["met"] == "reported" and key not in REQUIRED:
            continue
        why = fig["reason"] if fig["met"] in ("missed", "error") else ""
        body.append([f"`{key}`", fig["measure"], fig["figure"], fig["target"], fig["met"], why])
    return render_table(["key", "measure", "figure", "target", "met", "why missed (measured)"],
                        body, markdown=True)


def all_rows_table(doc: dict[str, Any]) -> str:
    body = [[r["part"], r["measure"], r["figure"], r["detail"], r["target"],
             MET.get(r["met"], r["met"])] for r in doc["rows"]]
    return render_table(["part", "measure", "figure", "detail (same run)", "target", "met"],
                        body, markdown=True)


def render_markdown(doc: dict[str, Any], notes: str) -> str:
    run = doc["run"]
    judged = [f for f in figures_of(doc).values() if f["met"] in ("met", "missed", "error")]
    hits = sum(f["met"] == "met" for f in judged)
    errors = sum(f["met"] == "error" for f in judged)
    machine = render_table(["", ""], [[k, v] for k, v in run["machine"].items()], markdown=True)
    return (f"# bkd-sweep benchmarks\n\nWritten by `{run['command']}` from `bench/results.json` "
            f"(one run, {run['minutes']:.1f} minutes, {run['date']}); timings on a shared "
            f"machine are noisy (see below). Targets met: {hits} of {len(judged)}"
            + (f"; {errors} failed to measure" if errors else "") + ".\n\n## Targets\n\n"
            f"{targets_table(doc)}\n\n## Machine\n\n{machine}\n\n## All results\n\n"
            f"{all_rows_table(doc)}\n\n{notes}")


def write_markdown(doc: dict[str, Any], notes: str, path: Path = RESULTS_MD) -> None:
    """RESULTS.md from results.json, keeping a GPU table bench/gpu.py wrote into it."""
    text = render_markdown(doc, notes)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in old and END in old:
        text = text.rstrip() + "\n\n" + old[old.index(BEGIN):old.index(END) + len(END)] + "\n"
    path.write_text(text, encoding="utf-8")
