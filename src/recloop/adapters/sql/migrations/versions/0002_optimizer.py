"""algorithm optimizer: windowed stats, status, performance reports, impressions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "algorithm_stats",
        sa.Column("segment", sa.String(16), primary_key=True),
        sa.Column("algorithm", sa.String(64), primary_key=True),
        sa.Column("bucket_start", sa.Float, primary_key=True),
        sa.Column("impressions", sa.BigInteger, nullable=False),
        sa.Column("clicks", sa.BigInteger, nullable=False),
        sa.Column("conversions", sa.BigInteger, nullable=False),
        sa.Column("satisfaction_sum", sa.Float, nullable=False),
        sa.Column("satisfaction_n", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "algorithm_status",
        sa.Column("segment", sa.String(16), primary_key=True),
        sa.Column("algorithm", sa.String(64), primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("manual", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("probation_since", sa.Float),
    )
    op.create_table(
        "performance_reports",
        sa.Column("report_id", sa.String(128), primary_key=True),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "impressions",
        sa.Column("impression_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("segment", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("epsilon", sa.Float, nullable=False),
        sa.Column("model_version", sa.String(64)),
        sa.Column("slate", sa.LargeBinary, nullable=False),
        sa.Column("context", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_impressions_user_id", "impressions", ["user_id"])
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("impression_id", sa.String(128)))
    op.create_index("ix_events_impression_id", "events", ["impression_id"])


def downgrade() -> None:
    op.drop_index("ix_events_impression_id", "events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("impression_id")
    for table in ("impressions", "performance_reports", "algorithm_status", "algorithm_stats"):
        op.drop_table(table)
