"""Deterministic names: the same desired state always gets the same Job name.

The Job's name is the operator's memory. It is derived from the resource's
name, its generation and a short hash of the spec and of the scripts'
content, so that

* an operator restarted mid-run computes the name of the Job it already
  created and adopts it (the API answers 409 AlreadyExists to a second
  create, never a duplicate run);
* a change to the scripts alone (a ConfigMap edited in place, same
  generation) yields a new name, hence a new run;
* ``kubectl get jobs`` shows which generation each run served.

Pure functions only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: Job names are label values (``job-name``) on their pods: at most 63 characters.
MAX_NAME = 63
HASH_CHARS = 6


def fingerprint_config_map(*, data: Mapping[str, str], binary_data: Mapping[str, str]) -> str:
    """A sha256 of a ConfigMap's content: every key and value, order-independent."""
    digest = hashlib.sha256()
    for section, items in (("data", data), ("binaryData", binary_data)):
        for key in sorted(items):
            digest.update(f"{section}\0{key}\0".encode())
            digest.update(items[key].encode())
            digest.update(b"\0")
    return digest.hexdigest()


def fingerprint_run(*, spec: Mapping[str, Any], scripts: str) -> str:
    """A sha256 of what one run depends on: the spec as stored and the scripts' fingerprint."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{canonical}\0{scripts}".encode()).hexdigest()


def job_name(*, migration: str, generation: int, fingerprint: str) -> str:
    """``<migration>-g<generation>-<hash>``, shortened on the left part to fit 63 characters."""
    suffix = f"-g{generation}-{fingerprint[:HASH_CHARS]}"
    base = migration[: MAX_NAME - len(suffix)].rstrip("-.")
    return f"{base}{suffix}"
