"""algorithm_stats.impressions_sq_excess: what the squared credit weights of the
impressions add beyond them, ``sum(w * w - w)``, for the counts' effective sample size
(issue 15: inverse-propensity credit counts an impression ``w`` times; the Beta posteriors
take the counts at Kish's ``sum(w)**2 / sum(w * w)``)

Rows stored before this revision get 0: their counts are read as unweighted, as they
were (their weights are not known any more).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("algorithm_stats") as batch:
        batch.add_column(
            sa.Column("impressions_sq_excess", sa.Float, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("algorithm_stats") as batch:
        batch.drop_column("impressions_sq_excess")
