"""events, items, user_state, consumer_offsets, dead_letters

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Offset = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("offset", _Offset, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(128), nullable=False, unique=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("accepted_at", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_user_id", "events", ["user_id"])
    op.create_table(
        "items",
        sa.Column("item_id", sa.String(128), primary_key=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("vector_source", sa.String(8), nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "user_state",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("events_applied", sa.BigInteger, nullable=False),
        sa.Column("events_skipped", sa.BigInteger, nullable=False),
        sa.Column("interactions", sa.BigInteger, nullable=False),
        sa.Column("impressions", sa.BigInteger, nullable=False),
        sa.Column("first_event_at", sa.Float),
        sa.Column("last_event_at", sa.Float),
        sa.Column("updated_at", sa.Float),
        sa.Column("explicit_offset", sa.BigInteger, nullable=False),
        sa.Column("implicit_offset", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "consumer_offsets",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("offset", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", _Offset, primary_key=True, autoincrement=True),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("failed_at", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    for table in ("dead_letters", "consumer_offsets", "user_state", "items", "events"):
        op.drop_table(table)
