"""experiment exposures: the experiment whose overrides won for the user (issue 20)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the user is counted as exposed, as every exposure recorded before was.
    op.add_column("experiment_exposures", sa.Column("overridden_by", sa.String(128)))


def downgrade() -> None:
    with op.batch_alter_table("experiment_exposures") as batch:
        batch.drop_column("overridden_by")
