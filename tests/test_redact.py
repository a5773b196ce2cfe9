"""Credentials are hidden wherever values are written."""

from __future__ import annotations

import pytest

from bkd_sweep.redact import HIDDEN, is_secret_name, redact_params, redact_text, redact_value


@pytest.mark.parametrize("uri,shown", [
    ("s3://AKIAXYZ:wJalr/Kx+y@minio.local:9000/bucket/p",  # AWS secrets hold slashes
     "s3://AKIAXYZ:***@minio.local:9000/bucket/p"),
    ("postgresql://mlflow:hunter2@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
    ("http://user:p%40ss@host:5000", "http://user:***@host:5000"),
    ("sqlite:////abs/path/mlflow.db", "sqlite:////abs/path/mlflow.db"),
    ("/data/cifar10", "/data/cifar10"),
])
def test_uri_passwords_are_hidden(uri, shown):
    assert redact_value(uri) == shown
    assert redact_text(f"tracking at {uri} ok") == f"tracking at {shown} ok"


def test_secret_names_hide_their_values():
    assert is_secret_name("AWS_SECRET_ACCESS_KEY") and is_secret_name("tracking.token")
    assert is_secret_name("MLFLOW_TRACKING_PASSWORD") and is_secret_name("RAY_AUTH_TOKEN")
    assert not is_secret_name("data.root") and not is_secret_name("distill.blur_ratio")
    params = {"data.root": "/data", "storage.secret_key": "abc123", "tracking.mlflow_uri":
              "http://u:pw@h:5000", "distill.blur_ratio": 0.15, "env.api_key": ""}
    assert redact_params(params) == {"data.root": "/data", "storage.secret_key": HIDDEN,
                                     "tracking.mlflow_uri": "http://u:***@h:5000",
                                     "distill.blur_ratio": 0.15, "env.api_key": ""}


def test_nested_values_are_walked():
    tree = {"env": {"AWS_ACCESS_KEY_ID": "AKIA", "HOME": "/root"},
            "uris": ["http://a:b@c", "plain"]}
    assert redact_value(tree) == {"env": {"AWS_ACCESS_KEY_ID": HIDDEN, "HOME": "/root"},
                                  "uris": ["http://a:***@c", "plain"]}


def test_secret_query_parameters_are_hidden_and_the_rest_kept():
    uri = ("s3://bucket/x?access_key=AKIA1&secret_key=S2&region=us-east-1&session_token=T3"
           "&endpoint_override=localhost:9000")
    shown = redact_text(f"error: storage {uri}: bad")
    assert "AKIA1" not in shown and "S2" not in shown and "T3" not in shown
    assert (f"?access_key={HIDDEN}&secret_key={HIDDEN}&region=us-east-1&session_token={HIDDEN}"
            "&endpoint_override=localhost:9000: bad") in shown
    assert redact_value(uri).count(HIDDEN) == 3
    assert redact_text("a?b=c&d=") == "a?b=c&d="  # nothing secret, nothing changed


@pytest.mark.parametrize("text,shown", [
    ("https://ghp_abc123@github.com/o/r.git", "https://***@github.com/o/r.git"),  # a token user
    ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),  # an empty user
    # what pathlib.Path makes of a URI in an error message: one slash after the scheme
    ("data root s3:/AKIAEX:wJalrXU@127.0.0.1:9000/bucket does not exist",
     "data root s3:/AKIAEX:***@127.0.0.1:9000/bucket does not exist"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00d&sig=beef&v=2",
     "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&sig=***&v=2"),
    ("http://mlflow:5000/#/experiments", "http://mlflow:5000/#/experiments"),  # nothing secret
])
def test_tokens_in_uris_are_hidden(text, shown):
    assert redact_text(text) == shown


def test_names_that_merely_contain_sig_are_not_secrets():
    assert not is_secret_name("design") and not is_secret_name("signal_ratio")
    assert is_secret_name("sig") and is_secret_name("X-Amz-Signature")
