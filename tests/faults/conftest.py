"""Fault-injection fixtures; the shared Ray instance lives in tests/conftest.py."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.faults import faulty as faulty_module


@pytest.fixture(scope="session")
def faulty() -> ModuleType:
    """The real run_trial with injected faults (tests/faults/faulty.py)."""
    return faulty_module
