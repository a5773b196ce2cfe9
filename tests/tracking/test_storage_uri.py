"""Object-store URIs with a query (``s3://bucket/prefix?endpoint_override=..&scheme=http``,
pyarrow's options): a child folder's URI names the child and keeps the options."""

from __future__ import annotations

import pytest

from bkd_sweep.storage import Location
from bkd_sweep.tracking import ResultStore

QUERY = "region=us-east-1&scheme=http"


def test_child_joins_the_path_before_the_query():
    root = Location.of(f"s3://bucket/prefix/?{QUERY}")
    assert root.uri == f"s3://bucket/prefix?{QUERY}"
    child = root.child("mystudy")
    assert child.uri == f"s3://bucket/prefix/mystudy?{QUERY}"
    assert child.path == "bucket/prefix/mystudy" and child.name == "mystudy"
    deeper = child.child("trials", "t0001")
    assert deeper.uri == f"s3://bucket/prefix/mystudy/trials/t0001?{QUERY}"
    again = Location.of(deeper.uri)  # what a worker gets: the URI, parsed anew
    assert (again.uri, again.path) == (deeper.uri, deeper.path)
    assert Location.of("s3://bucket/prefix").child("a").uri == "s3://bucket/prefix/a"


def test_the_teacher_cache_beside_a_query_root_keeps_its_options(monkeypatch):
    """Without them the cache would go to AWS's default endpoint, not the study's store."""
    from bkd_sweep.engine.runner import teacher_cache

    monkeypatch.delenv("BKD_CACHE_DIR", raising=False)
    study = Location.of(f"s3://bucket/prefix?{QUERY}").child("mystudy")
    assert teacher_cache(study) == f"s3://bucket/prefix/cache?{QUERY}"


@pytest.mark.server  # a moto S3 server process
def test_a_study_below_a_query_uri_is_stored_and_read(s3_env, study, make_record):
    endpoint = s3_env("bkd-query")
    host = endpoint.removeprefix("http://")
    root = Location.of(f"s3://bkd-query/sweeps?endpoint_override={host}&{QUERY}")
    folder = root.child(study.name).uri  # handed on as text, as to a worker
    ResultStore(folder).upsert(make_record(study, 4, {"distill.mode": "bkd"}, 1))
    trials = ResultStore(Location.of(folder)).read_trials()
    assert list(trials["trial_id"]) == ["t0004"] and list(trials["seed"]) == [1]
    listed = Location.of(root.uri).list_dirs()
    assert listed == [study.name]
