"""The live schema as one normalized, ordered, hashed document: what drift compares.

A snapshot is read with SQLAlchemy's inspector, in one schema (the version
table's), and keeps what a migration decides and a hand-made change could
alter: tables; columns (the type as the dialect compiles it, nullability,
server default, computed and identity settings); primary keys; indexes
(columns or expressions, uniqueness, dialect options such as a partial
index's WHERE); unique, check and foreign-key constraints; views (and
PostgreSQL's materialized views) with their definitions; sequences; and
PostgreSQL's enum types with their labels.

Everything is keyed by name (unnamed constraints, as SQLite reflects them,
by what they constrain), so the document does not depend on the order the
catalog returns things in; :func:`canonical` is its JSON with sorted keys
and :func:`digest` that JSON's sha256. Two schemas have the same hash
exactly when their documents are equal.

Reading is cheap where SQLAlchemy batches reflection (PostgreSQL: one
catalog query per kind of object for all tables) and one query or a few per
table elsewhere; ``bench`` numbers are in the README. What SQLAlchemy does
not reflect is not seen: expression indexes on SQLite and MySQL, MySQL's
column-level CHECKs, comments, grants, triggers, functions.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: Bumped whenever what a snapshot holds, or how, changes: a snapshot of
#: another format is never compared (it would show differences that are only
#: the format's), it is recorded again.
FORMAT = 1

Document = dict[str, Any]


@dataclass(frozen=True)
class SchemaSnapshot:
    """A normalized schema document; :attr:`text` is canonical and :attr:`hash` its sha256."""

    document: Mapping[str, Any]

    @cached_property
    def text(self) -> str:
        return canonical(self.document)

    @cached_property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def format(self) -> int:
        value = self.document.get("format")
        return value if isinstance(value, int) else 0

    @property
    def tables(self) -> int:
        return len(self.document.get("tables") or {})

    @classmethod
    def from_text(cls, text: str) -> SchemaSnapshot:
        """A snapshot stored as :attr:`text`; :class:`ValueError` if it is not one."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a schema snapshot: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("tables"), dict):
            raise ValueError("not a schema snapshot: it has no tables")
        return cls(document)


def canonical(document: Mapping[str, Any]) -> str:
    """The document's JSON with sorted keys and no spaces: one text per schema."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(document: Mapping[str, Any]) -> str:
    """sha256 of :func:`canonical`: the schema's hash."""
    return hashlib.sha256(canonical(document).encode()).hexdigest()


def take_snapshot(
    conn: Connection, *, schema: str | None, skip: Collection[str] = ()
) -> SchemaSnapshot:
    """Read the schema ``schema`` (None: the connection's default) into a snapshot.

    ``skip`` names tables left out (Revisor's own and the version table),
    compared case-insensitively as SQLite and MySQL compare names. Reads
    only; ends the read transaction, so nothing is held afterwards.
    """
    with warnings.catch_warnings():
        # "Did not recognize type", "Skipped unsupported reflection of
        # expression-based index": what SQLAlchemy cannot reflect is left
        # out of the snapshot on both sides alike, not warned of at every run.
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        try:
            return SchemaSnapshot(_read(conn, schema=schema, skip=skip))
        finally:
            conn.rollback()


def _read(conn: Connection, *, schema: str | None, skip: Collection[str]) -> Document:
    insp = sa.inspect(conn)
    skipped = {name.casefold() for name in skip}
    names = sorted(n for n in insp.get_table_names(schema=schema) if n.casefold() not in skipped)
    tables: Document = {}
    owned: set[str] = set()
    if names:
        # Every table of the schema, not filter_names=names: a thousand names
        # become a thousand bound parameters, which cost more to send (psycopg
        # splits the query text at each) than Revisor's three tables cost to
        # reflect and drop.
        kw: dict[str, Any] = {"schema": schema}
        columns = insp.get_multi_columns(**kw)
        primary_keys = insp.get_multi_pk_constraint(**kw)
        indexes = insp.get_multi_indexes(**kw)
        uniques = _optional(insp.get_multi_unique_constraints, kw)
        checks = _optional(insp.get_multi_check_constraints, kw)
        foreign_keys = _optional(insp.get_multi_foreign_keys, kw)
        dialect = conn.dialect
        owned = _owned_sequences(columns)
        for name in names:
            key = (schema, name)
            tables[name] = {
                "columns": {c["name"]: _column(c, dialect) for c in columns.get(key, ())},
                "primaryKey": _primary_key(primary_keys.get(key)),
                "indexes": _keyed(
                    _index(i) for i in indexes.get(key, ()) if not i.get("duplicates_constraint")
                ),
                "uniqueConstraints": _keyed(
                    _unique(u) for u in uniques.get(key, ()) if not u.get("duplicates_index")
                ),
                "checkConstraints": _keyed(_check(c) for c in checks.get(key, ())),
                "foreignKeys": _keyed(_foreign_key(f) for f in foreign_keys.get(key, ())),
            }
    views: Document = {}
    for view in _names(insp.get_view_names, schema):
        views[view] = {"definition": _squash(insp.get_view_definition(view, schema=schema))}
    for view in _names(insp.get_materialized_view_names, schema):
        definition = _squash(insp.get_view_definition(view, schema=schema))
        views[view] = {"definition": definition, "materialized": True}
    enums: Document = {}
    get_enums: Callable[..., list[dict[str, Any]]] | None = getattr(insp, "get_enums", None)
    if get_enums is not None:  # PostgreSQL's own types; elsewhere an enum is a column's type
        for enum in get_enums(schema=schema):
            enums[enum["name"]] = list(enum["labels"])
    return {
        "format": FORMAT,
        "tables": tables,
        "views": views,
        "sequences": [
            name for name in _names(insp.get_sequence_names, schema) if name not in owned
        ],
        "enums": enums,
    }


