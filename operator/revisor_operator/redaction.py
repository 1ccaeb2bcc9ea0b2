"""Keep passwords out of everything the operator writes: status, Events, logs.

The engine already masks what it prints, but a message can reach us by other
roads (a pod's last log lines, an API error echoing a URL, a user's own
script raising with its connection string). Every human-facing string goes
through :func:`redact` before it leaves the operator.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@host -> scheme://user:***@host. The password part
# runs to the last "@" before the host so that passwords containing "@" or
# ":" are masked whole.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^\s]*)@")
# password=..., PGPASSWORD: ..., "password": "...", pwd=...
_KEY_VALUE = re.compile(
    r"(?P<key>\b[\w\-]*(?:password|passwd|pwd|secret|token)[\w\-]*\"?\s*[=:]\s*\"?)"
    r"(?P<value>[^\s\"',;&]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with database passwords and password-like values replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m.group('key')}{MASK}", text)


def shorten(text: str, *, limit: int = 1024) -> str:
    """``text`` cut to ``limit`` characters (keeping both ends: the cause is often last)."""
    if len(text) <= limit:
        return text
    half = max(limit // 2 - 2, 0)
    return f"{text[:half]} … {text[-half:]}"
