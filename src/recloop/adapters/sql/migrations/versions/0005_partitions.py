"""distributed deployment: where each archived event was read from the event topic

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("log_partition", sa.Integer))
        batch.add_column(sa.Column("log_offset", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("log_offset")
        batch.drop_column("log_partition")
