"""Open a report's index.html in headless Chromium and check it really renders offline.

``check_in_browser(index)`` loads the page from disk (file://, no server, no network), dumps
the DOM after load, and reads what the page's inline script recorded: how many <img> decoded
(complete and naturalWidth > 0) and how many report tables exist. It also takes a screenshot.
Run as ``python -m bkd_sweep.report.browser_check reports/<study>/index.html``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-dev-shm-usage", "--hide-scrollbars", "--virtual-time-budget=10000")


@dataclass(frozen=True)
class BrowserCheck:
    """What the headless browser saw. ``ok``: loaded, every image decoded, tables present."""

    ok: bool
    title: str
    tables: int  # <figure class="bkd-table"> tables the DOM holds
    images_total: int
    images_loaded: int
    screenshot: Path | None
    problems: tuple[str, ...] = field(default_factory=tuple)


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(binary: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="bkd-chromium-") as profile:
        return subprocess.run([binary, *_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


def _attr(dom: str, name: str) -> str | None:
    match = re.search(r"<html\b[^>]*\b" + re.escape(name) + r'="([^"]*)"', dom)
    return match.group(1) if match else None


def check_in_browser(index_html: Path, *, screenshot: Path | None = None,
                     chromium: str | None = None, timeout: float = 60.0,
                     window: tuple[int, int] = (1200, 1600)) -> BrowserCheck:
    """Render ``index_html`` headless; raise FileNotFoundError when no Chromium is installed.

    The screenshot goes to ``screenshot`` (default: a new temporary file that is kept).
    """
    index_html = Path(index_html).resolve()
    if not index_html.exists():
        raise FileNotFoundError(index_html)
    binary = chromium or find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium found (apt-get install -y chromium)")
    url = index_html.as_uri()
    problems: list[str] = []
    dumped = _run(binary, ["--dump-dom", url], timeout)
    dom = dumped.stdout
    if dumped.returncode != 0 or "<html" not in dom:
        problems.append(f"--dump-dom failed (rc {dumped.returncode}): "
                        f"{dumped.stderr.strip()[-300:]}")
    title_match = re.search(r"<title>(.*?)</title>", dom, re.S)
    title = title_match.group(1).strip() if title_match else ""
    ready = _attr(dom, "data-ready") == "1"
    total = int(_attr(dom, "data-images-total") or 0)
    loaded = int(_attr(dom, "data-images-loaded") or 0)
    tables = len(re.findall(r'<figure class="bkd-table"', dom))
    if not ready:
        problems.append("the page's load script did not run (no data-ready on <html>)")
    if total == 0:
        problems.append("no images on the page")
    if loaded < total:
        problems.append(f"only {loaded} of {total} images decoded")
    if tables == 0:
        problems.append("no report tables in the DOM")
    if screenshot is None:
        screenshot = Path(tempfile.mkdtemp(prefix="bkd-shot-")) / "index.png"
    screenshot = Path(screenshot).resolve()
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    shot = _run(binary, [f"--screenshot={screenshot}", f"--window-size={window[0]},{window[1]}",
                         url], timeout)
    if shot.returncode != 0 or not screenshot.exists() or screenshot.stat().st_size == 0:
        problems.append(f"screenshot failed (rc {shot.returncode})")
        shot_path = None
    else:
        shot_path = screenshot
    return BrowserCheck(ok=not problems, title=title, tables=tables, images_total=total,
                        images_loaded=loaded, screenshot=shot_path, problems=tuple(problems))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m bkd_sweep.report.browser_check INDEX_HTML [SCREENSHOT_PNG]")
        return 2
    result = check_in_browser(Path(args[0]), screenshot=Path(args[1]) if len(args) > 1 else None)
    print(f"ok={result.ok} title={result.title!r} tables={result.tables} "
          f"images={result.images_loaded}/{result.images_total} screenshot={result.screenshot}")
    for problem in result.problems:
        print(f"problem: {problem}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
