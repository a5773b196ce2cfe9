"""How the Parquet store scales (not a test: run by hand, it writes ~20,000 files).

    PYTHONPATH=$PWD python -m tests.tracking.bench_store [--trials 10000] [--where DIR|s3://...]

Prints the median time of a real upsert into a study of 10 trials and of N trials (their
ratio should stay near 1: recording a trial writes only its own files), then, on N trials,
the time to read before and after compact(), of compact() itself and of `bkd-sweep results`.
The study is filled fast with synthetic parts (the same rows, other trial ids), not upserts.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow as pa

from bkd_sweep.storage import Location
from bkd_sweep.tracking import ResultStore
from bkd_sweep.tracking.parquet_files import parquet_bytes
from bkd_sweep.tracking.rows import epoch_rows, trial_row
from bkd_sweep.tracking.schema import EPOCHS_SCHEMA, trials_schema
from bkd_sweep.tracking.tables import EPOCHS, TRIALS
from tests.tracking.conftest import make_record, make_study

PARAMS = {"distill.mode": "bkd", "student.timesteps": 4}


def _fill(location: Location, template, first: int, last: int) -> None:
    """Parts for trials first..last-1 (the template's rows under other ids), unsynced."""
    row = trial_row(template, study="bench")
    epochs = pa.Table.from_pylist(epoch_rows(template), schema=EPOCHS_SCHEMA)
    trials = pa.Table.from_pylist([row], schema=trials_schema())
    for kind in (EPOCHS, TRIALS):
        location.makedirs(*kind.parts_dir)
    for n in range(first, last):
        tid = f"t{n:04d}"
        ids = pa.array([tid] * epochs.num_rows, pa.string())
        one = trials.set_column(0, "trial_id", pa.array([tid])).set_column(
            1, "trial_number", pa.array([n], pa.int64()))
        for kind, table in ((EPOCHS, epochs.set_column(0, "trial_id", ids)), (TRIALS, one)):
            with location.fs.open_output_stream(location.file(*kind.part(tid))) as out:
                out.write(parquet_bytes(table))  # no fsync: filling, not measuring


def _upserts(store: ResultStore, template, first: int, count: int) -> float:
    """Median seconds of ``count`` real upserts of new trials from number ``first``."""
    times = []
    for n in range(first, first + count):
        record = dataclasses.replace(template, trial_id=f"t{n:04d}", trial_number=n)
        start = time.perf_counter()
        store.upsert(record, mlflow_run_id=f"run-{n}")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--where", help="a study folder (default: a temp dir)")
    parser.add_argument("--samples", type=int, default=21)
    args = parser.parse_args()
    study = make_study("bench")
    template = make_record(study, 0, PARAMS, 0)
    where = args.where or tempfile.mkdtemp(prefix="bkd-bench-") + "/bench"
    location = Location.of(where)
    store = ResultStore(location)
    location.write_text(study.model_dump_json(), "study.json")
    n, k = args.trials, args.samples
    _fill(location, template, 0, 9)
    small = _upserts(store, template, 9, k)  # upserts #10 .. #10+k-1
    _fill(location, template, 9 + k, n - 1)
    large = _upserts(store, template, n - 1, k)  # upserts #N .. #N+k-1
    total = n - 1 + k
    print(f"upsert median: {small * 1e3:.1f} ms at trial 10, {large * 1e3:.1f} ms at trial "
          f"{n}: ratio {large / small:.2f}")
    print(f"read, {total} trials, no snapshot: {_timed(store.read):.2f} s")
    print(f"compact: {_timed(store.compact):.2f} s")
    print(f"read, {total} trials, snapshot: {_timed(store.read):.2f} s")
    cli = [sys.executable, "-m", "bkd_sweep.cli", "results", where]
    wall = _timed(lambda: subprocess.run(cli, check=True, capture_output=True))
    print(f"bkd-sweep results (process wall time): {wall:.2f} s")
    print(f"folder: {where}")


if __name__ == "__main__":
    main()
