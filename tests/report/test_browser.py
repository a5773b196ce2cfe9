"""The report page in headless Chromium: DOM holds the tables, every image decoded."""

from __future__ import annotations

import pytest

from bkd_sweep.report import build_report
from bkd_sweep.report.browser_check import check_in_browser, find_chromium

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(find_chromium() is None, reason="chromium not installed")]


def test_index_renders_in_headless_chromium(fixture_results, tmp_path) -> None:
    out = build_report(fixture_results, tmp_path / "report")
    shot = tmp_path / "shot.png"
    check = check_in_browser(out.index_html, screenshot=shot)
    assert check.ok, check.problems
    assert check.title == "bkd-sweep report: fixture"
    assert check.tables == 4  # main results, ablation, energy, pareto
    assert check.images_total == 3 and check.images_loaded == 3
    assert check.screenshot == shot.resolve()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_broken_image_is_reported(fixture_results, tmp_path) -> None:
    out = build_report(fixture_results, tmp_path / "report")
    page = out.index_html.read_text(encoding="utf-8")
    broken = tmp_path / "report" / "broken.html"
    broken.write_text(page.replace("data:image/png;base64,", "missing.png#", 1),
                      encoding="utf-8")
    check = check_in_browser(broken, screenshot=tmp_path / "b.png")
    assert not check.ok
    assert check.images_total == 3 and check.images_loaded == 2
    assert any("2 of 3" in p for p in check.problems)
