"""Trial-test fixtures: a real S3-compatible server (moto) for the object-store tests."""

from __future__ import annotations

import re

import pytest

BUCKET = "bkd-ckpt"


@pytest.fixture
def s3_endpoint(s3_server: str) -> str:
    """The session's S3 server process (tests/conftest.py)."""
    return s3_server


@pytest.fixture
def s3_root(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch,
            request: pytest.FixtureRequest) -> str:
    """``s3://bkd-ckpt/<test name>``: a fresh prefix of a real bucket, with the standard AWS
    variables pointing at the server (what a cluster's nodes would have set)."""
    import boto3

    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/{re.sub(r'[^A-Za-z0-9_-]+', '-', request.node.name)}"
