"""SQL by hand, outside any revision: what a person with psql would do to a test's database."""

from __future__ import annotations

import sqlalchemy as sa


def execute(url: str, *statements: str) -> None:
    """Run ``statements`` as written (no bind parameters), in one transaction, then commit."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
