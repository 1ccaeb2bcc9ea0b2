"""A database's schema as a sorted list of normalised statements, to compare two databases.

PostgreSQL: ``pg_dump --schema-only`` without ownership or privileges, the
``revisor_*`` tables left out (``-T``). SQL comments, ``SET`` lines,
``set_config`` calls and psql meta-commands (``\\restrict``) are dropped, each
statement is put on one line with its whitespace collapsed, and the statements
are sorted: pg_dump orders objects by dependency and name, so the sort only
makes a difference readable.

SQLite: ``sqlite_master``'s SQL for every table, index, view and trigger (the
``revisor_*`` tables and SQLite's own left out), whitespace collapsed, double
quotes around identifiers dropped (``ALTER TABLE ... RENAME`` and batch
migrations quote names that ``CREATE TABLE`` wrote bare), and the table-level
constraints of a ``CREATE TABLE`` sorted. Alembic's batch mode rebuilds a table
from a set of constraints, so their order changes with ``PYTHONHASHSEED``: two
runs of the same project's own tool differ there, and nowhere else. Columns
keep their order. A default in parentheses around a single constant
(``DEFAULT (CURRENT_TIMESTAMP)``, which a batch rebuild writes for what
``CREATE TABLE`` wrote as ``DEFAULT CURRENT_TIMESTAMP``) loses them: SQLite
reads both the same.

MariaDB: ``SHOW CREATE TABLE`` / ``SHOW CREATE VIEW`` of everything but the
``revisor_*`` tables, and the triggers and routines from ``information_schema``,
each on one line; the secondary keys of a table with a primary key sorted
(:func:`mysql_schema` says why).
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pymysql
from sqlalchemy.engine import make_url

EXCLUDED_PREFIX = "revisor_"
_TABLE_CONSTRAINT = re.compile(r"^(CONSTRAINT|PRIMARY KEY|UNIQUE|FOREIGN KEY|CHECK)\b", re.I)
_DOLLAR_QUOTE = re.compile(r"\$[A-Za-z_]*\$")
_MYSQL_KEY = re.compile(r"^(UNIQUE |FULLTEXT |SPATIAL )?KEY ")
_PARENTHESISED_DEFAULT = re.compile(
    r"DEFAULT\((CURRENT_TIMESTAMP|CURRENT_DATE|CURRENT_TIME|'[^']*'|-?[0-9]+(?:\.[0-9]+)?)\)", re.I
)


def schema_of(url: str) -> list[str]:
    """The normalised schema of the database at ``url`` (any driver of any backend)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return sqlite_schema(Path(parsed.database or ""))
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        return mysql_schema(url)
    return postgres_schema(url)


def mysql_schema(url: str) -> list[str]:
    """``SHOW CREATE`` of every table and view, and every trigger and routine, but ``revisor_*``.

    Each ``CREATE TABLE`` on one line, its columns in order. Its secondary
    keys are sorted when the table has a primary key: ``SHOW CREATE TABLE``
    lists them in the order they were created, which says nothing about the
    table (InnoDB clusters on the primary key), and ``op.create_table(...,
    sa.Index(...), sa.Index(...))`` creates them in the order of a set hashed
    by identity, which two runs of the project's own tool need not share.
    """
    parsed = make_url(url)
    conn = pymysql.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
        database=parsed.database,
    )
    statements: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME NOT LIKE %s",
                (EXCLUDED_PREFIX.replace("_", "\\_") + "%",),
            )
            for name, kind in cur.fetchall():
                cur.execute(f"SHOW CREATE {'VIEW' if kind == 'VIEW' else 'TABLE'} `{name}`")
                statements.append(normalise_mysql_sql(str(cur.fetchone()[1])))
            cur.execute(
                "SELECT TRIGGER_NAME, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, ACTION_TIMING, "
                "ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()"
            )
            statements += [_one_line("TRIGGER", row) for row in cur.fetchall()]
            cur.execute(
                "SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION FROM "
                "information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()"
            )
            statements += [_one_line("ROUTINE", row) for row in cur.fetchall()]
    finally:
        conn.close()
    return sorted(statements)


