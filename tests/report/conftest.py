"""Fixtures for the report tests; the builders live in report_fixtures.py."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.report import report_fixtures


@pytest.fixture
def fixture_results(tmp_path: Path) -> Path:
    """results/fixture/ with the hand-made values of report_fixtures.TOP1 / ENERGY."""
    return report_fixtures.fixture_results_dir(tmp_path / "results" / "fixture")


@pytest.fixture(scope="session")
def fixture_results_dir() -> Callable[..., Path]:
    """``fixture_results_dir(results_dir, **report)``: the fixture study written anywhere."""
    return report_fixtures.fixture_results_dir


@pytest.fixture(scope="session")
def make_large_results() -> Callable[..., Path]:
    """``make_large_results(results_dir, n_trials=1000, seed=0)``: a big synthetic study."""
    return report_fixtures.make_large_results


@pytest.fixture(scope="session")
def two_mode_results_dir() -> Callable[..., Path]:
    """``two_mode_results_dir(results_dir, mixed, none)``: none vs mixed, a trial per top1."""
    return report_fixtures.two_mode_results_dir
