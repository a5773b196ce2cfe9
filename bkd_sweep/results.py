"""Reading a study's results: ``load(name)`` -> trials / epochs DataFrames and the study.

Imports neither mlflow, ray nor torch: results can be read (and reports built) from a copy of
results/<study>/ on any machine with pandas and pyarrow.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from pydantic import ValidationError

from bkd_sweep.config import LINKED_PREFIX, SearchConfig
from bkd_sweep.storage import Location, is_remote
from bkd_sweep.tracking.rebuild import RebuildReport, rebuild_tables
from bkd_sweep.tracking.schema import PARAM_PREFIX
from bkd_sweep.tracking.store import (
    STUDY_FILE,
    TABLES_DIR,
    TRIALS_FILE,
    ResultStore,
    read_study_json,
)

STATUSES = ("completed", "pruned", "failed")


@dataclass
class Results:
    """One study's stored results: trials (one row per trial), epochs (per trial and epoch)."""

    directory: Path | str  # the study folder: a Path, or its URI on an object store
    trials: pd.DataFrame
    study: dict[str, Any] | None  # study.json (the validated Study), None if absent
    read_epochs: Callable[..., pd.DataFrame] = field(repr=False, compare=False)  # (columns)
    _epochs: pd.DataFrame | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def epochs(self) -> pd.DataFrame:
        """One row per (trial, epoch), read when first asked for (the summary needs none)."""
        if self._epochs is None:
            self._epochs = self.read_epochs()
        return self._epochs

    @property
    def name(self) -> str:
        return (self.study or {}).get("name") or Location.of(self.directory).name

    @property
    def seeds(self) -> list[int] | None:
        """The seeds the study asked for (None when study.json is missing)."""
        search = (self.study or {}).get("search") or {}
        return search.get("seeds")

    def config_columns(self) -> list[str]:
        """Columns that define a configuration: the searched params (linked groups too)
        except seed.

        From study.json when it validates, else the param columns (but seed) that vary.
        """
        search = (self.study or {}).get("search")
        try:
            paths = None if search is None else configuration_params(
                SearchConfig.model_validate(search))
        except ValidationError:  # a study.json of another version: judge by the values
            paths = None
        if paths is not None:
            cols = [PARAM_PREFIX + p for p in paths]
            return [c for c in cols if c in self.trials.columns]
        return [c for c in self.trials.columns
                if c.startswith(PARAM_PREFIX) and c != PARAM_PREFIX + "seed"
                and self.trials[c].nunique(dropna=False) > 1]


def configuration_params(search: SearchConfig) -> list[str]:
    """The parameter paths whose values make one configuration: every searched parameter,
    linked groups included (``linked.<group>``, stored as ``param.linked.<group>``); never
    seed, the one a configuration's results are averaged over. The summary and the report
    group by these. space.all_params in its order, without importing optuna (readers stay
    light)."""
    paths = [*(LINKED_PREFIX + name for name in search.linked), *search.params]
    return [p for p in paths if p != "seed"]


def study_location(name_or_dir: str | os.PathLike | Location,
                   results_root: Path | None = None) -> Location:
    """The study folder named by a directory, an object-store URI (``s3://bucket/prefix/x``)
    or a study name under ``results_root`` (default ./results). Raises FileNotFoundError
    naming the studies that exist when a name is not found."""
    if isinstance(name_or_dir, Location) or is_remote(name_or_dir):
        return Location.of(name_or_dir)
    path = Path(name_or_dir)
    if _names_a_folder(name_or_dir) and path.is_dir():
        return Location.of(path)
    root = Path(results_root) if results_root is not None else Path.cwd() / "results"
    directory = root / str(name_or_dir)
    if not directory.is_dir():
        known = sorted(p.name for p in root.iterdir() if _holds_results(p)) \
            if root.is_dir() else []
        hint = f"; studies there: {', '.join(known)}" if known else "; none stored there"
        raise FileNotFoundError(f"no results for {str(name_or_dir)!r}: {directory} does not "
                                f"exist{hint}")
    return Location.of(directory)