_NEXTVAL = re.compile(r"nextval\('([^']+)'")


def _owned_sequences(columns: Mapping[Any, Sequence[Any]]) -> set[str]:
    """Sequences that belong to a column of any table, Revisor's included.

    A serial column's (its default calls ``nextval``) and an identity
    column's (``<table>_<column>_seq``): they come and go with their table
    and are part of its column, not schema objects of their own.
    """
    owned: set[str] = set()
    for (_schema, table), table_columns in columns.items():
        for column in table_columns:
            found = _NEXTVAL.search(str(column.get("default") or ""))
            if found:
                owned.add(found.group(1).rpartition(".")[2].strip('"'))
            if column.get("identity"):
                owned.add(f"{table}_{column['name']}_seq")
    return owned


def _optional(
    reflect: Callable[..., Mapping[Any, Sequence[Any]]], kw: Mapping[str, Any]
) -> Mapping[Any, Sequence[Any]]:
    """A kind of object a dialect may not reflect at all: none of it, then."""
    try:
        return reflect(**kw)
    except NotImplementedError:
        return {}


def _names(reflect: Callable[..., list[str]], schema: str | None) -> list[str]:
    try:
        return sorted(reflect(schema=schema))
    except NotImplementedError:
        return []


def _squash(text: object) -> str | None:
    """Whitespace collapsed: the catalog's line breaks are not the schema."""
    return None if text is None else " ".join(str(text).split())


def _type_text(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> str:
    """The type as the dialect writes it in DDL (``VARCHAR(20)``, ``mood``)."""
    try:
        return str(type_.compile(dialect=dialect))
    except (sa.exc.CompileError, NotImplementedError):
        return type(type_).__name__.upper()  # a type SQLAlchemy did not recognize


def _column(column: Mapping[str, Any], dialect: sa.Dialect) -> Document:
    out: Document = {
        "type": _type_text(column["type"], dialect),
        "nullable": bool(column.get("nullable", True)),
        "default": _squash(column.get("default")),
    }
    computed = column.get("computed")
    if computed:
        out["computed"] = {
            "sqltext": _squash(computed.get("sqltext")),
            "persisted": computed.get("persisted"),
        }
    identity = column.get("identity")
    if identity:
        out["identity"] = {k: _plain(v) for k, v in sorted(identity.items())}
    return out


def _primary_key(pk: Mapping[str, Any] | None) -> Document | None:
    if not pk or not pk.get("constrained_columns"):
        return None
    return {"name": pk.get("name"), "columns": list(pk["constrained_columns"])}


def _options(raw: Mapping[str, Any] | None) -> Document:
    """Dialect options that say something (PostgreSQL reflects empty ones)."""
    return {k: _plain(v) for k, v in sorted((raw or {}).items()) if v not in (None, [], {}, "")}


def _plain(value: Any) -> Any:
    """A JSON value: numbers, booleans and text as they are, lists as lists, the rest as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _index(index: Mapping[str, Any]) -> tuple[str, Document]:
    expressions: Sequence[str | None] = index.get("expressions") or ()
    columns = [
        column
        if column is not None
        else (expressions[i] if i < len(expressions) else None) or "<expression>"
        for i, column in enumerate(index.get("column_names") or ())
    ]
    entry: Document = {
        "name": index.get("name"),
        "columns": columns,
        "unique": bool(index.get("unique")),
    }
    options = _options(index.get("dialect_options"))
    if options:
        entry["options"] = options
    return _key(entry, f"({', '.join(columns)})"), entry


def _unique(unique: Mapping[str, Any]) -> tuple[str, Document]:
    columns = list(unique.get("column_names") or ())
    entry: Document = {"name": unique.get("name"), "columns": columns}
    options = _options(unique.get("dialect_options"))
    if options:
        entry["options"] = options
    return _key(entry, f"({', '.join(columns)})"), entry


def _check(check: Mapping[str, Any]) -> tuple[str, Document]:
    entry: Document = {"name": check.get("name"), "sqltext": _squash(check.get("sqltext"))}
    return _key(entry, f"({entry['sqltext']})"), entry


def _foreign_key(fk: Mapping[str, Any]) -> tuple[str, Document]:
    entry: Document = {
        "name": fk.get("name"),
        "columns": list(fk.get("constrained_columns") or ()),
        "referredSchema": fk.get("referred_schema"),
        "referredTable": fk.get("referred_table"),
        "referredColumns": list(fk.get("referred_columns") or ()),
    }
    options = _options(fk.get("options"))
    if options:
        entry["options"] = options
    what = (
        f"({', '.join(entry['columns'])}) -> {entry['referredTable']}"
        f"({', '.join(entry['referredColumns'])})"
    )
    return _key(entry, what), entry


def _key(entry: Mapping[str, Any], what: str) -> str:
    """An object's key: its name, or what it constrains when it has none."""
    name = entry.get("name")
    return str(name) if name else what


def _keyed(entries: Iterable[tuple[str, Document]]) -> Document:
    return dict(sorted(entries, key=lambda pair: pair[0]))
