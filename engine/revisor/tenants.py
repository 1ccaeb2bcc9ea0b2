"""``revisor schemas``: the tenant schemas a read-only query names, a page at a time.

A DatabaseMigrationSet can take its targets from a query (``SELECT name FROM
tenants WHERE active``). The operator never connects to a database, so the
query runs here, in a Job, and its answer comes back in the result document,
which must fit a termination message (:data:`~revisor.contract.MAX_RESULT_BYTES`).

The query runs in a session whose every transaction is ``READ ONLY`` (a
query's own ``COMMIT`` cannot start a writable one), bounded by
``--statement-timeout``, without the migration lock: it reads a table of the
application's, never the version table. That is a guard against a mistaken
query, not a sandbox: the credentials are the migration's.

Its first column names the schemas: NULLs and empty names are left out,
duplicates kept once, and the names sorted as Python sorts ``str`` (the
operator checks pages in that order). The page is the names after
``--after`` that fit the document, found by measuring the document itself
(:func:`revisor.output.result_document`), compressed names, scrubbing and
JSON escapes included, rather than by an estimate of them.
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from revisor import contract
from revisor.connection import run_with_connection
from revisor.contract import SchemaPage
from revisor.dialects import support_for
from revisor.errors import BadInput, DatabaseUnreachable
from revisor.output import result_document
from revisor.project import Project

#: The document's room: ``--output json`` adds a newline after it on stdout.
PAGE_BYTES = contract.MAX_RESULT_BYTES - 1
#: The first page size tried; it doubles until a page no longer fits.
_FIRST_TRY = 64


def query_names(project: Project, query: str, *, statement_timeout: float | None) -> list[str]:
    """Every name ``query`` returns, sorted, each once; raises :class:`BadInput` on a bad query."""
    db = project.db
    if db.backend != "postgresql":
        raise BadInput(
            f"revisor schemas is for PostgreSQL (a schema per tenant); {db.display} is "
            f"{db.backend}",
            hint="list the targets by name instead (spec.targets.schemas.names)",
        )

    def work(conn: Connection) -> list[object]:
        support_for(db).prepare_session(
            conn, statement_timeout=statement_timeout, ddl_lock_timeout=None
        )
        conn.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        conn.commit()
        try:
            # no_parameters: the query goes to the driver as written ('%' included).
            rows = conn.exec_driver_sql(query, execution_options={"no_parameters": True})
            if not rows.returns_rows or not rows.keys():
                raise BadInput(
                    "the schemas query returns no column of names: it must be a SELECT (or "
                    "VALUES) whose first column names the schemas"
                )
            return [row[0] for row in rows]
        except sa.exc.DBAPIError as exc:
            why = " ".join(str(exc.orig if exc.orig is not None else exc).split())
            if exc.connection_invalidated:
                raise DatabaseUnreachable(
                    f"lost the database during the schemas query: {why}"
                ) from None
            raise BadInput(
                f"the schemas query failed: {why}",
                hint="it runs read-only, as written, in the database of the migration: try it "
                "with psql under the same user",
            ) from None
        finally:
            if not conn.invalidated:
                conn.rollback()

    return _names(run_with_connection(db, work))


def _names(values: Sequence[object]) -> list[str]:
    names: set[str] = set()
    for value in values:
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise BadInput(
                f"the schemas query's first column holds {type(value).__name__} values, not names",
                hint="select text: SELECT name::text FROM ...",
            )
        if "\n" in value:
            raise BadInput(f"the schemas query returned {value[:80]!r}: a name with a line break")
        names.add(value)
    return sorted(names)


def fit_page(
    names: Sequence[str],
    *,
    after: str | None,
    result: Callable[[SchemaPage], contract.Result],
    limit: int = PAGE_BYTES,
) -> contract.Result:
    """``result`` of the longest page of ``names`` after ``after`` whose document fits ``limit``.

    ``names`` are the whole sorted list (its hash and count go in every
    page). Sizes are tried doubling from a small page, then halved between
    the last that fit and the first that did not, so a page costs about
    twice its own size to find however long the list is.
    """
    rest = names[bisect.bisect_right(names, after) :] if after is not None else names
    list_hash = SchemaPage.hash_of(names)

    def attempt(size: int) -> contract.Result | None:
        page = SchemaPage(
            names=tuple(rest[:size]),
            remaining=len(rest) - size,
            total=len(names),
            list_hash=list_hash,
        )
        made = result(page)
        fits = len(result_document(made, limit=sys.maxsize).encode()) <= limit
        return made if fits else None

    best = attempt(0)
    if best is None:
        raise BadInput("an empty page of schema names does not fit a result document")
    fitted, too_many = 0, len(rest) + 1
    size = min(_FIRST_TRY, len(rest))
    while size > fitted:
        found = attempt(size)
        if found is None:
            too_many = size
            break
        best, fitted = found, size
        size = min(size * 2, len(rest))
    while too_many - fitted > 1:
        middle = (fitted + too_many) // 2
        found = attempt(middle)
        if found is None:
            too_many = middle
        else:
            best, fitted = found, middle
    if fitted == 0 and rest:
        raise BadInput(
            f"the schemas query returned a name of {len(rest[0].encode())} bytes, too long for a "
            f"result document ({rest[0][:80]!r}...); a PostgreSQL schema name has at most 63"
        )
    return best
