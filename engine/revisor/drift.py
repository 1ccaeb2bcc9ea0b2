"""Drift: the live schema against the snapshot recorded for its revision, in lines a person acts on.

Each difference is one line: ``+`` is in the database and not in the
snapshot (added by hand), ``-`` is in the snapshot and gone from the
database, ``~`` changed, old value first::

    + index ix_orders_note on orders(note)
    ~ column orders.status: VARCHAR(20) -> VARCHAR(40)
    - table audit_log
    ~ column orders.note: nullable -> NOT NULL

A table that appears or disappears is one line, not one per column.
``--ignore`` patterns (:func:`without_ignored`) leave objects out of both
sides before anything is compared or hashed, so the hashes of a comparison
are equal exactly when it finds no difference.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from revisor.schema_snapshot import Document, SchemaSnapshot, digest

#: The keys of a snapshot's document this module knows how to describe.
_TOP = ("tables", "views", "sequences", "enums")
_TABLE = ("columns", "primaryKey", "indexes", "uniqueConstraints", "checkConstraints",
          "foreignKeys")  # fmt: skip
#: A view's definition, an enum's labels: cut to this in a line.
_VALUE_CHARS = 60


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing a recorded snapshot with the live schema."""

    recorded_hash: str
    live_hash: str
    differences: tuple[str, ...]

    @property
    def drifted(self) -> bool:
        return bool(self.differences)


def compare(
    recorded: SchemaSnapshot, live: SchemaSnapshot, *, ignore: Sequence[str] = ()
) -> Comparison:
    """Compare two snapshots, leaving out what ``ignore`` matches on both sides."""
    old = without_ignored(recorded.document, ignore)
    new = without_ignored(live.document, ignore)
    old_hash, new_hash = digest(old), digest(new)
    found = differences(old, new)
    if old_hash != new_hash and not found:
        # Every part of a document is described below; this only guards
        # against saying "no drift" while the hashes say otherwise.
        found = ["~ schema: differs in a way not described (compare the hashes)"]
    return Comparison(recorded_hash=old_hash, live_hash=new_hash, differences=tuple(found))


