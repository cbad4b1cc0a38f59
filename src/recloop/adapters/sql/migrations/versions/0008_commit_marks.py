"""commit marks: the last state commit each writing process applied (retry-safe commits)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commit_marks",
        sa.Column("writer", sa.String(64), primary_key=True),
        sa.Column("commit_id", sa.String(64), nullable=False),
        sa.Column("committed_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("commit_marks")
