"""Engine test fixtures; the shared Ray instance lives in tests/conftest.py."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.engine import fakes as fakes_module


@pytest.fixture(scope="session")
def fakes() -> ModuleType:
    """Fast stand-ins for run_trial (tests/engine/fakes.py): ``fakes.curve_trial`` ..."""
    return fakes_module


@pytest.fixture
def fake_tracker() -> fakes_module.FakeTracker:
    return fakes_module.FakeTracker()
