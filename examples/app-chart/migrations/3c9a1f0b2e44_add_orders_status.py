"""add orders.status

Revision ID: 3c9a1f0b2e44
Revises: 9d2e7a11c0f3
Create Date: 2026-11-03 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "3c9a1f0b2e44"
down_revision = "9d2e7a11c0f3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("status", sa.String(20), nullable=False, server_default="new"))
    op.create_index("ix_orders_status", "orders", ["status"])


def downgrade() -> None:
    op.drop_index("ix_orders_status", "orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("status")
