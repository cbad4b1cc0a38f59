"""continuous learning: model registry, deployment slots and their history, training jobs

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("window_start", sa.Float, nullable=False),
        sa.Column("window_end", sa.Float, nullable=False),
        sa.Column("examples", sa.BigInteger, nullable=False),
        sa.Column("positives", sa.BigInteger, nullable=False),
        sa.Column("metrics", sa.LargeBinary, nullable=False),
        sa.Column("feature_names", sa.LargeBinary, nullable=False),
        sa.Column("artifact", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "model_transitions",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "deployment",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("state", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "training_jobs",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("version", sa.String(64)),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_impressions_created_at", "impressions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_impressions_created_at", "impressions")
    op.drop_table("training_jobs")
    op.drop_table("deployment")
    op.drop_table("model_transitions")
    op.drop_table("models")
