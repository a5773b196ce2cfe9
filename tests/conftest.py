"""Fixtures shared across test folders.

Helpers reach tests only as fixtures: a folder's own helpers in its conftest.py, helpers that
several folders use here. Only conftest files import helper modules, by package path
(``tests.<folder>.<module>``; pyproject's ``pythonpath`` puts the root on sys.path)."""

from __future__ import annotations

import logging
import os
from types import ModuleType

import pytest

from tests.data import dataset_files as dataset_files_module
from tests.servers import s3 as s3_module


@pytest.fixture(scope="session")
def ray_session():
    """One Ray instance for the whole session (ray.init costs seconds and ~1 GB, so the engine
    and fault-injection tests share it). Tests using it must be marked ``ray``."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    from bkd_sweep.engine.ray_setup import shutdown_ray

    shutdown_ray()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One real S3-compatible server process (moto) for the session: its endpoint URL. Tests
    using it must be marked ``server``; ``s3_env`` points the AWS variables at it."""
    with s3_module.moto_server(tmp_path_factory.mktemp("moto") / "server.log") as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The standard AWS variables pointing at the session's S3 server; returns a function
    ``bucket(name) -> endpoint`` that creates the bucket if needed."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    for name, value in s3_module.ACCESS.items():
        monkeypatch.setenv(name, value)

    def bucket(name: str) -> str:
        s3_module.ensure_bucket(s3_server, name)
        return s3_server

    return bucket


@pytest.fixture(scope="session")
def dataset_files() -> ModuleType:
    """Writers of tiny datasets in their real on-disk formats (tests/data/dataset_files.py),
    used by the data and trial tests: ``dataset_files.write_cifar10(root)``."""
    return dataset_files_module


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts Ray must say so: `make test-fast` deselects by marker."""
    unmarked = [item.nodeid for item in items
                if "ray_session" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("ray") is None]
    if unmarked:
        raise pytest.UsageError("tests use the ray_session fixture without the `ray` marker: "
                                + ", ".join(unmarked))
