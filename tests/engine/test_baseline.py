"""Adopting a database built without Alembic: ``--baseline REV``, and the refusal without it.

The database comes from ``metadata.create_all()`` with models that match a
revision of the scripts, as an application that grew without migrations
would have it. Without a baseline the run is refused before anything is
written (exit 2, ``NeedsBaseline``) instead of failing half-way on "already
exists"; with one, the database is stamped (recorded as a stamp) and
migrated on from there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.engine.conftest import history_rows, tables, version
from tests.support.projects import Rev, make_project

CUSTOMERS = Rev(
    id="0001b0000000",
    message="create customers",
    upgrade="""
        op.create_table(
            'customers',
            sa.Column('id', sa.Integer, primary_key=True),
            sa.Column('email', sa.String(100), nullable=False),
        )
        op.create_index('ix_customers_email', 'customers', ['email'], unique=True)
    """,
    downgrade="op.drop_table('customers')",
)
ORDERS = Rev(
    id="0002b0000000",
    down="0001b0000000",
    message="create orders",
    upgrade="""
        op.create_table(
            'orders',
            sa.Column('id', sa.Integer, primary_key=True),
            sa.Column('customer_id', sa.Integer, sa.ForeignKey('customers.id'), nullable=False),
            sa.Column('status', sa.String(20), nullable=False, server_default='new'),
        )
    """,
    downgrade="op.drop_table('orders')",
)
NOTE = Rev(
    id="0003b0000000",
    down="0002b0000000",
    message="add orders.note",
    upgrade="op.add_column('orders', sa.Column('note', sa.String(200)))",
    downgrade="op.drop_column('orders', 'note')",
)


def create_all(url: str, *, orders: bool = True) -> None:
    """What an application's ``metadata.create_all()`` builds: its models, no version table."""
    metadata = sa.MetaData()
    customers = sa.Table(
        "customers",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(100), nullable=False),
    )
    sa.Index("ix_customers_email", customers.c.email, unique=True)
    if orders:
        sa.Table(
            "orders",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
            sa.Column("status", sa.String(20), nullable=False, server_default="new"),
        )
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    metadata.create_all(engine)
    engine.dispose()


def test_a_create_all_database_is_refused_without_a_baseline_then_adopted(
    revisor, any_db_url, tmp_path: Path
) -> None:
    create_all(any_db_url)
    project = make_project(tmp_path, [CUSTOMERS, ORDERS])
    args = [*project.args(), "--database-url", any_db_url, "--output", "json"]
    refused = revisor(*args, "upgrade")
    assert refused.code == 2
    assert refused.result["reason"] == "NeedsBaseline"
    assert refused.result["error"].startswith(
        "the database has no version table, but revision 0001b0000000 (create customers) "
        "would create what it already has: table customers. It was built without Alembic"
    )
    assert "--baseline head; the scripts' heads are 0002b0000000" in refused.result["error"]
    assert refused.result["details"]["existingObjects"] == {
        "revision": "0001b0000000",
        "tables": ["customers"],
        "indexes": [],
    }
    assert [s["revision"] for s in refused.result["plan"]] == ["0001b0000000", "0002b0000000"]
    assert refused.err.count("error:") == 1
    assert tables(any_db_url) == {"customers", "orders"}, "nothing written"
    planned = revisor(*args, "plan")
    assert planned.code == 2 and planned.result["reason"] == "NeedsBaseline"

    adopted = revisor(*args, "upgrade", "--baseline", "head")
    assert adopted.code == 0, adopted.err
    assert adopted.result["details"]["baseline"] == {
        "revisions": ["0002b0000000"],
        "outcome": "stamped",
    }
    assert adopted.result["from"] == [] and adopted.result["to"] == ["0002b0000000"]
    assert adopted.result["applied"] == []
    assert len(adopted.result["details"]["schemaHash"]) == 64, "the adopted schema is recorded"
    assert "stamped base -> 0002b0000000" in adopted.err
    assert [
        (r["command"], r["from_revision"], r["to_revision"]) for r in history_rows(any_db_url)
    ] == [("stamp", "base", "0002b0000000")]
    assert revisor(*args, "drift").result["reason"] == "NoDrift"

    project.add(NOTE)
    moved = revisor(*args, "upgrade", "--baseline", "head")
    assert moved.code == 0, moved.err
    assert [s["revision"] for s in moved.result["applied"]] == ["0003b0000000"]
    assert moved.result["details"]["baseline"]["outcome"] == "ignored"
    assert (
        "--baseline head ignored: the database has a version table (at 0002b0000000)" in moved.err
    )
    assert version(any_db_url) == {"0003b0000000"}
    assert revisor(*args, "drift").result["reason"] == "NoDrift"


