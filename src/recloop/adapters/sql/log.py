"""The event log over SQL (SQLite or PostgreSQL), built for append.

One compact row per event in ``events`` (see ``tables.py``): typed columns for
what every event has, the type as a small integer code (:data:`TYPE_CODES`),
and one nullable ``extra`` blob (orjson) for the optional fields an event has
(text, context, attribution). The hot table has two B-trees: the offset (the
row id) and ``event_id``, the idempotency key exactly-once needs. Nothing else
is indexed there:

- per-user look-ups (:meth:`SqlEventLog.read_user_events`, privacy export and
  erasure) scan the table;
- per-impression look-ups (training joins, the impression route) go through
  ``event_impressions``, a side table written only for events that carry
  ``attribution.impression_id``, in the same transaction as the events.

On a SQLite file, :meth:`SqlEventLog.append` runs in the writer thread as
multi-row inserts with the offsets assigned up front (no look-up first); the
rare batch that meets an ``event_id`` logged before is rolled back to a
savepoint and written again without it, so offsets stay contiguous. SQLite
keeps canonical UUID ids and generated request ids as 16 bytes
(:func:`id_key`, :func:`request_key`); PostgreSQL keeps text.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Final

import orjson
from sqlalchemy import String, bindparam, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.pg import PgStatement
from recloop.adapters.sql.tables import event_impressions, events
from recloop.core.events import Event
from recloop.core.records import dumps as encode_record

TYPE_CODES: Final[Mapping[str, int]] = {
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
"""Each feedback type's code in ``events.type_code``. Stored: a code is never reused or
renumbered; a new type takes the next one (and migration 0009 keeps its own copy)."""

_TYPE_NAMES: Final = {code: name for name, code in TYPE_CODES.items()}

READ_COLUMNS: Final = (
    "offset",
    "event_id",
    "user_id",
    "item_id",
    "type_code",
    "timestamp",
    "value",
    "request_id",
    "extra",
)
"""The columns :func:`event_from_row` reads, in its order."""

_WRITE_COLUMNS: Final = (
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
)
_SELECT: Final = ", ".join(f'"{c}"' for c in READ_COLUMNS)
_INSERT_SQLITE: Final = "INSERT INTO events ({}) VALUES ".format(
    ", ".join(f'"{c}"' for c in _WRITE_COLUMNS)
)
_ROW_MARKS: Final = "({})".format(", ".join("?" * len(_WRITE_COLUMNS)))
_ROWS_PER_INSERT: Final = 1_000  # 10,000 bound parameters, below SQLite's 32,766
_LINK_SQLITE: Final = 'INSERT INTO event_impressions ("offset", impression_id) VALUES (?, ?)'
_SQLITE_IN_CHUNK: Final = 10_000  # below SQLite's limit of 32,766 bound parameters
_ARCHIVE_COLUMNS: Final = (*_WRITE_COLUMNS[1:], "log_partition", "log_offset")
_FOUND_PG: Final = (
    'SELECT event_id, "offset", log_partition, log_offset FROM events'
    " WHERE event_id = ANY($1::VARCHAR[])"
)


_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def id_key(text: str, _match: Any = _UUID.match, _unhex: Any = bytes.fromhex) -> str | bytes:
    """How SQLite keeps an id (``event_id``, an impression id): a UUID in its canonical
    text form (lowercase, hyphenated, as :func:`~recloop.core.ids.uuid7` writes it) as its
    16 bytes, any other id as it is. SQLite never finds a BLOB equal to a TEXT, so this
    is one-to-one and ``UNIQUE(event_id)`` means what it meant; PostgreSQL keeps text.

    >>> id_key("0193a6b2-7c1e-7def-8a00-0123456789ab")
    b'\\x01\\x93\\xa6\\xb2|\\x1e}\\xef\\x8a\\x00\\x01#Eg\\x89\\xab'
    >>> id_key("order-17"), id_key("0193A6B2-7C1E-7DEF-8A00-0123456789AB")[:8]
    ('order-17', '0193A6B2')
    """
    return _unhex(text.replace("-", "")) if _match(text) else text


def id_keys(ids: Sequence[str]) -> list[str | bytes]:
    """:func:`id_key` of each of ``ids``, in one pass where all are canonical UUIDs.

    >>> id_keys(["0193a6b2-7c1e-7def-8a00-0123456789ab", "order-17"])[1]
    'order-17'
    """
    n = len(ids)
    if n and set(map(len, ids)) == {36}:
        joined = "".join(ids)
        if joined.count("-") == 4 * n and (
            joined[8::36] == joined[13::36] == joined[18::36] == joined[23::36] == "-" * n
        ):
            digits = joined.replace("-", "")
            try:
                raw = bytes.fromhex(digits)
            except ValueError:  # not hex: some ids are not UUIDs
                raw = b""
            if len(raw) == 16 * n and raw.hex() == digits:  # lowercase, no blanks
                return [raw[i : i + 16] for i in range(0, 16 * n, 16)]
    return [id_key(i) for i in ids]


def id_text(key: str | bytes) -> str:
    """The id :func:`id_key` kept as ``key``.

    >>> id_text(id_key("0193a6b2-7c1e-7def-8a00-0123456789ab")), id_text("order-17")
    ('0193a6b2-7c1e-7def-8a00-0123456789ab', 'order-17')
    """
    if isinstance(key, str):
        return key
    h = key.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def request_key(text: str) -> str | bytes:
    """How SQLite keeps a request id: 32 lowercase hex digits (the form recloop generates)
    as their 16 bytes, any other id as it is (request ids are only read back).

    >>> request_key("0f" * 16) == bytes([15] * 16), request_key("req-1")
    (True, 'req-1')
    """
    if len(text) == 32:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            return text
        if len(raw) == 16 and raw.hex() == text:
            return raw
    return text


def _same(text: str) -> str:
    return text


def type_code(event_type: str) -> int:
    """The stored code of ``event_type``; ValueError names an unknown type."""
    try:
        return TYPE_CODES[event_type]
    except KeyError:
        raise ValueError(f"type: no storage code for {event_type!r}") from None


def extra(event: Event, keep_text: bool = True) -> bytes | None:
    """The ``extra`` blob of ``event``: its optional fields that are set, or None."""
    text = event.text if keep_text else None
    if text is None and not event.context and not event.attribution:
        return None
    record: dict[str, Any] = {}
    if text is not None:
        record["text"] = text
    if event.context:
        record["context"] = dict(event.context)
    if event.attribution:
        record["attribution"] = dict(event.attribution)
    return encode_record(record)


def event_from_row(row: Sequence[Any]) -> Event:
    """An :class:`Event` from a row of :data:`READ_COLUMNS`."""
    offset, key, user_id, item_id, code, timestamp, value, request, blob = row
    event_id = key if type(key) is str else id_text(key)
    request_id = request if request is None or type(request) is str else request.hex()
    if blob is None:
        return Event(
            event_id,
            user_id,
            item_id,
            _TYPE_NAMES[code],
            timestamp,
            value,
            offset=offset,
            request_id=request_id,
        )
    more = orjson.loads(blob)
    return Event(
        event_id,
        user_id,
        item_id,
        _TYPE_NAMES[code],
        timestamp,
        value,
        more.get("text"),
        more.get("context") or {},
        more.get("attribution") or {},
        offset=offset,
        request_id=request_id,
    )


def _rows(
    batch: Sequence[Event], accepted_at: float, keep_text: bool, compact_ids: bool
) -> list[tuple[Any, ...]]:
    """``batch`` as rows of ``_WRITE_COLUMNS`` without the offset (ids as :func:`id_keys`
    and :func:`request_key` keep them where ``compact_ids``)."""
    codes = TYPE_CODES
    names = [e.event_id for e in batch]
    ids: Sequence[str | bytes] = id_keys(names) if compact_ids else names
    requests: dict[str | None, str | bytes | None] = {
        r: request_key(r) if compact_ids and r is not None else r
        for r in {e.request_id for e in batch}
    }
    try:
        return [
            (
                key,
                e.user_id,
                e.item_id,
                codes[e.type],
                e.timestamp,
                e.value,
                accepted_at,
                requests[e.request_id],
                None
                if not e.context and not e.attribution and e.text is None
                # an event without optional fields (most) costs no call
                else extra(e, keep_text),
            )
            for e, key in zip(batch, ids, strict=True)
        ]
    except KeyError:
        for e in batch:
            type_code(e.type)  # raises, naming the type
        raise


def _in(column: Any, keys: Sequence[str | bytes]) -> Any:
    """``column IN keys`` with the keys bound as they are (text or, on SQLite, bytes)."""
    return column.in_(bindparam("keys", list(keys), expanding=True, type_=String()))


def _impression_id(event: Event) -> str | None:
    found = event.attribution.get("impression_id") if event.attribution else None
    return None if found is None else str(found)


class SqlEventLog:
    def __init__(
        self, db: SqlDatabase, keep_text: bool = True, pg_lane: bool | None = None
    ) -> None:
        """``keep_text``: whether :meth:`archive` keeps review text (privacy.keep_review_text).
        ``pg_lane``: on PostgreSQL, :meth:`archive` through :mod:`~recloop.adapters.sql.pg`
        (the default); False keeps SQLAlchemy's path, the oracle of the differential tests."""
        self._db = db
        self._pg_lane = db.pg_lane if pg_lane is None else pg_lane and db.pg_lane
        self._keep_text = keep_text
        self._compact_ids = db.dialect == "sqlite"
        self._key = id_key if self._compact_ids else _same
        dialect = postgresql if db.dialect == "postgresql" else sqlite
        stmt = dialect.insert(events).on_conflict_do_nothing(index_elements=["event_id"])
        self._append = stmt.returning(events.c.offset, events.c.event_id)
        self._add_impressions = event_impressions.insert()
        self._columns = [events.c[name] for name in READ_COLUMNS]
        self._joined = select(*self._columns, event_impressions.c.impression_id).join_from(
            event_impressions, events, events.c.offset == event_impressions.c.offset
        )
        if self._pg_lane:
            archived = stmt.returning(
                events.c.event_id, events.c.offset, events.c.log_partition, events.c.log_offset
            )
            self._archive_pg = PgStatement(archived, _ARCHIVE_COLUMNS).unnest()
            self._link_pg = PgStatement(self._add_impressions, ["offset", "impression_id"]).unnest()

    async def append(self, batch: Sequence[Event]) -> list[int | None]:
        if not batch:
            return []
        rows = _rows(batch, time.time(), True, self._compact_ids)
        if self._db.fast_lane:
            return await self._db.run_write(partial(_append_sqlite, batch, rows))
        params = [dict(zip(_WRITE_COLUMNS[1:], row, strict=True)) for row in rows]
        async with self._db.write() as conn:
            result = await conn.execute(self._append, params)
            written = {key: offset for offset, key in result.all()}
            offsets = [written.pop(row[0], None) for row in rows]
            linked = [
                {"offset": offset, "impression_id": self._key(impression_id)}
                for e, offset in zip(batch, offsets, strict=True)
                if offset is not None and (impression_id := _impression_id(e)) is not None
            ]
            if linked:
                await conn.execute(self._add_impressions, linked)
        return offsets

    async def archive(self, batch: Sequence[Event]) -> list[bool]:
        """Keep events read from the distributed log; which of them are first seen here.

        ``Event.partition`` and ``Event.offset`` say where each was read. An
        event is *first seen* at the position it was first archived from: read
        again from there (redelivered after a crash or a rebalance) it is
        still first seen; the same ``event_id`` at another position (a client's
        retry, a spool replay) is a duplicate. The answer is the same however
        often a batch is archived, so a worker can crash anywhere around it.
        """
        if not batch:
            return []
        rows = _rows(batch, time.time(), self._keep_text, self._compact_ids)
        if self._pg_lane:
            return await self._archive_arrays(batch, rows)
        params = [
            {
                **dict(zip(_WRITE_COLUMNS[1:], row, strict=True)),
                "log_partition": e.partition,
                "log_offset": e.offset,
            }
            for e, row in zip(batch, rows, strict=True)
        ]
        keys = list({row[0] for row in rows})
        query = select(
            events.c.event_id, events.c.offset, events.c.log_partition, events.c.log_offset
        )
        async with self._db.write() as conn:
            added = {key for _, key in (await conn.execute(self._append, params)).all()}
            found: dict[Any, tuple[int, tuple[int | None, int | None]]] = {}
            for start in range(0, len(keys), _SQLITE_IN_CHUNK):
                chunk = keys[start : start + _SQLITE_IN_CHUNK]
                stored = await conn.execute(query.where(_in(events.c.event_id, chunk)))
                found.update((key, (offset, (p, o))) for key, offset, p, o in stored)
            # The impressions of the events written now, each taken from the batch's
            # event at the position that was stored.
            linked: dict[int, Any] = {}
            for e, row in zip(batch, rows, strict=True):
                offset, position = found[row[0]]
                impression_id = _impression_id(e)
                if row[0] in added and position == (e.partition, e.offset) and impression_id:
                    linked.setdefault(offset, self._key(impression_id))
            if linked:
                await conn.execute(
                    self._add_impressions,
                    [{"offset": o, "impression_id": i} for o, i in linked.items()],
                )
        return [
            found[row[0]][1] == (e.partition, e.offset) for e, row in zip(batch, rows, strict=True)
        ]

    async def _archive_arrays(
        self, batch: Sequence[Event], rows: list[tuple[Any, ...]]
    ) -> list[bool]:
        """:meth:`archive` on PostgreSQL: the batch as one array per column in one insert,
        whose ``RETURNING`` tells where each row written now sits; only the ids it did not
        write (logged before, or twice in the batch) are looked up."""
        columns: list[Any] = [list(c) for c in zip(*rows, strict=True)]
        columns.append([e.partition for e in batch])
        columns.append([e.offset for e in batch])
        async with self._db.pg_write() as conn:
            written = await conn.fetch(self._archive_pg, *columns)
            found: dict[Any, tuple[int, tuple[int | None, int | None]]] = {
                key: (offset, (p, o)) for key, offset, p, o in written
            }
            missing = {row[0] for row in rows if row[0] not in found}
            if missing:
                stored = await conn.fetch(_FOUND_PG, list(missing))
                found.update((key, (offset, (p, o))) for key, offset, p, o in stored)
            # The impressions of the events written now, each taken from the batch's
            # event at the position that was stored.
            linked: dict[int, Any] = {}
            if len(written):
                for e, row in zip(batch, rows, strict=True):
                    impression_id = _impression_id(e)
                    if impression_id:
                        offset, position = found[row[0]]
                        if position == (e.partition, e.offset) and row[0] not in missing:
                            linked.setdefault(offset, impression_id)
            if linked:
                await conn.execute(self._link_pg, list(linked), list(linked.values()))
        return [
            found[row[0]][1] == (e.partition, e.offset) for e, row in zip(batch, rows, strict=True)
        ]

    async def read(self, after: int, limit: int) -> list[Event]:
        rows: Sequence[Any]
        if self._db.fast_lane:
            sql = f'SELECT {_SELECT} FROM events WHERE "offset" > ? ORDER BY "offset" LIMIT ?'
            rows = await self._db.run_read(
                lambda conn: conn.execute(sql, (after, limit)).fetchall()
            )
        else:
            query = (
                select(*self._columns)
                .where(events.c.offset > after)
                .order_by(events.c.offset)
                .limit(limit)
            )
            async with self._db.read() as conn:
                rows = (await conn.execute(query)).all()
        return [event_from_row(row) for row in rows]

    async def last_offset(self) -> int:
        async with self._db.read() as conn:
            value = (await conn.execute(select(func.max(events.c.offset)))).scalar()
        return int(value or 0)

    async def read_user_events(self, user_id: str, since: float, until: float) -> list[Event]:
        """A scan of the log (the hot table has no per-user index)."""
        rows: Sequence[Any]
        if self._db.fast_lane:
            sql = (
                f'SELECT {_SELECT} FROM events WHERE user_id = ? AND "timestamp" >= ?'
                ' AND "timestamp" < ? ORDER BY "offset"'
            )
            params = (user_id, since, until)
            rows = await self._db.run_read(lambda conn: conn.execute(sql, params).fetchall())
        else:
            query = (
                select(*self._columns)
                .where(
                    events.c.user_id == user_id,
                    events.c.timestamp >= since,
                    events.c.timestamp < until,
                )
                .order_by(events.c.offset)
            )
            async with self._db.read() as conn:
                rows = (await conn.execute(query)).all()
        return [event_from_row(row) for row in rows]

    async def read_users_events(
        self, user_ids: Sequence[str], since: float, until: float, after: int = 0
    ) -> dict[str, list[Event]]:
        """One scan of the log above ``after`` for all of them (a range of the primary
        key; in slices of 500 ids: SQLite's limit on parameters)."""
        found: dict[str, list[Event]] = {u: [] for u in user_ids}
        ids = list(found)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            query = (
                select(*self._columns)
                .where(
                    events.c.offset > after,
                    events.c.user_id.in_(part),
                    events.c.timestamp >= since,
                    events.c.timestamp < until,
                )
                .order_by(events.c.offset)
            )
            async with self._db.read() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                event = event_from_row(row)
                found[event.user_id].append(event)
        return found

    async def offset_logged_before(self, logged_at: float) -> int:
        """Bisection over the primary key: each step reads the first row at or above an
        offset (offsets have gaps where events were purged or erased)."""
        if self._db.fast_lane:
            return await self._db.run_read(partial(_offset_logged_before_sqlite, logged_at))
        first = select(events.c.offset, events.c.accepted_at).order_by(events.c.offset).limit(1)
        async with self._db.read() as conn:
            # (min and max in one SELECT would scan the table on SQLite)
            row = (await conn.execute(first)).first()
            if row is None or row[1] >= logged_at:
                return 0
            lo = int(row[0])
            hi = int((await conn.execute(select(func.max(events.c.offset)))).scalar_one())
            # lo: an offset logged before; every offset above hi: at or after (or none).
            # 32 probes a round trip (a few rounds for millions of rows).
            while lo < hi:
                step = max(1, (hi - lo) // _PROBES)
                probes = range(lo + step, hi + 1, step)[:_PROBES]
                found = (await conn.execute(text(_probe_sql(probes)))).all()
                for probe, offset, at in sorted(found):
                    if at < logged_at:
                        lo = max(lo, int(offset))
                    else:
                        hi = probe - 1
                        break
        return lo

    async def read_feedback_of(self, impression_ids: Sequence[str]) -> dict[str, list[Event]]:
        found: dict[str, list[Event]] = {i: [] for i in impression_ids}
        keys = {self._key(i): i for i in found}
        chunks = list(keys)
        async with self._db.read() as conn:
            for start in range(0, len(chunks), _SQLITE_IN_CHUNK):
                query = self._joined.where(
                    _in(event_impressions.c.impression_id, chunks[start : start + _SQLITE_IN_CHUNK])
                ).order_by(events.c.offset)
                for row in (await conn.execute(query)).all():
                    found[keys[row[-1]]].append(event_from_row(row[:-1]))
        return found

    async def read_impression_clicks(self, after: int, limit: int) -> list[Event]:
        """Through ``event_impressions`` (keyed by offset): only the events that name an
        impression are visited, not the whole log."""
        query = (
            self._joined.where(
                event_impressions.c.offset > after,
                events.c.type_code == TYPE_CODES["click"],
            )
            .order_by(event_impressions.c.offset)
            .limit(limit)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [event_from_row(row[:-1]) for row in rows]

    async def read_impression_feedback(self, impression_id: str) -> list[Event]:
        query = self._joined.where(
            _in(event_impressions.c.impression_id, [self._key(impression_id)])
        ).order_by(events.c.offset)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [event_from_row(row[:-1]) for row in rows]


_PROBES = 32


def _probe_sql(probes: Sequence[int]) -> str:
    """For each probe offset (an int we made), the first row at or above it."""
    return " UNION ALL ".join(
        f'SELECT * FROM (SELECT {int(p)} AS probe, "offset", accepted_at FROM events'
        f' WHERE "offset" >= {int(p)} ORDER BY "offset" LIMIT 1) AS p{k}'
        for k, p in enumerate(probes)
    )


def _offset_logged_before_sqlite(logged_at: float, conn: sqlite3.Connection) -> int:
    """:meth:`SqlEventLog.offset_logged_before` in one call of the reader thread."""
    first = 'SELECT "offset", accepted_at FROM events WHERE "offset" >= ? ORDER BY "offset" LIMIT 1'
    row = conn.execute(first, (0,)).fetchone()
    if row is None or row[1] >= logged_at:
        return 0
    lo = int(row[0])
    hi = int(conn.execute('SELECT max("offset") FROM events').fetchone()[0])
    while lo < hi:
        mid = (lo + hi + 1) // 2
        row = conn.execute(first, (mid,)).fetchone()
        if row[1] < logged_at:
            lo = int(row[0])
        else:
            hi = mid - 1
    return lo


def _append_sqlite(
    batch: Sequence[Event], rows: list[tuple[Any, ...]], conn: sqlite3.Connection
) -> list[int | None]:
    """The SQLite hot path, in the writer thread (writers are serialised).

    Offsets are assigned here, from AUTOINCREMENT's high-water mark (never reused,
    even after purges), and the rows written by multi-row inserts whose conflict
    clause skips a known ``event_id``. If it skipped none, every offset
    is as assigned. Otherwise (a retried batch, an id twice in the batch) the
    insert is rolled back to its savepoint and the batch written again without the
    ids logged before, so offsets stay contiguous.
    """
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    base = int(seq[0]) if seq else 0
    conn.execute("SAVEPOINT log_append")
    offsets: list[int | None]
    if _insert_sqlite(rows, base, conn) == len(rows):
        conn.execute("RELEASE log_append")
        offsets = list(range(base + 1, base + 1 + len(rows)))
    else:
        conn.execute("ROLLBACK TO log_append")
        conn.execute("RELEASE log_append")
        offsets = _append_new_sqlite(rows, base, conn)
    linked = [
        (offset, id_key(impression_id))
        for e, offset in zip(batch, offsets, strict=True)
        if e.attribution and offset is not None and (impression_id := _impression_id(e))
    ]
    if linked:
        conn.executemany(_LINK_SQLITE, linked)
    return offsets


def _append_new_sqlite(
    rows: list[tuple[Any, ...]], base: int, conn: sqlite3.Connection
) -> list[int | None]:
    """Write the rows whose ``event_id`` is neither logged nor earlier in the batch."""
    keys = list({row[0] for row in rows})
    existing: set[Any] = set()
    for start in range(0, len(keys), _SQLITE_IN_CHUNK):
        chunk = keys[start : start + _SQLITE_IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        found = conn.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
        existing.update(r[0] for r in found)
    offsets: list[int | None] = []
    params = []
    offset = base
    for row in rows:
        if row[0] in existing:
            offsets.append(None)
            continue
        existing.add(row[0])
        offset += 1
        offsets.append(offset)
        params.append((offset, *row))
    if params:
        _insert_sqlite(params, None, conn)
    return offsets


def _insert_sqlite(rows: list[tuple[Any, ...]], base: int | None, conn: sqlite3.Connection) -> int:
    """Insert ``rows`` (numbered from ``base + 1``, or carrying their offsets if ``base`` is
    None), skipping an ``event_id`` already there; how many were inserted.

    One multi-row ``VALUES`` statement per thousand rows rather than ``executemany``'s
    one per row: statement overhead and AUTOINCREMENT's bookkeeping are paid per
    statement.
    """
    inserted = 0
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        flat: list[Any] = []
        if base is None:
            for row in chunk:
                flat.extend(row)
        else:
            for offset, row in enumerate(chunk, start=base + start + 1):
                flat.append(offset)
                flat.extend(row)
        marks = ",".join([_ROW_MARKS] * len(chunk))
        sql = f"{_INSERT_SQLITE}{marks} ON CONFLICT (event_id) DO NOTHING"
        inserted += conn.execute(sql, flat).rowcount
    return inserted
