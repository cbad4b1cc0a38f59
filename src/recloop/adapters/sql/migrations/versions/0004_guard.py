"""guard: user reliability and blocks; events held back from learning

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_reliability",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("manual", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_user_reliability_score", "user_reliability", ["score"])
    with op.batch_alter_table("user_state") as batch:
        batch.add_column(
            sa.Column("events_held", sa.BigInteger, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("user_state") as batch:
        batch.drop_column("events_held")
    op.drop_index("ix_user_reliability_score", "user_reliability")
    op.drop_table("user_reliability")