def _names_a_folder(name_or_dir: str | os.PathLike) -> bool:
    """Whether the argument means a folder rather than a study name: a Path, text with a
    path separator (or . / ..), or a folder here that holds results. A bare name is a study
    under the results root even when an unrelated folder here has that name (./reports)."""
    if not isinstance(name_or_dir, str):
        return True
    separators = ("/", os.sep, *(os.altsep or ""))
    return any(s in name_or_dir for s in separators) or name_or_dir in (".", "..") \
        or _holds_results(Path(name_or_dir))


def _holds_results(folder: Path) -> bool:
    return any((folder / name).exists() for name in (TRIALS_FILE, STUDY_FILE, TABLES_DIR))


def load(name_or_dir: str | os.PathLike | Location, results_root: Path | None = None
         ) -> Results:
    """Load results by directory or object-store URI (if ``name_or_dir`` is one) or by study
    name under ``results_root`` (default ./results). Raises FileNotFoundError naming what
    exists; DamagedFileError (one line, with the repair command) for a damaged file."""
    location = study_location(name_or_dir, results_root)
    store = ResultStore(location)
    directory = location.local_path if location.is_local else location.uri
    return Results(directory=directory, trials=store.read_trials(),
                   study=read_study_json(location), read_epochs=store.read_epochs)


def rebuild(name_or_dir: str | os.PathLike | Location, results_root: Path | None = None
            ) -> RebuildReport:
    """Rebuild a study's Parquet tables from its per-trial records (``bkd-sweep results
    --rebuild``): damaged files moved aside, missing rows re-recorded, snapshots rewritten."""
    return rebuild_tables(study_location(name_or_dir, results_root))


def summary_table(results: Results) -> str:
    """A terminal table: per configuration, trial count, status counts, test top-1 mean ± std and
    mean energy over completed trials; then totals. ``*`` marks fewer completed seeds than
    the study asked for."""
    df = results.trials
    counts = {s: int((df["status"] == s).sum()) for s in STATUSES}
    title = (f"{results.name}: {len(df)} trials ("
             + ", ".join(f"{n} {s}" for s, n in counts.items()) + f") in {results.directory}")
    if df.empty:
        return title + "\nno finished trials yet"
    cols = results.config_columns()
    wanted = len(results.seeds) if results.seeds else None
    top1 = "metric.test_top1"  # schema v1 files are upgraded to it on load
    header = [c.removeprefix(PARAM_PREFIX) for c in cols] + [
        "n", *STATUSES, "test top1 %", "energy mJ"]
    cells = _per_configuration(df, cols, top1)
    short = wanted is not None and any(seeds < wanted for seeds in cells["seeds"])
    body = [[*(_fmt_value(v) for v in key),
             str(n), f"{done}{'*' if wanted is not None and seeds < wanted else ''}",
             str(pruned), str(failed), _mean_std(mean, std, count), _fmt_num(energy)]
            for key, n, done, seeds, pruned, failed, mean, std, count, energy in zip(
                cells["key"], cells["n"], cells["completed"], cells["seeds"], cells["pruned"],
                cells["failed"], cells["mean"], cells["std"], cells["count"], cells["energy"])]
    best = _best_configuration(cells)
    total = ["total"] + [""] * (len(cols) - 1) if cols else ["total"]
    if not cols:
        header, body = ["config"] + header, [["all"] + row for row in body]
    footer = [*total, str(len(df)), *(str(counts[s]) for s in STATUSES), best, ""]
    lines = [title, *_render(header, body, footer)]
    if short:
        lines.append(f"* fewer completed seeds than the study's {wanted}")
    return "\n".join(lines)


def _render(header: list[str], body: list[list[str]], footer: list[str]) -> list[str]:
    rows = [header, *body, footer]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    numeric = [all(_is_numberish(r[i]) for r in body) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(header), rule, *(line(r) for r in body), rule, line(footer)]


def _is_numberish(text: str) -> bool:
    return text == "-" or text[:1].isdigit() or text[:1] == "-" and text[1:2].isdigit()


VAL_TOP1 = "metric.val_top1"  # what selects (schema v2); older files have none


