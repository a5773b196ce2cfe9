"""Fixtures for the report tests; the builders live in report_fixtures.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fixtures import fixture_results_dir


@pytest.fixture
def fixture_results(tmp_path: Path) -> Path:
    """results/fixture/ with the hand-made values of report_fixtures.TOP1 / ENERGY."""
    return fixture_results_dir(tmp_path / "results" / "fixture")
