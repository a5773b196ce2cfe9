"""Fixtures shared across test folders: one Ray instance for the whole session (ray.init
costs seconds and ~1 GB, so the engine and fault-injection tests share it)."""

from __future__ import annotations

import logging
import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


