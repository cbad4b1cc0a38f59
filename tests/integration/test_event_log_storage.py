"""The SQL event log's compact rows: migration 0009 keeps every event, ids keep their keys."""

from __future__ import annotations

import importlib
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from hypothesis import given
from hypothesis import strategies as st

from recloop.adapters.sql import SqlDatabase, SqlEventLog
from recloop.adapters.sql.database import MIGRATIONS
from recloop.adapters.sql.log import TYPE_CODES, id_key, id_keys, id_text, request_key
from recloop.adapters.sql.privacy import SqlPrivacyStore
from recloop.core.events import FEEDBACK_TYPES, Event
from recloop.core.ids import uuid7
from recloop.core.privacy import Tombstone
from recloop.ports import StateChanges

_0009 = importlib.import_module("recloop.adapters.sql.migrations.versions.0009_compact_log")

# The events table as revision 0008 left it.
_OLD = sa.Table(
    "events",
    sa.MetaData(),
    sa.Column("offset", sa.BigInteger, primary_key=True),
    sa.Column("event_id", sa.String(128)),
    sa.Column("user_id", sa.String(128)),
    sa.Column("type", sa.String(16)),
    sa.Column("payload", sa.LargeBinary),
    sa.Column("accepted_at", sa.Float),
    sa.Column("impression_id", sa.String(128)),
    sa.Column("log_partition", sa.Integer),
    sa.Column("log_offset", sa.BigInteger),
)


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlDatabase]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    database = SqlDatabase(url)
    yield database
    await database.dispose()


async def _downgrade(db: SqlDatabase, revision: str) -> None:
    def run(connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with db.write() as conn:
        await conn.run_sync(run)


def _logged_at_0008() -> list[Event]:
    """Events as revision 0008 may hold them: every optional field, both kinds of id."""
    impression = uuid7()
    found = [
        Event(uuid7(), "u1", "i1", "like", 1_700_000_000.125),
        Event(uuid7(), "u1", "i2", "rating", 1_700_000_001.5, value=4.0, text="good"),
        Event(
            "client-7",
            "u2",
            "i1",
            "click",
            1_700_000_002.0,
            context={"device": "tv", "position": 3},
            attribution={"impression_id": impression, "algorithm": "popularity"},
            request_id="0f" * 16,
        ),
        Event(
            uuid7().upper(),  # not canonical: kept as text
            "u2",
            "i3",
            "dwell",
            1_700_000_003.0,
            value=12.5,
            attribution={"impression_id": impression, "propensity": 0.25},
        ),
        Event(uuid7(), "u3", "i4", "review", 1_700_000_004.0, text=""),
    ]
    found.extend(
        Event(uuid7(), f"u{n % 4}", f"i{n}", kind, 1_700_000_010.0 + n)
        for n, kind in enumerate(sorted(FEEDBACK_TYPES))
    )
    for offset, event in enumerate(found, start=1):
        event.offset = offset
    return found


async def test_0009_keeps_every_event_and_the_offset_high_water_mark(db: SqlDatabase) -> None:
    await db.migrate("0008")
    logged = _logged_at_0008()
    rows = [
        {
            "offset": e.offset,
            "event_id": e.event_id,
            "user_id": e.user_id,
            "type": e.type,
            "payload": orjson.dumps(e.to_record()),
            "accepted_at": 1_700_000_100.0 + e.offset,
            "impression_id": e.attribution.get("impression_id"),
            "log_partition": 2 if e.offset == 3 else None,
            "log_offset": 41 if e.offset == 3 else None,
        }
        for e in logged
    ]
    async with db.write() as conn:
        await conn.execute(_OLD.insert(), rows)
        # The last offset was purged (or erased): offsets are still never reused.
        await conn.execute(_OLD.delete().where(_OLD.c.offset == len(logged)))
        if db.dialect == "postgresql":
            await conn.execute(sa.text("SELECT setval('events_offset_seq', :n)"), {"n": 40})
    kept = logged[:-1]
    high_water = 40 if db.dialect == "postgresql" else len(logged)

    await db.migrate()
    log = SqlEventLog(db)
    assert await log.read(0, 100) == kept
    assert await log.last_offset() == len(kept)
    impression = logged[2].attribution["impression_id"]
    assert await log.read_impression_feedback(impression) == [logged[2], logged[3]]
    feedback = await log.read_feedback_of([impression, "none"])
    assert feedback == {impression: [logged[2], logged[3]], "none": []}
    assert await log.read_user_events("u2", 0.0, 2e9) == [e for e in kept if e.user_id == "u2"]
    fresh = Event(uuid7(), "u9", "i9", "like", 1_700_000_050.0)
    assert await log.append([fresh, logged[0]]) == [high_water + 1, None]
    # The distributed archive's positions came along: the same read again is first seen.
    again = Event(**{**_fields(logged[2]), "partition": 2, "offset": 41})
    assert await log.archive([again]) == [True]

    # And back: 0008's rows again, the new event included.
    await _downgrade(db, "0008")
    async with db.read() as conn:
        back = (await conn.execute(sa.select(_OLD).order_by(_OLD.c.offset))).mappings().all()
    assert [r["offset"] for r in back] == [e.offset for e in kept] + [high_water + 1]
    for row, event in zip(back, [*kept, fresh], strict=True):
        assert orjson.loads(row["payload"]) == event.to_record()
        assert (row["event_id"], row["type"]) == (event.event_id, event.type)
        assert row["impression_id"] == event.attribution.get("impression_id")
    assert (back[2]["log_partition"], back[2]["log_offset"]) == (2, 41)
    await db.migrate()
    assert [e.event_id for e in await SqlEventLog(db).read(0, 100)] == [
        e.event_id for e in [*kept, fresh]
    ]


def _fields(event: Event) -> dict[str, Any]:
    return {name: getattr(event, name) for name in Event.__slots__}


async def test_purge_and_erase_take_the_impression_links_along(db: SqlDatabase) -> None:
    await db.migrate()
    log, privacy = SqlEventLog(db), SqlPrivacyStore(db)
    shown = uuid7()

    def attributed(user: str) -> Event:
        return Event(uuid7(), user, "i", "click", 1.0, attribution={"impression_id": shown})

    first = [attributed("a"), attributed("b")]
    await log.append(first)
    assert await privacy.purge_events(before=2e9, max_offset=1, limit=10) == 1
    assert [e.user_id for e in await log.read_impression_feedback(shown)] == ["b"]
    await log.append([attributed("b"), attributed("c")])
    await privacy.erase("b", "digest-b", Tombstone(5.0, None), StateChanges())
    assert [e.user_id for e in await log.read_impression_feedback(shown)] == ["c"]
    async with db.read() as conn:
        links = (await conn.execute(sa.text("SELECT count(*) FROM event_impressions"))).scalar()
    assert links == 1


async def test_an_append_meeting_logged_ids_keeps_offsets_contiguous(tmp_path: Path) -> None:
    """The fast lane's rare path: rolled back and written again without the known ids."""
    db = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}")
    await db.migrate()
    try:
        log = SqlEventLog(db)
        ids = [uuid7() for _ in range(5)]
        requests = ["ab" * 16, "AB" * 16, "req-7", None, "ab" * 16]
        batch = [
            Event(i, "u", "x", "view", 1.0, request_id=r)
            for i, r in zip(ids, requests, strict=True)
        ]
        assert await log.append(batch[:2]) == [1, 2]
        again = [batch[1], batch[2], batch[2], batch[0], batch[3]]
        assert await log.append(again) == [None, 3, None, None, 4]
        for offset, e in enumerate(batch[:4], start=1):
            e.offset = offset
        assert await log.read(0, 10) == batch[:4]
    finally:
        await db.dispose()
    with sqlite3.connect(tmp_path / "f.db") as conn:
        kinds = conn.execute(
            'SELECT typeof(event_id), typeof(request_id) FROM events ORDER BY "offset"'
        ).fetchall()
    # uuid7 ids and generated request ids are kept as their 16 bytes, other ids as text.
    assert kinds == [("blob", "blob"), ("blob", "text"), ("blob", "text"), ("blob", "null")]