def without_ignored(document: Mapping[str, Any], patterns: Sequence[str]) -> Document:
    """``document`` without the objects ``patterns`` match (``fnmatch``, case-sensitive).

    A pattern is matched against a table's name (then nothing of the table
    is compared), ``table.column``, the name of an index or a constraint
    (also as ``table.name``), and the names of views, sequences and enums.
    """
    if not patterns:
        return dict(document)

    def hit(*names: object) -> bool:
        return any(
            isinstance(name, str) and fnmatchcase(name, pattern)
            for name in names
            for pattern in patterns
        )

    tables: Document = {}
    for table, body in (document.get("tables") or {}).items():
        if hit(table):
            continue
        kept = dict(body)
        kept["columns"] = {
            name: column
            for name, column in (body.get("columns") or {}).items()
            if not hit(f"{table}.{name}")
        }
        pk = body.get("primaryKey")
        if pk and pk.get("name") and hit(pk["name"], f"{table}.{pk['name']}"):
            kept["primaryKey"] = None
        for kind in _TABLE[2:]:
            kept[kind] = {
                key: entry
                for key, entry in (body.get(kind) or {}).items()
                if not (entry.get("name") and hit(entry["name"], f"{table}.{entry['name']}"))
            }
        tables[table] = kept
    return {
        **document,
        "tables": tables,
        "views": {k: v for k, v in (document.get("views") or {}).items() if not hit(k)},
        "sequences": [s for s in document.get("sequences") or () if not hit(s)],
        "enums": {k: v for k, v in (document.get("enums") or {}).items() if not hit(k)},
    }


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Every difference between two documents, one line each, in a stable order."""
    out: list[str] = []
    old_tables, new_tables = old.get("tables") or {}, new.get("tables") or {}
    for name in sorted(old_tables.keys() | new_tables.keys()):
        if name not in new_tables:
            out.append(f"- table {name}")
        elif name not in old_tables:
            columns = new_tables[name].get("columns") or {}
            out.append(f"+ table {name} ({len(columns)} column{'s' if len(columns) != 1 else ''})")
        else:
            out += _table(name, old_tables[name], new_tables[name])
    out += _views(old.get("views") or {}, new.get("views") or {})
    old_seq, new_seq = set(old.get("sequences") or ()), set(new.get("sequences") or ())
    out += [f"+ sequence {s}" for s in sorted(new_seq - old_seq)]
    out += [f"- sequence {s}" for s in sorted(old_seq - new_seq)]
    out += _enums(old.get("enums") or {}, new.get("enums") or {})
    for key in sorted((old.keys() | new.keys()) - {*_TOP, "format"}):
        if old.get(key) != new.get(key):
            out.append(f"~ {key}: {_json(old.get(key))} -> {_json(new.get(key))}")
    return out


def _table(table: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = _columns(table, old.get("columns") or {}, new.get("columns") or {})
    out += _primary_key(table, old.get("primaryKey"), new.get("primaryKey"))
    out += _objects(table, "index", old.get("indexes"), new.get("indexes"), _index_text)
    out += _objects(
        table,
        "unique constraint",
        old.get("uniqueConstraints"),
        new.get("uniqueConstraints"),
        lambda t, e: f"{t}({_list(e.get('columns'))}){_options_text(e)}",
    )
    out += _objects(
        table,
        "check constraint",
        old.get("checkConstraints"),
        new.get("checkConstraints"),
        lambda t, e: f"{t}: {e.get('sqltext')}",
    )
    out += _objects(
        table, "foreign key", old.get("foreignKeys"), new.get("foreignKeys"), _foreign_key_text
    )
    for key in sorted((old.keys() | new.keys()) - set(_TABLE)):
        if old.get(key) != new.get(key):
            out.append(f"~ table {table}: {key} {_json(old.get(key))} -> {_json(new.get(key))}")
    return out


def _columns(table: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name in sorted(old.keys() | new.keys()):
        label = f"{table}.{name}"
        if name not in new:
            out.append(f"- column {label}")
            continue
        after = new[name]
        if name not in old:
            text = f"+ column {label} {after.get('type')}"
            text += "" if after.get("nullable", True) else " NOT NULL"
            default = after.get("default")
            out.append(text + (f" DEFAULT {default}" if default is not None else ""))
            continue
        before = old[name]
        for field in sorted(before.keys() | after.keys(), key=_column_field_order):
            was, now = before.get(field), after.get(field)
            if was == now:
                continue
            if field == "type":
                out.append(f"~ column {label}: {was} -> {now}")
            elif field == "nullable":
                out.append(f"~ column {label}: {_nullable(was)} -> {_nullable(now)}")
            elif field == "default":
                out.append(f"~ column {label}: {_default(was)} -> {_default(now)}")
            else:
                out.append(f"~ column {label}: {field} {_json(was)} -> {_json(now)}")
    return out


def _column_field_order(field: str) -> tuple[int, str]:
    return ({"type": 0, "nullable": 1, "default": 2}.get(field, 3), field)


def _nullable(value: object) -> str:
    return "nullable" if value in (True, None) else "NOT NULL"


def _default(value: object) -> str:
    return "no default" if value is None else f"default {value}"


def _primary_key(table: str, old: Any, new: Any) -> list[str]:
    if old == new:
        return []
    if not new:
        return [f"- primary key of {table} ({_list(old.get('columns'))})"]
    if not old:
        return [f"+ primary key on {table}({_list(new.get('columns'))})"]
    out = []
    if old.get("columns") != new.get("columns"):
        out.append(
            f"~ primary key of {table}: ({_list(old.get('columns'))}) -> "
            f"({_list(new.get('columns'))})"
        )
    if old.get("name") != new.get("name"):
        out.append(f"~ primary key of {table}: named {old.get('name')} -> {new.get('name')}")
    return out


def _objects(
    table: str,
    kind: str,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    describe: Callable[[str, Mapping[str, Any]], str],
) -> list[str]:
    """Indexes or constraints of one table, keyed by name (or, unnamed, by what they cover)."""
    old, new = old or {}, new or {}
    out: list[str] = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if before is None or after is None:
            entry = after if before is None else before
            assert entry is not None
            sign = "+" if before is None else "-"
            out.append(f"{sign} {_label(kind, entry)} on {describe(table, entry)}")
            continue
        label = f"{_label(kind, after)} on {table}"
        for field in sorted(before.keys() | after.keys()):
            was, now = before.get(field), after.get(field)
            if was == now:
                continue
            if field == "columns":
                out.append(f"~ {label}: ({_list(was)}) -> ({_list(now)})")
            elif field == "unique":
                out.append(f"~ {label}: {_unique(was)} -> {_unique(now)}")
            elif field == "sqltext":
                out.append(f"~ {label}: {was} -> {now}")
            else:
                out.append(f"~ {label}: {field} {_json(was)} -> {_json(now)}")
    return out


def _label(kind: str, entry: Mapping[str, Any]) -> str:
    if kind == "index" and entry.get("unique"):
        kind = "unique index"
    name = entry.get("name")
    return f"{kind} {name}" if name else kind


def _unique(value: object) -> str:
    return "unique" if value else "not unique"


def _index_text(table: str, entry: Mapping[str, Any]) -> str:
    return f"{table}({_list(entry.get('columns'))}){_options_text(entry)}"


def _foreign_key_text(table: str, entry: Mapping[str, Any]) -> str:
    schema = entry.get("referredSchema")
    target = f"{schema}.{entry.get('referredTable')}" if schema else entry.get("referredTable")
    return (
        f"{table}({_list(entry.get('columns'))}) -> {target}({_list(entry.get('referredColumns'))})"
        f"{_options_text(entry)}"
    )


def _options_text(entry: Mapping[str, Any]) -> str:
    options = entry.get("options") or {}
    if not options:
        return ""
    return " [" + ", ".join(f"{k}={_plain_text(v)}" for k, v in sorted(options.items())) + "]"


def _views(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        entry = after if after is not None else before
        kind = "materialized view" if entry and entry.get("materialized") else "view"
        if before is None:
            out.append(f"+ {kind} {name}")
        elif after is None:
            out.append(f"- {kind} {name}")
        else:
            was, now = before.get("definition"), after.get("definition")
            if was != now:
                out.append(f"~ {kind} {name}: {_cut(str(was))} -> {_cut(str(now))}")
            if before.get("materialized") != after.get("materialized"):
                out.append(f"~ view {name}: materialized {_json(before.get('materialized'))} -> "
                           f"{_json(after.get('materialized'))}")  # fmt: skip
    return out


def _enums(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            out.append(f"+ enum {name} {_labels(after)}")
        elif after is None:
            out.append(f"- enum {name}")
        else:
            out.append(f"~ enum {name}: {_labels(before)} -> {_labels(after)}")
    return out


def _labels(labels: Any) -> str:
    return _cut("(" + ", ".join(repr(str(label)) for label in labels or ()) + ")")


def _list(values: Any) -> str:
    return ", ".join(str(v) for v in values or ())


def _plain_text(value: Any) -> str:
    return value if isinstance(value, str) else _json(value)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _cut(text: str) -> str:
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"
