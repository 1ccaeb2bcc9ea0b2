"""Drift: every run records the schema it left; ``revisor drift`` compares the live one with it.

On real SQLite, PostgreSQL and MariaDB: hand-made changes (a column's type
and nullability, an index, a dropped table) are found and worded as lines a
person can act on, exit 7 with reason ``Drifted``; normal runs, up and down,
leave no drift; ``--ignore`` and ``--accept`` behave as documented; no
snapshot is exit 2 with reason ``NoSnapshot`` until ``--record``; and a drift
check waits for a run that holds the migration lock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from revisor import snapshot_table
from revisor.contract import MAX_RESULT_BYTES, DriftDetails

from tests.engine.conftest import tables
from tests.support.projects import Rev, make_project
from tests.support.sql import execute

ORDERS = Rev(
    id="0001d0000000",
    message="create orders and audit_log",
    upgrade="""
        op.create_table(
            'orders',
            sa.Column('id', sa.Integer, primary_key=True),
            sa.Column('status', sa.String(20), nullable=False, server_default='new'),
            sa.Column('note', sa.String(200)),
        )
        op.create_table('audit_log', sa.Column('id', sa.Integer, primary_key=True))
    """,
    downgrade="op.drop_table('audit_log')\nop.drop_table('orders')",
)
CUSTOMERS = Rev(
    id="0002d0000000",
    down="0001d0000000",
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


def by_dialect(url: str, *, postgresql: list[str], mysql: list[str], sqlite: list[str]) -> None:
    backend = sa.engine.make_url(url).get_backend_name()
    execute(url, *{"postgresql": postgresql, "mysql": mysql, "sqlite": sqlite}[backend])


def upgraded(revisor, url: str, tmp_path: Path, *revs: Rev) -> list[str]:
    project = make_project(tmp_path, list(revs) or [ORDERS])
    args = [*project.args(), "--database-url", url, "--output", "json"]
    run = revisor(*args, "upgrade")
    assert run.code == 0, run.err
    assert len(run.result["details"]["schemaHash"]) == 64
    return args


def test_no_drift_after_normal_runs_up_and_down(revisor, any_db_url, tmp_path: Path) -> None:
    """Each run records what it left, so a drift check right after finds nothing, at any revision."""
    args = upgraded(revisor, any_db_url, tmp_path, ORDERS, CUSTOMERS)
    first = revisor(*args, "drift")
    assert first.code == 0, first.out
    assert first.result["reason"] == "NoDrift"
    details = DriftDetails.from_details(first.result["details"])
    assert details is not None and not details.drifted and details.total == 0
    assert details.hash == details.recorded_hash and details.recorded_by == "upgrade"
    down = revisor(*args, "downgrade", "-1")
    assert down.code == 0, down.err
    assert len(down.result["details"]["schemaHash"]) == 64
    after_down = revisor(*args, "drift")
    assert after_down.code == 0 and after_down.result["reason"] == "NoDrift", after_down.out
    assert after_down.result["to"] == ["0001d0000000"]
    assert after_down.result["details"]["hash"] != details.hash, "another schema, another hash"
    again = revisor(*args, "upgrade")
    assert again.code == 0
    assert revisor(*args, "drift").result["details"]["hash"] == details.hash


def test_a_hand_made_alter_is_drift_exit_7(revisor, any_db_url, tmp_path: Path) -> None:
    """A column's type and its nullability changed by hand: one line each, old -> new."""
    args = upgraded(revisor, any_db_url, tmp_path)
    by_dialect(
        any_db_url,
        postgresql=[
            "ALTER TABLE orders ALTER COLUMN status TYPE VARCHAR(40)",
            "ALTER TABLE orders ALTER COLUMN note SET NOT NULL",
        ],
        mysql=[
            "ALTER TABLE orders MODIFY status VARCHAR(40) NOT NULL DEFAULT 'new'",
            "ALTER TABLE orders MODIFY note VARCHAR(200) NOT NULL",
        ],
        sqlite=[  # SQLite alters a column by building the table anew
            "CREATE TABLE orders_new (id INTEGER NOT NULL, status VARCHAR(40) DEFAULT 'new' "
            "NOT NULL, note VARCHAR(200) NOT NULL, PRIMARY KEY (id))",
            "INSERT INTO orders_new SELECT * FROM orders",
            "DROP TABLE orders",
            "ALTER TABLE orders_new RENAME TO orders",
        ],
    )
    run = revisor(*args, "drift")
    assert run.code == 7, run.err
    assert run.result["reason"] == "Drifted" and run.result["exitCode"] == 7
    assert run.result["details"]["differences"] == [
        "~ column orders.note: nullable -> NOT NULL",
        "~ column orders.status: VARCHAR(20) -> VARCHAR(40)",
    ]
    details = DriftDetails.from_details(run.result["details"])
    assert details is not None and details.drifted and details.total == 2
    assert details.hash != details.recorded_hash and not details.accepted
    assert f"revisor drift --accept {details.hash}" in run.result["error"]
    text = revisor(*args[:-2], "drift")
    assert text.code == 7
    assert "drift at 0001d0000000: 2 difference(s) from the schema recorded " in text.out
    assert "~ column orders.status: VARCHAR(20) -> VARCHAR(40)\nlive schema hash" in text.out
    assert "error: schema drift at 0001d0000000: 2 difference(s)" in text.err