def test_every_feedback_type_has_a_code_and_the_migration_agrees() -> None:
    assert set(TYPE_CODES) == FEEDBACK_TYPES
    assert len(set(TYPE_CODES.values())) == len(TYPE_CODES)
    assert dict(TYPE_CODES) == _0009.TYPE_CODES


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_near_uuids = st.builds(
    lambda s, i, c: s[:i] + c + s[i + 1 :],
    st.builds(lambda: uuid7()),
    st.integers(0, 35),
    st.sampled_from(["-", "A", "g", " ", "0", "\n", "é"]),
)
_ids = st.one_of(st.builds(lambda: uuid7()), _near_uuids, st.text(max_size=40))


@given(st.lists(_ids, max_size=8))
def test_id_keys_are_one_to_one_and_match_the_one_at_a_time_rule(ids: list[str]) -> None:
    """The batch path against the per-id rule, with :func:`uuid.UUID` as the oracle of
    which ids are canonical UUIDs."""
    import uuid

    keys = id_keys(ids)
    assert keys == [id_key(i) for i in ids]
    for text, key in zip(ids, keys, strict=True):
        canonical = _UUID.fullmatch(text) is not None
        assert isinstance(key, bytes) == canonical
        if canonical:
            assert key == uuid.UUID(text).bytes
        assert id_text(key) == text


@given(st.one_of(st.text(max_size=40), st.binary(min_size=16, max_size=16).map(bytes.hex)))
def test_request_keys_read_back_as_sent(text: str) -> None:
    key = request_key(text)
    assert (key if isinstance(key, str) else key.hex()) == text
