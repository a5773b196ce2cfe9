"""Credentials never leave the process: the one place that hides them.

Whatever is written to MLflow params, Parquet, logs, reports or job metadata goes through
``redact_value`` / ``redact_params``: a URI's ``user:password@`` part loses its password, and
a value whose name says it is a secret (key, token, password, secret, credential) is hidden.
"""

from __future__ import annotations

import re
from typing import Any

HIDDEN = "***"
_SECRET_NAME = re.compile(r"(pass(word|wd)?|secret|token|credential|api[_-]?key|access[_-]?key|"
                          r"private[_-]?key|auth|signature|^sig$)", re.IGNORECASE)
# scheme://user:password@host -> scheme://user:***@host; also an empty user (redis://:pw@h)
# and the one-slash form a pathlib.Path leaves of a URI (s3:/user:pw@h) in error messages
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*:/{1,2}[^/\s:@]*:)(?P<pw>[^@\s]+?)@")
# https://TOKEN@host: on the web a user name with no password is a token (GitHub, GitLab)
_WEB_TOKEN_USER = re.compile(r"(?P<head>https?://)(?P<user>[^/\s:@]+)@")
# s3://bucket/x?access_key=...&secret_key=...  ->  ?access_key=***&secret_key=***
_QUERY_VALUE = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s]*)")


def is_secret_name(name: str) -> bool:
    """A setting or variable whose name says it holds a secret (``AWS_SECRET_ACCESS_KEY``)."""
    return bool(_SECRET_NAME.search(name))


def redact_value(value: Any, name: str = "") -> Any:
    """``value`` with any URI password hidden; hidden entirely when ``name`` is a secret's."""
    if name and is_secret_name(name.rsplit(".", 1)[-1]) and value not in (None, ""):
        return HIDDEN
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


def redact_params(params: dict[str, Any]) -> dict[str, Any]:
    """A flat ``{dotted.path: value}`` mapping with every credential hidden."""
    return {path: redact_value(value, path) for path, value in params.items()}


def redact_text(text: str) -> str:
    """A log line or message with URI passwords and secret query parameters hidden."""
    text = _URI_PASSWORD.sub(lambda m: f"{m.group('head')}{HIDDEN}@", text)
    text = _WEB_TOKEN_USER.sub(lambda m: f"{m.group('head')}{HIDDEN}@", text)
    return _QUERY_VALUE.sub(lambda m: f"{m.group('head')}{HIDDEN}" if m.group("value")
                            and is_secret_name(m.group("name")) else m.group(0), text)
