"""algorithm_stats: the counts may be fractional (inverse-propensity credit, issue 15:
``exploration.credit: ips`` credits an algorithm ``1 / propensity`` impressions)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_COUNTS = ("impressions", "clicks", "conversions", "satisfaction_n")


def upgrade() -> None:
    with op.batch_alter_table("algorithm_stats") as batch:
        for name in _COUNTS:
            batch.alter_column(
                name, existing_type=sa.BigInteger, type_=sa.Float, existing_nullable=False
            )


def downgrade() -> None:
    # fractions are rounded away
    with op.batch_alter_table("algorithm_stats") as batch:
        for name in _COUNTS:
            batch.alter_column(
                name, existing_type=sa.Float, type_=sa.BigInteger, existing_nullable=False
            )
