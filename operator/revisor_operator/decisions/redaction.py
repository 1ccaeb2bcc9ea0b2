"""Keep passwords out of everything the operator writes: status, Events, logs.

The engine already masks what it prints, but a message can reach us by other
roads (a pod's last log lines, an API error echoing a URL, a user's own
script raising with its connection string). Every human-facing string goes
through :func:`redact` — the engine's own redaction function, from the Job
contract, so the two sides mask the same shapes — before it leaves the
operator.
"""

from __future__ import annotations

from revisor.contract import redact

__all__ = ["redact", "shorten"]


def shorten(text: str, *, limit: int = 1024) -> str:
    """``text`` cut to ``limit`` characters (keeping both ends: the cause is often last)."""
    if len(text) <= limit:
        return text
    half = max(limit // 2 - 2, 0)
    return f"{text[:half]} … {text[-half:]}"
