"""The engine's registry of secrets: every credential it resolves is masked in all output.

Credentials are registered the moment a database URL is resolved — the
password always, and every part of the connection (user, host, database)
that came from a Kubernetes Secret, since a Secret's keys can be pointed at
any of its values. :func:`scrub` then masks them, and anything shaped like
a credential (:func:`revisor.contract.redact`), in every text that leaves
the process: progress lines, JSON logs, the result document, history rows,
error messages. The CLI edge, the log pipeline and the result writer all
call it.
"""

from __future__ import annotations

from revisor.contract import redact

_secrets: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Remember a secret so :func:`scrub` removes it from all later output."""
    if secret:
        _secrets.add(secret)


def forget_secrets() -> None:
    """Forget registered secrets (tests run many URLs in one process)."""
    _secrets.clear()


def scrub(text: str) -> str:
    """``text`` with every registered secret and credential-shaped value replaced by ``***``."""
    return redact(text, _secrets)