def test_a_baseline_below_the_head_is_stamped_then_migrated_in_one_run(
    revisor, db_url, tmp_path: Path
) -> None:
    create_all(db_url, orders=False)
    project = make_project(tmp_path, [CUSTOMERS, ORDERS, NOTE])
    args = [*project.args(), "--database-url", db_url, "--output", "json"]
    plan = revisor(*args, "plan", "--baseline", "0001b")
    assert plan.code == 0, plan.err
    assert plan.result["details"]["baseline"]["outcome"] == "planned"
    assert [s["revision"] for s in plan.result["plan"]] == ["0002b0000000", "0003b0000000"]
    text = revisor(*args[:-2], "plan", "--baseline", "0001b")
    assert text.out.startswith(
        "no version table: stamp baseline 0001b0000000, then upgrade from 0001b0000000 to head, "
        "2 step(s):"
    )
    run = revisor(
        *args, "apply", "--baseline", "0001b", "--expect-plan-hash", plan.result["planHash"]
    )
    assert run.code == 0, run.err
    assert [s["revision"] for s in run.result["applied"]] == ["0002b0000000", "0003b0000000"]
    assert run.result["details"]["baseline"] == {
        "revisions": ["0001b0000000"],
        "outcome": "stamped",
    }
    runs = history_rows(db_url)
    assert [(r["command"], r["from_revision"], r["to_revision"]) for r in runs] == [
        ("stamp", "base", "0001b0000000"),
        ("apply", "0001b0000000", "0003b0000000"),
    ]
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    human = revisor(*args[:-2], "upgrade")
    assert human.out.startswith("at 0003b0000000 (was 0003b0000000)")


def test_the_text_of_a_baselined_run_says_it_stamped(revisor, db_url, tmp_path: Path) -> None:
    create_all(db_url, orders=False)
    project = make_project(tmp_path, [CUSTOMERS, ORDERS])
    run = revisor(*project.args(), "--database-url", db_url, "upgrade", "--baseline", "0001b")
    assert run.code == 0, run.err
    assert run.out == "at 0002b0000000 (was base; stamped at baseline 0001b0000000 first)\n"


@pytest.mark.parametrize(
    ("baseline", "said"),
    [
        ("ffff", "--baseline ffff: No such revision or branch 'ffff'"),
        ("base", "--baseline 'base': name the revision the existing schema matches"),
        ("-1", "--baseline '-1': name the revision the existing schema matches"),
    ],
)
def test_a_bad_baseline_is_exit_2_and_writes_nothing(
    revisor, db_url, tmp_path: Path, baseline: str, said: str
) -> None:
    create_all(db_url)
    project = make_project(tmp_path, [CUSTOMERS, ORDERS])
    run = revisor(
        *project.args(), "--database-url", db_url, "--output", "json", "upgrade",
        f"--baseline={baseline}",
    )  # fmt: skip
    assert run.code == 2
    assert run.result["reason"] == "InvalidTarget"
    assert run.result["error"].startswith(said)
    assert tables(db_url) == {"customers", "orders"}


