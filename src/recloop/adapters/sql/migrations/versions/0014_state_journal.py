"""state_journal: checkpoints append users' changed rows as one record each; the rows
reach user_state when their record is compacted (issue 14)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "state_journal",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("users", sa.LargeBinary, nullable=False),
        sa.Column("written_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("state_journal")
