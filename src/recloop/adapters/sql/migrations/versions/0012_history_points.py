"""history points: the console's plots over time (issue 19)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "history_points",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("scope", sa.String(256), primary_key=True),
        sa.Column("subject", sa.String(256), primary_key=True),
        sa.Column("at", sa.Float, primary_key=True),
        sa.Column("figures", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_history_points_at", "history_points", ["at"])


def downgrade() -> None:
    op.drop_index("ix_history_points_at", table_name="history_points")
    op.drop_table("history_points")
