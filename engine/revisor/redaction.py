"""Keep secrets out of every output: logs, errors, results, history rows.

Passwords reach the engine inside database URLs. They are registered here
the moment a URL is resolved, and :func:`scrub` removes every registered
secret (and its URL-encoded form) from any text that leaves the process. The
CLI edge, the log pipeline and the result writer all call it, so a driver
error that happens to echo a connection string cannot leak it.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

MASK = "***"
_secrets: set[str] = set()

# user:password@ inside any URL-looking text, even one we never registered.
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@"
)
# password=... in libpq-style connection strings.
_KEYVALUE = re.compile(r"(?P<key>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)", re.IGNORECASE)


def register_secret(secret: str | None) -> None:
    """Remember a secret so :func:`scrub` removes it from all later output."""
    if secret and len(secret) >= 3:
        _secrets.update({secret, quote(secret, safe=""), quote_plus(secret)})


def forget_secrets() -> None:
    """Forget registered secrets (tests run many URLs in one process)."""
    _secrets.clear()


def scrub(text: str) -> str:
    """``text`` with every registered secret and URL password replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _KEYVALUE.sub(lambda m: f"{m['key']}{MASK}", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
