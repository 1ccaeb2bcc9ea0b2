"""What a schema snapshot costs, on SQLite, PostgreSQL and MariaDB: ``python -m tests.engine.measure_snapshot_cost 200``.

Builds N tables like an application's (an id, five columns of the usual
types with a NOT NULL and a default, a foreign key to the table before, a
unique constraint and an index), then times what a run does after its last
step: read the snapshot (:func:`revisor.runtime.snapshot_schema`'s reading)
and save it in ``revisor_schema``. Wall and CPU time of this process (the
client; the server's share is the difference), median and range over
rounds, and the snapshot's size, raw and as stored. The servers are the
suite's throwaway ones. Not a test: the numbers are in the README.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable

import sqlalchemy as sa
from revisor.schema_snapshot import take_snapshot
from revisor.snapshot_table import SnapshotTable

from tests.support.mariadb import throwaway_mariadb
from tests.support.postgres import throwaway_postgres

ROUNDS = 7


def build(url: str, count: int) -> None:
    metadata = sa.MetaData()
    previous: str | None = None
    for i in range(count):
        name = f"t{i:04d}"
        columns: list[sa.Column[object]] = [
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(80), nullable=False),
            sa.Column("qty", sa.Integer, nullable=False, server_default="0"),
            sa.Column("note", sa.Text),
            sa.Column("created", sa.DateTime),
            sa.Column("code", sa.String(20)),
        ]
        if previous is not None:
            columns.append(sa.Column("parent_id", sa.Integer, sa.ForeignKey(f"{previous}.id")))
        table = sa.Table(name, metadata, *columns, sa.UniqueConstraint("code", name=f"uq_{name}"))
        sa.Index(f"ix_{name}_name", table.c.name)
        previous = name
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    metadata.create_all(engine)
    engine.dispose()


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms [{min(values) * 1000:.0f}-{max(values) * 1000:.0f}]"


def measure(label: str, url: str, count: int, out: Callable[[str], None]) -> None:
    build(url, count)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    read_wall, read_cpu, save_wall = [], [], []
    with engine.connect() as conn:
        store = SnapshotTable(None)
        for _ in range(ROUNDS):
            wall, cpu = time.perf_counter(), time.process_time()
            snapshot = take_snapshot(conn, schema=None, skip=("revisor_schema",))
            read_wall.append(time.perf_counter() - wall)
            read_cpu.append(time.process_time() - cpu)
            wall = time.perf_counter()
            store.save(conn, "x", snapshot, recorded_by="measure", run_id=None, engine_version="")
            conn.commit()
            save_wall.append(time.perf_counter() - wall)
    engine.dispose()
    raw = snapshot.text.encode()
    out(
        f"{label:<10} {count:>5} tables: read {_ms(read_wall)} (client CPU {_ms(read_cpu)}), "
        f"save {_ms(save_wall)}; {len(raw) / 1024:.0f} KiB, stored "
        f"{len(zlib.compress(raw, 6)) / 1024:.0f} KiB"
    )


def main(counts: list[int]) -> None:
    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    scratch = tempfile.mkdtemp(prefix="revisor-snapshot-cost-")
    for count in counts:
        measure("sqlite", f"sqlite:///{scratch}/db{count}.sqlite", count, out)
    with throwaway_postgres() as pg:
        for count in counts:
            measure("postgresql", pg.url(pg.create_database()), count, out)
    with throwaway_mariadb() as mariadb:
        for count in counts:
            measure("mariadb", mariadb.url(mariadb.create_database()), count, out)


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [200])
