"""Engine test fixtures; the shared Ray instance lives in tests/conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the fakes module (pickled by value)

from fakes import FakeTracker  # noqa: E402


@pytest.fixture
def fake_tracker():
    return FakeTracker()
