"""The relational schema, shared by SQLite and PostgreSQL. Alembic migrations create it.

Times are seconds since the epoch (double precision); vectors are float64
arrays stored as raw little-endian bytes.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identity.
_Offset = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("offset", _Offset, primary_key=True, autoincrement=True),
    Column("event_id", String(128), nullable=False, unique=True),
    Column("user_id", String(128), nullable=False),
    Column("type", String(16), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("accepted_at", Float, nullable=False),
    Index("ix_events_user_id", "user_id"),
    sqlite_autoincrement=True,  # offsets are never reused, even after purges
)

items = Table(
    "items",
    metadata,
    Column("item_id", String(128), primary_key=True),
    Column("vector", LargeBinary, nullable=False),
    Column("vector_source", String(8), nullable=False),
    Column("attributes", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)

user_state = Table(
    "user_state",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("vector", LargeBinary, nullable=False),
    Column("events_applied", BigInteger, nullable=False),
    Column("events_skipped", BigInteger, nullable=False),
    Column("interactions", BigInteger, nullable=False),
    Column("impressions", BigInteger, nullable=False),
    Column("first_event_at", Float),
    Column("last_event_at", Float),
    Column("updated_at", Float),
    Column("explicit_offset", BigInteger, nullable=False),
    Column("implicit_offset", BigInteger, nullable=False),
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("offset", BigInteger, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", _Offset, primary_key=True, autoincrement=True),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("reason", Text, nullable=False),
    Column("failed_at", Float, nullable=False),
    sqlite_autoincrement=True,
)