def test_an_added_index_and_a_dropped_table_are_drift(revisor, any_db_url, tmp_path: Path) -> None:
    args = upgraded(revisor, any_db_url, tmp_path)
    execute(any_db_url, "CREATE INDEX ix_orders_note ON orders (note)", "DROP TABLE audit_log")
    run = revisor(*args, "drift")
    assert run.code == 7, run.err
    assert run.result["details"]["differences"] == [
        "- table audit_log",
        "+ index ix_orders_note on orders(note)",
    ]


def test_ignore_leaves_out_tables_columns_and_indexes_by_pattern(
    revisor, db_url, tmp_path: Path
) -> None:
    """fnmatch on the table, table.column and index names; hashes then agree when nothing is left."""
    args = upgraded(revisor, db_url, tmp_path)
    execute(
        db_url,
        "CREATE INDEX ix_orders_note ON orders (note)",
        "ALTER TABLE orders ADD COLUMN tmp_flag INTEGER",
        "CREATE TABLE scratch_1 (id INTEGER PRIMARY KEY)",
    )
    everything = revisor(*args, "drift")
    assert everything.result["details"]["differences"] == [
        "+ column orders.tmp_flag INTEGER",
        "+ index ix_orders_note on orders(note)",
        "+ table scratch_1 (1 column)",
    ]
    some = revisor(*args, "drift", "--ignore", "scratch_*", "--ignore", "orders.tmp_*")
    assert some.code == 7
    assert some.result["details"]["differences"] == ["+ index ix_orders_note on orders(note)"]
    none = revisor(
        *args, "drift", "--ignore", "scratch_*", "--ignore", "orders.tmp_*", "--ignore=ix_*"
    )
    assert none.code == 0, none.out
    assert none.result["reason"] == "NoDrift"
    assert none.result["details"]["hash"] == none.result["details"]["recordedHash"]
    dropped = revisor(*args, "drift", "--ignore", "orders", "--ignore", "scratch_*")
    assert dropped.code == 0, "an ignored table takes its columns and indexes with it"


