"""The Secret and ConfigMap a resource refers to: which ones, and whether what exists will do.

The handlers read what :func:`needed` names (Secrets by their key names
only: values are dropped where they are read) into a :class:`References`;
:func:`missing` says, in a sentence a person can act on, what is not there
yet; :func:`scripts_fingerprint` is the part of a run's identity that the
scripts give (a ConfigMap's content, an image reference), so that new
scripts make a new run. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from .reasons import OperatorReason
from .spec import ConfigMapSource, ImageSource, MigrationSpec, UrlDatabase


@dataclass(frozen=True)
class Needed:
    """What to read for a spec: the Secret, and the ConfigMap when the scripts are in one."""

    secret: str
    config_map: str | None


@dataclass(frozen=True)
class SecretCheck:
    """Whether a Secret exists and which keys it has (names only, never values)."""

    name: str
    exists: bool
    keys: frozenset[str] = frozenset()
    #: Its resourceVersion: a new one after any change (a fixed password, say).
    version: str = ""


@dataclass(frozen=True)
class ConfigMapCheck:
    """Whether a ConfigMap exists and the fingerprint of its content."""

    name: str
    exists: bool
    fingerprint: str = ""


@dataclass(frozen=True)
class References:
    secret: SecretCheck
    config_map: ConfigMapCheck | None = None


@dataclass(frozen=True)
class Missing:
    """A reference that is not there (yet): the reason and what to do about it."""

    reason: OperatorReason
    message: str


def needed(spec: MigrationSpec) -> Needed:
    """The Secret and (if any) ConfigMap ``spec`` refers to."""
    database = spec.database
    secret = database.url.secret if isinstance(database, UrlDatabase) else database.secret
    config_map = spec.source.name if isinstance(spec.source, ConfigMapSource) else None
    return Needed(secret=secret, config_map=config_map)


def scripts_fingerprint(spec: MigrationSpec, config_map: ConfigMapCheck | None) -> str | None:
    """What identifies the scripts a run uses; None while their ConfigMap does not exist."""
    source = spec.source
    if isinstance(source, ImageSource):
        return f"image\0{source.image}\0{source.path}"
    if config_map is None or not config_map.exists:
        return None
    return f"configmap\0{config_map.fingerprint}"


def missing(spec: MigrationSpec, references: References, *, namespace: str) -> Missing | None:
    """What is missing for ``spec`` to run (None: everything is there)."""
    source = spec.source
    config_map = references.config_map
    if isinstance(source, ConfigMapSource) and (config_map is None or not config_map.exists):
        return Missing(
            OperatorReason.CONFIG_MAP_NOT_FOUND,
            f"ConfigMap {namespace}/{source.name} not found: create it from the "
            f"revision files (kubectl -n {namespace} create configmap {source.name} "
            "--from-file=versions/) or fix spec.source.configMap.name",
        )
    secret = references.secret
    database = spec.database
    if not secret.exists:
        how = (
            f"with key {database.url.key!r} holding the database URL"
            if isinstance(database, UrlDatabase)
            else "with the connection parts " + ", ".join(repr(k) for k in database.keys.values())
        )
        return Missing(
            OperatorReason.SECRET_NOT_FOUND,
            f"Secret {namespace}/{secret.name} not found: create it {how}, or fix spec.database",
        )
    wanted = (
        {database.url.key}
        if isinstance(database, UrlDatabase)
        else {k for p, k in database.keys.items() if p not in database.optional_parts}
    )
    absent = sorted(wanted - secret.keys)
    if absent:
        return Missing(
            OperatorReason.SECRET_NOT_FOUND,
            f"Secret {namespace}/{secret.name} has no key "
            + ", ".join(repr(k) for k in absent)
            + ": add it to the Secret or point spec.database at the key that holds it",
        )
    return None
