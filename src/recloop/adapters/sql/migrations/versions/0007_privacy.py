"""privacy: tombstones of erased users, the pseudonymization key's fingerprint

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erased_users",
        sa.Column("user_digest", sa.String(64), primary_key=True),
        sa.Column("erased_at", sa.Float, nullable=False),
        sa.Column("log_offset", sa.BigInteger),
    )
    op.create_table(
        "privacy_meta",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    # Erasure and export find a user's rows by user_id.
    op.create_index("ix_dead_letters_user_id", "dead_letters", ["user_id"])
    op.create_index("ix_experiment_user_metrics_user_id", "experiment_user_metrics", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_experiment_user_metrics_user_id", "experiment_user_metrics")
    op.drop_index("ix_dead_letters_user_id", "dead_letters")
    op.drop_table("privacy_meta")
    op.drop_table("erased_users")
