"""compact event log: typed columns instead of a JSON payload, no per-user or impression index

Each ``events`` row keeps what every event has in typed columns (the type as a
small integer code), the optional fields (text, context, attribution) in one
nullable ``extra`` blob; ``ix_events_user_id`` and ``ix_events_impression_id``
are dropped, and ``event_impressions`` (offset → attribution.impression_id)
holds the per-impression look-up for the events that have one. The rows are
converted in offset order, in batches, keeping every offset and the offset
high-water mark (offsets are never reused).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_Offset = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_BATCH = 5_000

# Frozen here as written by this revision (adapters.sql.log.TYPE_CODES must agree).
TYPE_CODES = {
    "rating": 1,
    "like": 2,
    "dislike": 3,
    "share": 4,
    "save": 5,
    "review": 6,
    "impression": 7,
    "view": 8,
    "click": 9,
    "dwell": 10,
    "skip": 11,
    "add_to_cart": 12,
    "purchase": 13,
}
_TYPE_NAMES = {code: name for name, code in TYPE_CODES.items()}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def _key(text: str) -> str | bytes:
    """SQLite: a canonical UUID as its 16 bytes (as adapters.sql.log.id_key keeps it)."""
    if op.get_bind().dialect.name != "sqlite" or not _UUID.match(text):
        return text
    return bytes.fromhex(text.replace("-", ""))


def _request_key(text: str | None) -> str | bytes | None:
    """SQLite: 32 lowercase hex digits as their 16 bytes (adapters.sql.log.request_key)."""
    if text is None or len(text) != 32 or op.get_bind().dialect.name != "sqlite":
        return text
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return text
    return raw if len(raw) == 16 and raw.hex() == text else text


def _text(key: str | bytes) -> str:
    if isinstance(key, str):
        return key
    h = key.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def upgrade() -> None:
    op.drop_index("ix_events_impression_id", "events")
    op.drop_index("ix_events_user_id", "events")
    _set_aside("events", "events_0008")
    op.create_table(
        "events",
        sa.Column("offset", _Offset, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(128), nullable=False, unique=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("type_code", sa.SmallInteger, nullable=False),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("accepted_at", sa.Float, nullable=False),
        sa.Column("request_id", sa.String(128)),
        sa.Column("extra", sa.LargeBinary),
        sa.Column("log_partition", sa.Integer),
        sa.Column("log_offset", sa.BigInteger),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "event_impressions",
        sa.Column("offset", _Offset, primary_key=True, autoincrement=False),
        sa.Column("impression_id", sa.String(128), nullable=False),
    )
    old = sa.table(
        "events_0008",
        *(
            sa.column(n)
            for n in ("offset", "payload", "accepted_at", "log_partition", "log_offset")
        ),
        sa.column("impression_id"),
    )
    query = sa.select(*old.c).order_by(old.c.offset)
    _copy(query, old.c.offset, _to_compact, "events", "event_impressions")
    _carry_high_water("events_0008", "events")
    op.drop_table("events_0008")
    op.create_index("ix_event_impressions_impression_id", "event_impressions", ["impression_id"])


def downgrade() -> None:
    _set_aside("events", "events_0009")
    op.create_table(
        "events",
        sa.Column("offset", _Offset, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(128), nullable=False, unique=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("accepted_at", sa.Float, nullable=False),
        sa.Column("impression_id", sa.String(128)),
        sa.Column("log_partition", sa.Integer),
        sa.Column("log_offset", sa.BigInteger),
        sqlite_autoincrement=True,
    )
    new = sa.table("events_0009", *(sa.column(n) for n in _COMPACT))
    links = sa.table("event_impressions", sa.column("offset"), sa.column("impression_id"))
    query = (
        sa.select(*new.c, links.c.impression_id)
        .select_from(new.outerjoin(links, links.c.offset == new.c.offset))
        .order_by(new.c.offset)
    )
    _copy(query, new.c.offset, _to_payload, "events", None)
    _carry_high_water("events_0009", "events")
    op.drop_table("events_0009")
    op.drop_index("ix_event_impressions_impression_id", "event_impressions")
    op.drop_table("event_impressions")
    op.create_index("ix_events_user_id", "events", ["user_id"])
    op.create_index("ix_events_impression_id", "events", ["impression_id"])


_COMPACT = (
    "offset",
    "event_id",
    "user_id",
    "item_id",
    "type_code",
    "timestamp",
    "value",
    "accepted_at",
    "request_id",
    "extra",
    "log_partition",
    "log_offset",
)


def _set_aside(table: str, aside: str) -> None:
    """Rename ``table`` to ``aside``; on PostgreSQL its key, unique index and offset
    sequence too, so the new table takes the usual names."""
    op.rename_table(table, aside)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER INDEX IF EXISTS {table}_pkey RENAME TO {aside}_pkey")
        op.execute(f"ALTER INDEX IF EXISTS {table}_event_id_key RENAME TO {aside}_event_id_key")
        op.execute(f"ALTER SEQUENCE IF EXISTS {table}_offset_seq RENAME TO {aside}_offset_seq")


def _copy(
    query: Any,
    key: Any,
    convert: Callable[[Any], tuple[dict[str, Any], str | None]],
    table: str,
    links: str | None,
) -> None:
    """Copy the rows of ``query`` (ordered by ``key``) in batches, each through ``convert``
    (a row and its impression id); the impression ids go to ``links`` if it is named."""
    bind = op.get_bind()
    target = sa.table(table, *(sa.column(n) for n in _columns(bind, table)))
    link_table = sa.table("event_impressions", sa.column("offset"), sa.column("impression_id"))
    for rows in _batches(bind, query, key):
        converted = [convert(row) for row in rows]
        bind.execute(target.insert(), [row for row, _ in converted])
        if links is not None:
            linked = [
                {"offset": row["offset"], "impression_id": impression_id}
                for row, impression_id in converted
                if impression_id is not None
            ]
            if linked:
                bind.execute(link_table.insert(), linked)


def _columns(bind: Any, table: str) -> list[str]:
    return [c["name"] for c in sa.inspect(bind).get_columns(table)]


def _batches(bind: Any, query: Any, key: Any) -> Iterator[list[Any]]:
    after: int | None = None
    while True:
        page = query if after is None else query.where(key > after)
        rows = bind.execute(page.limit(_BATCH)).mappings().all()
        if not rows:
            return
        yield rows
        after = rows[-1]["offset"]


def _to_compact(row: Any) -> tuple[dict[str, Any], str | None]:
    record = orjson.loads(row["payload"])
    more = {
        name: record[name]
        for name in ("text", "context", "attribution")
        if record.get(name) not in (None, {})
    }
    compact = {
        "offset": row["offset"],
        "event_id": _key(record["event_id"]),
        "user_id": record["user_id"],
        "item_id": record["item_id"],
        "type_code": TYPE_CODES[record["type"]],
        "timestamp": float(record["timestamp"]),
        "value": record.get("value"),
        "accepted_at": row["accepted_at"],
        "request_id": _request_key(record.get("request_id")),
        "extra": orjson.dumps(more) if more else None,
        "log_partition": row["log_partition"],
        "log_offset": row["log_offset"],
    }
    impression_id = row["impression_id"]
    return compact, None if impression_id is None else _key(impression_id)


def _to_payload(row: Any) -> tuple[dict[str, Any], str | None]:
    event_id = _text(row["event_id"])
    record: dict[str, Any] = {
        "event_id": event_id,
        "user_id": row["user_id"],
        "item_id": row["item_id"],
        "type": _TYPE_NAMES[row["type_code"]],
        "timestamp": row["timestamp"],
    }
    if row["value"] is not None:
        record["value"] = row["value"]
    if row["extra"] is not None:
        record.update(orjson.loads(row["extra"]))
    request_id = row["request_id"]
    if request_id is not None:
        record["request_id"] = request_id if isinstance(request_id, str) else request_id.hex()
    old = {
        "offset": row["offset"],
        "event_id": event_id,
        "user_id": row["user_id"],
        "type": record["type"],
        "payload": orjson.dumps(record),
        "accepted_at": row["accepted_at"],
        "impression_id": None if row["impression_id"] is None else _text(row["impression_id"]),
        "log_partition": row["log_partition"],
        "log_offset": row["log_offset"],
    }
    return old, None


def _carry_high_water(old: str, new: str) -> None:
    """Give ``new`` the offset high-water mark of ``old``: offsets are never reused."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        seq = bind.execute(sa.text(f"SELECT pg_get_serial_sequence('{old}', 'offset')")).scalar()
        if seq is None:
            return
        last, called = bind.execute(sa.text(f"SELECT last_value, is_called FROM {seq}")).one()
        bind.execute(
            sa.text(f"SELECT setval(pg_get_serial_sequence('{new}', 'offset'), :v, :c)"),
            {"v": last, "c": called},
        )
        return
    found = bind.execute(
        sa.text("SELECT seq FROM sqlite_sequence WHERE name = :old"), {"old": old}
    ).scalar()
    if found is None:
        return
    bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :new"), {"new": new})
    bind.execute(
        sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:new, :seq)"),
        {"new": new, "seq": found},
    )
