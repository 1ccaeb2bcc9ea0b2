"""Mask passwords in any text: the one redaction function of engine and operator.

Two kinds of knowledge, applied in this order:

1. **Known secrets** (``secrets``): values the caller knows are secret — the
   engine registers every credential it resolved, and every part of a
   connection that came from a Kubernetes Secret. Each is masked wherever it
   appears, raw and in the forms it takes on the way out: URL-encoded, as a
   SQL literal (``'`` doubled), JSON- and repr-escaped.
2. **Shapes** of credentials, for text nobody registered (a driver's error
   echoing a connection string, a user's script raising with one, a pod's
   last log lines read by the operator):

   * ``scheme://user:password@host`` — the password runs to the ``@`` that
     is followed by a host, so passwords holding ``@``, ``:`` or spaces are
     masked whole;
   * ``password=…`` in libpq strings, query strings (also percent-encoded:
     ``%70assword=``) and logs, quoted or not, and ``sslpassword``,
     ``passwd``, ``pwd``, ``secret``, ``token`` the same way;
   * ``'password': '…'`` in a Python ``repr`` or JSON;
   * ``PASSWORD '…'`` in SQL (``CREATE/ALTER ROLE``), ``IDENTIFIED BY '…'``
     (MySQL).

Pure: the registry of secrets lives in the engine (:mod:`revisor.redaction`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
#: Registered values shorter than this are not masked on their own: masking
#: every "db" or "5432" would garble messages and protect nothing.
MIN_SECRET_LENGTH = 3

_SCHEME = r"[a-zA-Z][a-zA-Z0-9+.\-]*://"
# The host after the password's "@": a name, an IPv4/IPv6 address, or a socket
# path's start, then the end of the authority (port, path, query, end of text).
# A host already masked (a known secret: it came from a Secret) is still a host.
_HOST_AFTER = r"(?=(?:[\w.\-~%*]+|\[[0-9a-fA-F:.]+\])(?::\d*)?(?:[/?#,;\s'\")\]]|$))"
_URL_PASSWORD = re.compile(
    rf"(?P<head>{_SCHEME}[^:/@\s]*:)(?P<pw>[^\n]{{0,256}}?)@{_HOST_AFTER}",
)


def _spelled(word: str) -> str:
    """A regex for ``word`` in any case, each letter also percent-encoded."""
    parts = []
    for char in word:
        codes = {f"%{ord(c):02x}" for c in (char.lower(), char.upper())}
        codes |= {code.upper() for code in codes}
        parts.append("(?:" + "|".join([re.escape(char), *sorted(codes)]) + ")")
    return "".join(parts)


_WORDS = ("password", "passwd", "pwd", "secret", "token")
_ANY_KEY = "(?:" + "|".join(_spelled(w) for w in _WORDS) + ")"
_PASSWORD_KEY = "(?:" + "|".join(_spelled(w) for w in _WORDS[:3]) + ")"
_VALUE = r"(?P<value>'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|[^\s\"',;&)}\]]+)"
# The key may carry a prefix or suffix (sslpassword, PGPASSWORD, client_secret)
# and quotes; the value is a quoted string (spaces and escaped quotes inside)
# or a bare token. "=" after any credential word; ":" only after a quoted key
# (JSON, a Python repr) or a password word ("password: x" in YAML or a log):
# "SecretNotFound: Secret shop-db ..." is a sentence, not a credential.
_KEY_VALUE = re.compile(
    rf"(?P<key>(?<![A-Za-z0-9])(?:[\w\-]*{_ANY_KEY}[\w\-]*\s*=\s*"
    rf"|(?P<q>['\"])[\w\-]*{_ANY_KEY}[\w\-]*(?P=q)\s*:\s*"
    rf"|[\w\-]*{_PASSWORD_KEY}[\w\-]*\s*:\s*))" + _VALUE,
    re.IGNORECASE,
)
# SQL: CREATE/ALTER ROLE|USER ... [ENCRYPTED] PASSWORD 'x'; MySQL's IDENTIFIED BY 'x'.
# Only inside such a statement: "revision identified by 'ffff'" is Alembic prose.
_SQL_PASSWORD = re.compile(
    r"(?P<key>\b(?:ROLE|USER)\b[^;]{0,300}?\b(?:PASSWORD|IDENTIFIED\s+(?:WITH\s+\S+\s+)?BY)\s+)"
    r"(?P<value>'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")",
    re.IGNORECASE,
)


def _forms(secret: str) -> set[str]:
    """The ways ``secret`` can be spelled in output."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        # How SQLAlchemy writes a password into a URL it renders (URL.render_as_string),
        # e.g. the sqlalchemy.url Revisor hands an env.py: spaces and "+" left as they are.
        quote(secret, safe=" +"),
        secret.replace("'", "''"),
        json.dumps(secret)[1:-1],
        repr(secret)[1:-1],
    }
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


#: Known secrets shorter than this are masked only as whole words: a user
#: named "app" leaves "application" alone.
WHOLE_WORD_BELOW = 8


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret and every credential-shaped value replaced by ``***``."""
    forms: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            forms |= _forms(secret)
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= WHOLE_WORD_BELOW:
            text = text.replace(form, MASK)
        else:
            text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(form)}(?![A-Za-z0-9_])", MASK, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    text = _SQL_PASSWORD.sub(lambda m: f"{m['key']}'{MASK}'", text)
    return _KEY_VALUE.sub(_mask_value, text)


def _mask_value(match: re.Match[str]) -> str:
    value = match["value"]
    quote_char = value[0] if value[:1] in ("'", '"') and len(value) > 1 else ""
    return f"{match['key']}{quote_char}{MASK}{quote_char}"