def test_a_dry_run_cannot_stamp_a_baseline(revisor, db_url, tmp_path: Path) -> None:
    create_all(db_url, orders=False)
    project = make_project(tmp_path, [CUSTOMERS, ORDERS])
    run = revisor(
        *project.args(), "--database-url", db_url, "--output", "json", "upgrade", "--dry-run",
        "--baseline", "0001b",
    )  # fmt: skip
    assert run.code == 2
    assert run.result["error"].startswith(
        "--dry-run cannot stamp --baseline 0001b: the database has no version table"
    )
    assert tables(db_url) == {"customers"}


def test_tables_the_first_revision_does_not_create_are_no_reason_to_refuse(
    revisor, any_db_url, tmp_path: Path
) -> None:
    """Another application's tables in the same database: the scripts create their own."""
    engine = sa.create_engine(any_db_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE legacy (id INTEGER PRIMARY KEY)")
    engine.dispose()
    project = make_project(tmp_path, [CUSTOMERS, ORDERS])
    run = revisor(*project.args(), "--database-url", any_db_url, "--output", "json", "upgrade")
    assert run.code == 0, run.err
    assert "warnings" not in run.result


def test_what_the_first_revision_creates_is_told_from_the_code_it_runs(
    revisor, db_url, tmp_path: Path
) -> None:
    """Names computed by code, raw SQL, and an index on a table that was there."""
    create_all(db_url)
    computed = Rev(
        id="0001c0000000",
        message="computed names",
        upgrade="""
            for name in ('cust' + 'omers', 'other'):
                op.create_table(name, sa.Column('id', sa.Integer, primary_key=True))
        """,
    )
    project = make_project(tmp_path / "computed", [computed])
    args = ["--database-url", db_url, "--output", "json", "upgrade"]
    run = revisor(*project.args(), *args)
    assert run.code == 2 and run.result["details"]["existingObjects"]["tables"] == ["customers"]
    raw = Rev(id="0001r0000000", upgrade='op.execute("CREATE TABLE orders (id INTEGER)")')
    run = revisor(*make_project(tmp_path / "raw", [raw]).args(), *args)
    assert run.code == 2 and run.result["details"]["existingObjects"]["tables"] == ["orders"]
    index = Rev(
        id="0001i0000000",
        upgrade="op.create_index('ix_customers_email', 'customers', ['email'], unique=True)",
    )
    run = revisor(*make_project(tmp_path / "index", [index]).args(), *args)
    assert run.code == 2, run.err
    assert run.result["details"]["existingObjects"]["indexes"] == ["customers.ix_customers_email"]
    assert "would create what it already has: index customers.ix_customers_email" in run.err
    empty = Rev(id="0001e0000000", message="an empty start")
    project = make_project(tmp_path / "later", [empty, Rev(id="0002e0000000", down="0001e0000000",
        upgrade="op.create_table('orders', sa.Column('id', sa.Integer))")])  # fmt: skip
    run = revisor(*project.args(), *args)
    assert run.code == 2, "an empty first revision: the next one that creates something decides"
    assert run.result["details"]["existingObjects"]["revision"] == "0002e0000000"
    assert "alembic_version" not in tables(db_url)


def test_a_revision_that_checks_for_itself_runs_as_it_would_with_a_warning(
    revisor, db_url, tmp_path: Path
) -> None:
    """It reads the database, so it cannot run offline: the check says it could not tell."""
    create_all(db_url, orders=False)
    careful = Rev(
        id="0001k0000000",
        message="create customers unless there",
        upgrade="""
            if not sa.inspect(op.get_bind()).has_table('customers'):
                op.create_table('customers', sa.Column('id', sa.Integer, primary_key=True))
        """,
    )
    project = make_project(tmp_path, [careful])
    run = revisor(*project.args(), "--database-url", db_url, "--output", "json", "upgrade")
    assert run.code == 0, run.err
    (warning,) = run.result["warnings"]
    assert warning.startswith(
        "the database has tables but no version table, and whether 0001k0000000 would create "
        "any of them could not be told (its upgrade() does not run offline: "
    )
    assert warning.endswith("if the database was built without Alembic, run with --baseline REV")
    assert version(db_url) == {"0001k0000000"}
