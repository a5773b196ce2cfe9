"""The 10,000-trial results set of bench/scale_store.py, kept between bench runs.

Building it through ``ResultStore.upsert`` takes minutes (10,000 upserts, then a snapshot),
and it is input, not a measurement: so it is kept in a cache folder (BKD_BENCH_CACHE, else
<temp dir>/bkd-sweep-bench-cache, ~0.7 GB) under a key made of the code and study that
shape it (the tracking package, records, storage, the set's generator and study). A change
to any of them, or ``BKD_BENCH_FRESH=1``, builds it again; only the current key is kept.
What the bench times on it (one more upsert, the snapshot after it, `results`, `report`)
is measured in every run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE_ENV, FRESH_ENV = "BKD_BENCH_CACHE", "BKD_BENCH_FRESH"
SHAPING = [REPO / "bkd_sweep" / "records.py", REPO / "bkd_sweep" / "storage.py",
           HERE / "scale_store.py", HERE / "studies" / "scale_10k.yaml"]
COMPLETE = "bench-set-complete"  # written last: a set without it is rebuilt


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir())
                / "bkd-sweep-bench-cache")


def set_key(trials: int, epochs: int) -> str:
    digest = hashlib.sha256(f"{trials}x{epochs}".encode())
    files = sorted((REPO / "bkd_sweep" / "tracking").glob("*.py")) + SHAPING
    for path in files:
        digest.update(path.name.encode() + (path.read_bytes() if path.exists() else b""))
    return f"scale-{trials}x{epochs}-{digest.hexdigest()[:12]}"


def cached_set(trials: int, epochs: int, root: Path | None = None) -> Path | None:
    """The complete cached set for this code, or None."""
    folder = (root or cache_root()) / set_key(trials, epochs)
    if os.environ.get(FRESH_ENV) or not (folder / COMPLETE).exists():
        return None
    return folder


def build_set(records, trials: int, fill, root: Path | None = None) -> tuple[Path, float]:
    """Build the set (``fill(folder, records, 0, trials)`` through upserts, then a snapshot
    as a finished sweep leaves it) in the cache, dropping same-size sets of other keys;
    (folder, seconds)."""
    from bkd_sweep.tracking import ResultStore

    root = root or cache_root()
    folder = root / set_key(trials, records.epochs)
    for old in root.glob(f"scale-{trials}x{records.epochs}-*") if root.exists() else ():
        shutil.rmtree(old, ignore_errors=True)
    start = time.perf_counter()
    records.write_study_json(folder)
    fill(folder, records, 0, trials)
    store = ResultStore(folder, study_name=records.study.name)
    if hasattr(store, "compact"):
        store.compact()
    (folder / COMPLETE).write_text(f"{trials} trials x {records.epochs} epochs\n")
    return folder, time.perf_counter() - start