def _one_line(kind: str, row: tuple[object, ...]) -> str:
    return " ".join(f"{kind} {' '.join(map(str, row))}".split())


def normalise_mysql_sql(sql: str) -> str:
    lines = [line.strip().rstrip(",") for line in sql.splitlines()]
    if len(lines) < 3 or not lines[0].startswith("CREATE TABLE"):
        return " ".join(sql.split())
    head, items, tail = lines[0], lines[1:-1], lines[-1]
    if any(item.startswith("PRIMARY KEY") for item in items):
        keys = sorted(item for item in items if _MYSQL_KEY.match(item))
        rest = iter(keys)
        items = [next(rest) if _MYSQL_KEY.match(item) else item for item in items]
    return " ".join(f"{head} {', '.join(items)} {tail}".split())


def postgres_schema(url: str) -> list[str]:
    parsed = make_url(url)
    pg_dump = shutil.which("pg_dump") or _server_binary("pg_dump")
    env = {**os.environ, "PGPASSWORD": parsed.password or ""}
    out = subprocess.run(
        [pg_dump, "--schema-only", "--no-owner", "--no-privileges",
         f"--exclude-table={EXCLUDED_PREFIX}*",
         "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432),
         "-U", parsed.username or "postgres", parsed.database or "postgres"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    statements: list[str] = []
    current: list[str] = []
    in_dollar_quote = False
    for line in out.splitlines():
        if not current and (
            not line.strip()
            or line.startswith(("--", "\\", "SET ", "SELECT pg_catalog.set_config("))
        ):
            continue
        current.append(line.strip())
        if len(_DOLLAR_QUOTE.findall(line)) % 2:
            in_dollar_quote = not in_dollar_quote
        if not in_dollar_quote and line.rstrip().endswith(";"):
            statements.append(" ".join(" ".join(current).split()))
            current = []
    if current:
        statements.append(" ".join(" ".join(current).split()))
    return sorted(statements)


def _server_binary(name: str) -> str:
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise RuntimeError(f"PostgreSQL's {name!r} was not found on PATH or under /usr/lib/postgresql")


def sqlite_schema(path: Path) -> list[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "AND tbl_name NOT LIKE ? ESCAPE '\\'",
            (EXCLUDED_PREFIX.replace("_", "\\_") + "%",),
        ).fetchall()
    finally:
        con.close()
    return sorted(f"{kind} {name}: {normalise_sqlite_sql(sql)}" for kind, name, _, sql in rows)


def normalise_sqlite_sql(sql: str) -> str:
    text = _collapse(sql)
    match = re.match(r"(?is)^(CREATE TABLE [^(]+)\((.*)\)$", text)
    if not match:
        return text
    head, body = match.groups()
    items = _split_top_level(body)
    columns = [item for item in items if not _TABLE_CONSTRAINT.match(item)]
    constraints = sorted(item for item in items if _TABLE_CONSTRAINT.match(item))
    return f"{head.strip()} ({', '.join(columns + constraints)})"


def _collapse(sql: str) -> str:
    """Whitespace collapsed, no space inside or before parentheses and commas, bare names."""
    text = " ".join(sql.split())
    text = re.sub(r'"([A-Za-z_][A-Za-z0-9_$]*)"', r"\1", text)
    text = re.sub(r"\s*\(\s*", "(", text)
    text = re.sub(r"\s*\)", ")", text)
    text = _PARENTHESISED_DEFAULT.sub(r"DEFAULT \1", text)
    return re.sub(r"\s*,\s*", ",", text)


def _split_top_level(body: str) -> list[str]:
    """``a INT, CHECK(x IN (1,2))`` → the items separated by commas outside parentheses/quotes."""
    items: list[str] = []
    depth, start, quote = 0, 0, ""
    for i, char in enumerate(body):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(body[start:i].strip())
            start = i + 1
    items.append(body[start:].strip())
    return [item for item in items if item]


def difference(expected: list[str], actual: list[str], *, names: tuple[str, str]) -> str:
    """A unified diff of two schemas, empty when they are equal."""
    return "\n".join(
        difflib.unified_diff(expected, actual, fromfile=names[0], tofile=names[1], lineterm="", n=0)
    )