def _per_configuration(df: pd.DataFrame, cols: list[str], top1: str) -> dict[str, list]:
    """Per configuration (sorted; every row one group when there are no config columns):
    its key tuple, trial count, status counts, completed seeds, and mean/std/count of test
    top-1 and mean energy over them (a seed run twice counts once, as its latest run). One
    grouped aggregation, not a Python loop over groups."""
    done = (df["status"] == "completed") & ~df.index.isin(repeated_runs(df))
    frame = pd.DataFrame({
        **{s: (df["status"] == s).astype("int64") for s in STATUSES},
        "seeds": done.astype("int64"),
        "top1": _floats(df[top1]).where(done),
        "val": (_floats(df[VAL_TOP1]).where(done) if VAL_TOP1 in df.columns
                else pd.Series(math.nan, index=df.index)),
        "energy": _floats(df["metric.energy_mj"]).where(done)})
    for col in cols:
        frame[col] = df[col]
    if cols:
        grouped = frame.groupby(cols, dropna=False, sort=True)
    else:
        grouped = frame.groupby(pd.Series(0, index=frame.index), sort=False)
    agg = grouped.agg(n=("completed", "size"), completed=("completed", "sum"),
                      seeds=("seeds", "sum"),
                      pruned=("pruned", "sum"), failed=("failed", "sum"),
                      mean=("top1", "mean"), std=("top1", "std"), count=("top1", "count"),
                      energy=("energy", "mean"), val=("val", "mean"))
    keys = [k if isinstance(k, tuple) else (k,) for k in agg.index] if cols else [()]
    return {"key": keys, **{name: agg[name].tolist() for name in agg.columns}}


def repeated_runs(df: pd.DataFrame) -> pd.Index:
    """Completed rows superseded by a later completed run of the same (config_id, seed):
    Optuna records a completed trial without an objective value as FAIL and --retry-failed
    runs it again. Empty for results older than configuration ids."""
    if not {"config_id", "seed", "finished_at"} <= set(df.columns):
        return df.index[:0]
    done = df[(df["status"] == "completed") & df["config_id"].notna()]
    done = done.sort_values("finished_at", kind="stable")
    return done.index[done.duplicated(["config_id", "seed"], keep="last")]


def retried_failures(df: pd.DataFrame) -> pd.Index:
    """Failed rows whose (config_id, seed) also has a completed run (--retry-failed ran it
    again): that seed is in the results, so nothing of it was dropped. Empty for results
    older than configuration ids."""
    if not {"config_id", "seed"} <= set(df.columns):
        return df.index[:0]
    known = df["config_id"].notna()
    failed = df[(df["status"] == "failed") & known]
    done = df[(df["status"] == "completed") & known]
    pairs = pd.MultiIndex.from_frame(done[["config_id", "seed"]])
    return failed.index[pd.MultiIndex.from_frame(failed[["config_id", "seed"]]).isin(pairs)]


def _best_configuration(cells: dict[str, list]) -> str:
    """The test top-1 mean of the configuration val selects (best mean val top-1 over its
    seeds), never the luckiest test value; by test mean only for results without val. A
    tie on val goes to more seeds, then to the first configuration (as the report's cells),
    never to the better test mean."""
    pairs = [(val, mean, count) for val, mean, count in zip(cells["val"], cells["mean"],
                                                            cells["count"])
             if not math.isnan(mean)]
    if not pairs:
        return "-"
    by_val = [p for p in pairs if not math.isnan(p[0])]
    _, mean, _ = (max(by_val, key=lambda p: (p[0], p[2])) if by_val
                  else max(pairs, key=lambda p: p[1]))
    return f"best {mean:.2f}"


def _floats(column: pd.Series) -> pd.Series:
    """A numeric column as plain float64 (nullable NA -> NaN), for numpy aggregations."""
    return pd.Series(column.to_numpy(dtype="float64", na_value=math.nan), index=column.index)


def _mean_std(mean: float, std: float, count: int) -> str:
    """"mean ± std" over ``count`` values (ddof 1); one value alone; "-" for none."""
    if not count:
        return "-"
    if count == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def _fmt_num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    return f"{value:.4g}"


def _fmt_value(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return str(value)
