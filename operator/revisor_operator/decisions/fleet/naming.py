"""Names a set gives: its children, their label values, its query Jobs, and its rollout's hash.

A child's name is the set's memory of which target it is: an operator
restarted mid-rollout computes the same names and finds the children (and
through them their Jobs) instead of making new ones. Target names are
anything a Secret, a list entry or a schema may be called (upper case,
``_``, ``$``, 253 characters), while a child's name ends up in label values
and Job names: so a child is ``<set>-<target>-<hash>``, both parts made
DNS-safe and cut to fit 63 characters, and the hash of the set's and the
target's full names keeps two targets that read alike apart (``Tenant_A``
and ``tenant-a``) and the children of two sets too.

Pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

MAX_NAME = 63
HASH_CHARS = 10
SET_PART = 24
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NOT_DNS = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """``text`` in lower-case letters, digits and single hyphens (possibly empty)."""
    return _NOT_DNS.sub("-", text.lower()).strip("-")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def child_name(*, set_name: str, target: str) -> str:
    """The child ``DatabaseMigration`` of ``target``: a DNS-1123 label of at most 63 characters."""
    digest = _digest("child", set_name, target)[:HASH_CHARS]
    head = slug(set_name)[:SET_PART].strip("-") or "set"
    room = MAX_NAME - len(head) - len(digest) - 2
    middle = slug(target)[:room].strip("-")
    return f"{head}-{middle}-{digest}" if middle else f"{head}-{digest}"


def label_safe(text: str) -> str:
    """``text`` as a label value: itself when it is one, else a readable part and a hash."""
    if len(text) <= MAX_NAME and _LABEL_VALUE.match(text):
        return text
    digest = _digest("label", text)[:HASH_CHARS]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[: MAX_NAME - HASH_CHARS - 1]
    readable = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", readable)
    return f"{readable}-{digest}" if readable else digest


def query_job_name(*, set_name: str, round_: int, page: int) -> str:
    """The Job that fetches page ``page`` of round ``round_`` of a set's schemas query."""
    digest = _digest("query", set_name)[:6]
    tail = f"-{digest}-q{round_}-p{page}"
    head = slug(set_name)[: MAX_NAME - len(tail)].strip("-") or "set"
    return f"{head}{tail}"


def rollout_hash(
    *, template: Mapping[str, Any], scripts: str, annotations: Mapping[str, str]
) -> str:
    """What a rollout is: the template as stored, the scripts, and the set's own re-run marks.

    Not the targets (a target joining or leaving does not restart the rollout)
    and not how it rolls out (waves, ``maxParallel``, the failure policy,
    ``paused``): changing those steers the rollout in progress.
    ``annotations`` are the set's ``revisor.dev/retry`` and
    ``revisor.dev/release`` (a Helm release is a rollout of its own).
    """
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    marks = json.dumps(dict(sorted(annotations.items())), separators=(",", ":"))
    return _digest("rollout", canonical, scripts, marks)


def spec_key(spec: Mapping[str, Any]) -> str:
    """A short hash of a child's spec as the set builds it (before the API adds defaults)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return _digest("spec", canonical)[:16]
