"""create orders

Revision ID: 9d2e7a11c0f3
Revises: 1a2b3c4d5e6f
Create Date: 2026-11-02 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "9d2e7a11c0f3"
down_revision = "1a2b3c4d5e6f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("total_cents", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("orders")