def test_accepting_the_live_schemas_hash_exits_0_until_it_changes(
    revisor, db_url, tmp_path: Path
) -> None:
    """The operator's spec.drift.acceptedHash: acknowledged drift is exit 0, new drift is not."""
    args = upgraded(revisor, db_url, tmp_path)
    execute(db_url, "CREATE INDEX ix_orders_note ON orders (note)")
    found = revisor(*args, "drift").result["details"]["hash"]
    accepted = revisor(*args, "drift", "--accept", found)
    assert accepted.code == 0, accepted.err
    assert accepted.result["reason"] == "DriftAccepted"
    assert accepted.result["details"]["accepted"] is True
    assert accepted.result["details"]["differences"] == ["+ index ix_orders_note on orders(note)"]
    assert "error" not in accepted.result
    execute(db_url, "DROP TABLE audit_log")
    moved = revisor(*args, "drift", "--accept", found)
    assert moved.code == 7
    assert moved.result["details"]["accepted"] is False
    assert f"the accepted hash {found} is not the live schema's" in moved.result["error"]
    clean = make_project(tmp_path / "other", [ORDERS])
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert revisor(*clean.args(), "--database-url", url, "upgrade").code == 0
    nothing = revisor(
        *clean.args(), "--database-url", url, "--output", "json", "drift", "--accept", found
    )
    assert nothing.code == 0 and nothing.result["reason"] == "NoDrift", "nothing to accept"
    assert nothing.result["details"]["accepted"] is False


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--record", "--ignore", "x"], "--ignore and --accept only apply to a comparison"),
        (["--record", "--accept", "a" * 64], "--ignore and --accept only apply to a comparison"),
    ],
    ids=["record-ignore", "record-accept"],
)
def test_bad_drift_options_are_exit_2(revisor, tmp_path: Path, argv: list[str], said: str) -> None:
    project = make_project(tmp_path, [ORDERS])
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run = revisor(*project.args(), "--database-url", url, "drift", *argv)
    assert run.code == 2
    assert said in run.err
    assert run.err.count("error:") == 1


def test_an_accepted_hash_that_is_not_one_is_a_usage_error(capsys) -> None:
    from revisor.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["drift", "--accept", "abc"])
    assert exc.value.code == 2
    assert "'abc' is not a schema hash (64 hexadecimal digits" in capsys.readouterr().err


def test_no_snapshot_is_exit_2_until_recorded(revisor, any_db_url, tmp_path: Path) -> None:
    """A database migrated by plain Alembic has no snapshot: say so; --record records one."""
    project = make_project(tmp_path, [ORDERS])
    args = [*project.args(), "--database-url", any_db_url, "--output", "json"]
    execute(
        any_db_url,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, status VARCHAR(20) NOT NULL)",
    )
    assert revisor(*args, "stamp", "head").code == 0
    missing = revisor(*args, "drift")
    assert missing.code == 2
    assert missing.result["reason"] == "NoSnapshot"
    assert "no schema snapshot is recorded for revision 0001d0000000" in missing.result["error"]
    assert "revisor drift --record" in missing.result["error"]
    assert missing.result["to"] == ["0001d0000000"]
    recorded = revisor(*args, "drift", "--record")
    assert recorded.code == 0, recorded.err
    assert recorded.result["reason"] == "SnapshotRecorded"
    schema_hash = recorded.result["details"]["schemaHash"]
    now = revisor(*args, "drift")
    assert now.code == 0 and now.result["details"]["hash"] == schema_hash
    assert now.result["details"]["recordedBy"] == "record"
    again = revisor(*args[:-2], "drift", "--record")
    assert "replacing the one recorded" in again.out and f"(hash {schema_hash})" in again.out


def test_a_snapshot_of_another_format_or_unreadable_is_no_snapshot(
    revisor, db_url, tmp_path: Path
) -> None:
    args = upgraded(revisor, db_url, tmp_path)
    execute(db_url, "UPDATE revisor_schema SET format = 0")
    old = revisor(*args, "drift")
    assert old.code == 2 and old.result["reason"] == "NoSnapshot"
    assert "is in format 0, and this Revisor compares format 1" in old.result["error"]
    assert revisor(*args, "drift", "--record").code == 0
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE revisor_schema SET snapshot = :b"), {"b": b"not zlib"})
    engine.dispose()
    broken = revisor(*args, "drift")
    assert broken.code == 2 and broken.result["reason"] == "NoSnapshot"
    assert "cannot be read (not a compressed schema snapshot" in broken.result["error"]


