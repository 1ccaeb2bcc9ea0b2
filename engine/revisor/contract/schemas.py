"""A page of ``revisor schemas``: tenant schema names, as the operator reads them back.

The answer of a schemas query travels the one way a Job can answer: the
result document in the pod's termination message, at most
:data:`~revisor.contract.MAX_RESULT_BYTES`. A thousand tenants do not fit,
so the engine answers in pages: the names after ``--after NAME`` that fit,
how many remain after them, and the sha256 of the *whole* sorted list, so
that the operator can tell a list that changed between two pages from one
it read whole (:mod:`revisor_operator.decisions.fleet.schemas`).

Names travel compressed (:func:`encode_names`: zlib, then base64, of the
names one per line): sorted tenant names share their prefixes, so a page
holds thousands of typical ones. The operator keeps them in status the same
way. Compressed names are data, not text: scrubbing secrets out of them
would see nothing and could only corrupt them, so the result document leaves
them as they are (:data:`OPAQUE_DETAILS`). Pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

#: ``details`` key of a ``revisor schemas`` result (:class:`SchemaPage`).
SCHEMA_PAGE = "schemaPage"
#: ``details`` keys whose values are data a scrub must not touch.
OPAQUE_DETAILS = frozenset({SCHEMA_PAGE})
#: zlib's best: a page is a few KiB, compressed once per try of its size.
_COMPRESSION = 9
_HASH_LENGTH = 64


def encode_names(names: Iterable[str]) -> str:
    """``names``, one per line, zlib-compressed and base64-encoded (``""`` for none).

    A name may not be empty nor hold a line break: either would make the
    encoding ambiguous (:class:`ValueError`). PostgreSQL never returns a NUL
    in text, and a schema name is never empty.
    """
    listed = list(names)
    for name in listed:
        if not name or "\n" in name:
            raise ValueError(f"{name!r} cannot be encoded: empty, or it holds a line break")
    if not listed:
        return ""
    packed = zlib.compress("\n".join(listed).encode(), _COMPRESSION)
    return base64.b64encode(packed).decode("ascii")


def decode_names(text: str) -> list[str]:
    """The names :func:`encode_names` encoded; ``[]`` for ``""``.

    :class:`ValueError` when ``text`` is not such an encoding.
    """
    if not text:
        return []
    try:
        packed = base64.b64decode(text.encode("ascii"), validate=True)
        return zlib.decompress(packed).decode().split("\n")
    except (binascii.Error, zlib.error, UnicodeError) as exc:
        raise ValueError(f"not a list of encoded names: {exc}") from None


@dataclass(frozen=True)
class SchemaPage:
    """One page of a schemas query's answer: ``details["schemaPage"]`` of its result.

    ``names`` are the sorted names after the page's ``--after`` that fit the
    result document, ``remaining`` how many come after them, ``total`` how
    many the whole list has, and ``list_hash`` the whole sorted list's
    :meth:`hash_of` (the same on every page of an unchanged list).
    """

    names: tuple[str, ...]
    remaining: int
    total: int
    list_hash: str

    @staticmethod
    def hash_of(names: Sequence[str]) -> str:
        """The sha256 of ``names`` in their order, as a JSON array: no two lists share it."""
        text = json.dumps(list(names), ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_details(self) -> dict[str, Any]:
        return {
            SCHEMA_PAGE: {
                "names": encode_names(self.names),
                "count": len(self.names),
                "remaining": self.remaining,
                "total": self.total,
                "listHash": self.list_hash,
            }
        }

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> SchemaPage | None:
        """The page a result's details hold; None when they hold none, or a damaged one.

        The names may be encoded (as written) or a plain list; a count that
        does not match them says the page was cut, and is not a page.
        """
        raw = details.get(SCHEMA_PAGE)
        if not isinstance(raw, Mapping):
            return None
        names = _names(raw.get("names"))
        remaining, total, count = (raw.get(k) for k in ("remaining", "total", "count"))
        list_hash = raw.get("listHash")
        if (
            names is None
            or not _count(remaining)
            or not _count(total)
            or (count is not None and count != len(names))
            or not isinstance(list_hash, str)
            or len(list_hash) != _HASH_LENGTH
        ):
            return None
        return cls(names=tuple(names), remaining=remaining, total=total, list_hash=list_hash)


def _names(value: object) -> list[str] | None:
    if isinstance(value, str):
        try:
            return decode_names(value)
        except ValueError:
            return None
    if isinstance(value, list) and all(isinstance(n, str) for n in value):
        return list(value)
    return None


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
