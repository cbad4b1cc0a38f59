"""compact impressions: shown slots' numbers and float32 features, feature names once per set

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_sets",
        sa.Column("feature_set", sa.String(16), primary_key=True),
        sa.Column("names", sa.LargeBinary, nullable=False),
    )
    # Rows logged before keep their JSON slate (feature_set NULL); both are read.
    op.add_column("impressions", sa.Column("numbers", sa.LargeBinary))
    op.add_column("impressions", sa.Column("features", sa.LargeBinary))
    op.add_column("impressions", sa.Column("feature_set", sa.String(16)))


def downgrade() -> None:
    # Compact rows cannot be read back by the older code: they are dropped.
    op.execute("DELETE FROM impressions WHERE feature_set IS NOT NULL")
    with op.batch_alter_table("impressions") as batch:
        batch.drop_column("feature_set")
        batch.drop_column("features")
        batch.drop_column("numbers")
    op.drop_table("feature_sets")
