"""experiment_waiting: the distributed workers' reports of the events they took and have
not committed yet, per partition, for the experiments' results (issue 20)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment_waiting",
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("events", sa.LargeBinary, nullable=False),
        sa.Column("unfetched", sa.BigInteger),
        sa.Column("reported_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("experiment_waiting")