def snapshot_rows(url: str) -> list[dict[str, object]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("revisor_schema"):
                return []
            query = (
                "SELECT id, revisions, hash, recorded_by, run_id FROM revisor_schema ORDER BY id"
            )
            return [dict(r._mapping) for r in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


def test_a_run_with_nothing_to_do_records_only_a_missing_snapshot(
    revisor, any_db_url, tmp_path: Path
) -> None:
    args = upgraded(revisor, any_db_url, tmp_path)
    rows = snapshot_rows(any_db_url)
    assert [r["revisions"] for r in rows] == ["0001d0000000"] and rows[0]["run_id"]
    idle = revisor(*args, "upgrade")
    assert idle.code == 0
    assert "schemaHash" not in idle.result.get("details", {}), "it changed nothing"
    assert snapshot_rows(any_db_url) == rows
    execute(any_db_url, "DELETE FROM revisor_schema")
    first = revisor(*args, "upgrade")
    assert first.code == 0
    assert first.result["details"]["schemaHash"] == rows[0]["hash"]
    (row,) = snapshot_rows(any_db_url)
    assert row["recorded_by"] == "upgrade" and row["run_id"] is None


def test_dry_runs_and_plans_record_no_snapshot(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, [ORDERS])
    args = [*project.args(), "--database-url", db_url, "--output", "json"]
    assert revisor(*args, "plan").code == 0
    dry = revisor(*args, "upgrade", "--dry-run")
    assert dry.code == 0 and "schemaHash" not in dry.result.get("details", {})
    assert "revisor_schema" not in tables(db_url)


def test_one_snapshot_per_revision_and_a_bounded_table(
    revisor, db_url, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(snapshot_table, "KEEP", 3)
    revs = [ORDERS, CUSTOMERS] + [
        Rev(id=f"000{i}d0000000", down=f"000{i - 1}d0000000", upgrade=f"op.create_table('t{i}', "
            "sa.Column('id', sa.Integer, primary_key=True))", downgrade=f"op.drop_table('t{i}')")
        for i in range(3, 6)
    ]  # fmt: skip
    project = make_project(tmp_path, revs)
    args = [*project.args(), "--database-url", db_url]
    for _ in revs:
        assert revisor(*args, "upgrade", "+1").code == 0
    assert revisor(*args, "downgrade", "-1").code == 0
    assert revisor(*args, "upgrade", "+1").code == 0
    assert [r["revisions"] for r in snapshot_rows(db_url)] == [
        "0003d0000000",
        "0004d0000000",
        "0005d0000000",
    ]


def test_a_snapshot_that_fails_warns_and_never_fails_the_run(
    revisor, db_url, tmp_path: Path, monkeypatch
) -> None:
    from revisor import runtime

    def broken(*_args: object, **_kw: object) -> None:
        raise RuntimeError("reflection failed")

    monkeypatch.setattr(runtime, "snapshot_schema", broken)
    project = make_project(tmp_path, [ORDERS])
    run = revisor(*project.args(), "--database-url", db_url, "--output", "json", "upgrade")
    assert run.code == 0, run.err
    assert run.result["warnings"] == [
        "the schema was not recorded for drift checks: RuntimeError: reflection failed"
    ]
    assert "warning: the schema was not recorded for drift checks" in run.err
    assert run.result["to"] == ["0001d0000000"]


def test_a_drift_check_waits_for_a_run_in_flight(revisor, db_url, tmp_path: Path) -> None:
    """Taking the lock, drift never compares with a schema a run is still changing.

    The run's second revision holds until the test removes a flag, after the
    drift check has said that it waits for the lock: the check then compares
    with the snapshot the run recorded under that lock, and finds nothing.
    Without the lock it would have compared half-way, with no snapshot yet.
    """
    flag = tmp_path / "hold"
    flag.touch()
    slow = Rev(
        id="0002d0000000",
        down="0001d0000000",
        message="slow",
        upgrade=f"op.create_table('slow', sa.Column('id', sa.Integer))\nimport os\n"
        f"while os.path.exists({str(flag)!r}):\n    time.sleep(0.05)",
        downgrade="op.drop_table('slow')",
    )
    project = make_project(tmp_path, [ORDERS, slow])
    base = [sys.executable, "-m", "revisor", *project.args(), "--database-url", db_url]
    run_log, drift_log = tmp_path / "run.log", tmp_path / "drift.log"
    with run_log.open("w") as err:
        run = subprocess.Popen(
            [*base, "--output", "json", "upgrade"], stdout=subprocess.PIPE, stderr=err, text=True
        )
    deadline = time.monotonic() + 120  # a hang guard for a loaded machine, not a measurement
    while "[1/2]" not in run_log.read_text():
        assert time.monotonic() < deadline and run.poll() is None, run_log.read_text()
        time.sleep(0.05)
    timed_out = revisor(*project.args(), "--database-url", db_url, "drift", "--lock-timeout", "0")
    assert timed_out.code == 3, "the run holds the lock"
    with drift_log.open("w") as err:
        check = subprocess.Popen(
            [*base, "--output", "json", "drift", "--lock-timeout", "300"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    while "for the lock" not in drift_log.read_text():
        assert time.monotonic() < deadline, drift_log.read_text()
        assert check.poll() is None and run.poll() is None, drift_log.read_text()
        time.sleep(0.05)
    flag.unlink()
    ran = json.loads(run.communicate(timeout=120)[0])
    checked = json.loads(check.communicate(timeout=120)[0])
    assert run.returncode == 0 and check.returncode == 0, drift_log.read_text()
    assert checked["reason"] == "NoDrift" and checked["to"] == ["0002d0000000"]
    assert checked["details"]["hash"] == ran["details"]["schemaHash"]


@pytest.mark.postgres
def test_postgres_enums_views_sequences_and_constraints(revisor, pg_url, tmp_path: Path) -> None:
    rev = Rev(
        id="0001p0000000",
        message="postgres objects",
        upgrade="""
            op.execute("CREATE TYPE mood AS ENUM ('sad')")
            op.create_table(
                'people',
                sa.Column('id', sa.Integer, primary_key=True),
                sa.Column('m', sa.Enum('sad', name='mood', create_type=False)),
                sa.Column('age', sa.Integer),
                sa.CheckConstraint('age > 0', name='ck_people_age'),
            )
            op.execute("CREATE VIEW adults AS SELECT id FROM people WHERE age >= 18")
        """,
        downgrade="op.execute('DROP VIEW adults')\nop.drop_table('people')\n"
        "op.execute('DROP TYPE mood')",
    )
    args = upgraded(revisor, pg_url, tmp_path, rev)
    execute(
        pg_url,
        "ALTER TYPE mood ADD VALUE 'happy'",
        "CREATE SEQUENCE invoice_numbers",
        "ALTER TABLE people DROP CONSTRAINT ck_people_age",
        "ALTER TABLE people ADD CONSTRAINT ck_people_age CHECK (age >= 0)",
        "CREATE OR REPLACE VIEW adults AS SELECT id FROM people WHERE age >= 21",
        "CREATE TABLE pets (id INTEGER PRIMARY KEY, owner INTEGER REFERENCES people (id))",
    )
    run = revisor(*args, "drift")
    assert run.code == 7
    assert (
        "~ view adults: SELECT people.id FROM people WHERE (people.age >= 18); -> SELECT "
        "people.id FROM people WHERE (people.age >= 21);\n"
    ) in revisor(*args[:-2], "drift").out
    assert run.result["details"]["differences"] == [
        "~ check constraint ck_people_age on people: age > 0 -> age >= 0",
        "+ table pets (2 columns)",
        # cut to 120 characters in the result; the text output has all of it
        "~ view adults: SELECT people.id FROM people WHERE (people.age >= 18); -> SELECT "
        "people.id FROM people WHERE (people.age…",
        "+ sequence invoice_numbers",
        "~ enum mood: ('sad') -> ('sad', 'happy')",
    ]


def test_a_long_list_of_differences_fits_the_termination_message(
    revisor, db_url, tmp_path: Path
) -> None:
    args = upgraded(revisor, db_url, tmp_path)
    execute(db_url, *(f"CREATE TABLE extra_{i:03d}_{'x' * 40} (id INTEGER)" for i in range(60)))
    run = revisor(*args, "--result-file", str(tmp_path / "result.json"), "drift")
    assert run.code == 7
    written = (tmp_path / "result.json").read_text()
    assert len(written.encode()) <= MAX_RESULT_BYTES
    details = json.loads(written)["details"]
    assert details["differencesTotal"] == 60 and 0 < len(details["differences"]) <= 20
    assert len(details["hash"]) == 64 and details["drifted"] is True


def _doc(**tables: dict[str, object]) -> dict[str, object]:
    body: dict[str, object] = {"columns": {}, "primaryKey": None, "indexes": {},
                               "uniqueConstraints": {}, "checkConstraints": {},
                               "foreignKeys": {}}  # fmt: skip
    return {
        "format": 1,
        "tables": {name: {**body, **table} for name, table in tables.items()},
        "views": {},
        "sequences": [],
        "enums": {},
    }


def test_every_kind_of_difference_has_its_own_words() -> None:
    """The wording of each kind of object, on documents (no database needed)."""
    from revisor.drift import differences

    column = {"type": "INTEGER", "nullable": True, "default": None}
    old = _doc(
        t={
            "columns": {"a": column, "b": {**column, "default": "0"}},
            "primaryKey": {"name": "t_pkey", "columns": ["a"]},
            "indexes": {"ix_b": {"name": "ix_b", "columns": ["b"], "unique": False}},
            "uniqueConstraints": {"(a, b)": {"name": None, "columns": ["a", "b"]}},
            "foreignKeys": {"fk_t_u": {"name": "fk_t_u", "columns": ["b"], "referredSchema": None,
                                       "referredTable": "u", "referredColumns": ["id"]}},
        },
    )  # fmt: skip
    new = _doc(
        t={
            "columns": {"a": {**column, "identity": {"always": True}}, "b": column,
                        "c": {"type": "TEXT", "nullable": False, "default": "'x'"}},
            "primaryKey": {"name": "t_pk", "columns": ["a", "b"]},
            "indexes": {"ix_b": {"name": "ix_b", "columns": ["b", "a"], "unique": True,
                                 "options": {"postgresql_where": "(b > 0)"}}},
            "foreignKeys": {"fk_t_u": {"name": "fk_t_u", "columns": ["b"], "referredSchema": "s",
                                       "referredTable": "u", "referredColumns": ["id"],
                                       "options": {"ondelete": "CASCADE"}}},
            "checkConstraints": {"(b > 0)": {"name": None, "sqltext": "b > 0"}},
        },
    )  # fmt: skip
    old["views"] = {"v": {"definition": "SELECT 1"}}
    new["views"] = {"mv": {"definition": "SELECT 2", "materialized": True}}
    old["sequences"], new["sequences"] = ["s1"], ["s2"]
    new["enums"] = {"mood": ["sad"]}
    assert differences(old, new) == [
        '~ column t.a: identity null -> {"always": true}',
        "~ column t.b: default 0 -> no default",
        "+ column t.c TEXT NOT NULL DEFAULT 'x'",
        "~ primary key of t: (a) -> (a, b)",
        "~ primary key of t: named t_pkey -> t_pk",
        "~ unique index ix_b on t: (b) -> (b, a)",
        '~ unique index ix_b on t: options null -> {"postgresql_where": "(b > 0)"}',
        "~ unique index ix_b on t: not unique -> unique",
        "- unique constraint on t(a, b)",
        "+ check constraint on t: b > 0",
        '~ foreign key fk_t_u on t: options null -> {"ondelete": "CASCADE"}',
        '~ foreign key fk_t_u on t: referredSchema null -> "s"',
        "+ materialized view mv",
        "- view v",
        "+ sequence s2",
        "- sequence s1",
        "+ enum mood ('sad')",
    ]
    assert differences(new, old)[-1] == "- enum mood"
    gone = _doc(t={"columns": {"a": column}})
    assert differences(new, gone)[1:4] == [
        "- column t.b",
        "- column t.c",
        "- primary key of t (a, b)",
    ]
    assert differences(gone, new)[3] == "+ primary key on t(a, b)"
    assert differences({**gone, "extra": 1}, gone) == ["~ extra: 1 -> null"]


def test_drift_on_a_database_that_cannot_be_reached_is_exit_6(revisor, tmp_path: Path) -> None:
    from tests.support.postgres import free_port

    project = make_project(tmp_path, [ORDERS])
    url = f"postgresql://app:pw-x@127.0.0.1:{free_port()}/app"
    run = revisor(*project.args(), "--database-url", url, "--output", "json", "drift")
    assert run.code == 6 and run.result["reason"] == "DatabaseUnreachable"
    assert "pw-x" not in run.out + run.err
