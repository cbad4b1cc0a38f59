"""experiments: definitions, exposures, per-user metric values, per-variant statistics

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("experiment_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("definition", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("stopped_at", sa.Float),
    )
    op.create_table(
        "experiment_exposures",
        sa.Column("experiment_id", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("exposed_at", sa.Float, nullable=False),
    )
    op.create_index("ix_experiment_exposures_user_id", "experiment_exposures", ["user_id"])
    op.create_table(
        "experiment_user_metrics",
        sa.Column("experiment_id", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("y", sa.Float, nullable=False),
        sa.Column("x", sa.Float, nullable=False),
    )
    op.create_table(
        "experiment_stats",
        sa.Column("experiment_id", sa.String(128), primary_key=True),
        sa.Column("variant", sa.String(64), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("sum_x", sa.Float, nullable=False),
        sa.Column("sum_x2", sa.Float, nullable=False),
        sa.Column("sum_y", sa.Float, nullable=False),
        sa.Column("sum_y2", sa.Float, nullable=False),
        sa.Column("sum_xy", sa.Float, nullable=False),
    )
    with op.batch_alter_table("impressions") as batch:
        batch.add_column(sa.Column("experiments", sa.LargeBinary))
        batch.add_column(sa.Column("model_slot", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("impressions") as batch:
        batch.drop_column("model_slot")
        batch.drop_column("experiments")
    for table in (
        "experiment_stats",
        "experiment_user_metrics",
        "experiment_exposures",
        "experiments",
    ):
        op.drop_table(table)
