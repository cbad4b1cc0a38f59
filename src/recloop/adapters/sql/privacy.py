"""Retention, erasure and export over SQL (SQLite or PostgreSQL)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import delete, select

from recloop.adapters.sql.base import dialect_insert
from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.experiments import add_experiment_stats_statement, stats_rows
from recloop.adapters.sql.impressions import impression_from_row, impression_query
from recloop.adapters.sql.log import READ_COLUMNS, event_from_row
from recloop.adapters.sql.optimizer import add_counts_statement, count_to_row
from recloop.adapters.sql.tables import (
    dead_letters,
    erased_users,
    event_impressions,
    events,
    experiment_exposures,
    experiment_user_metrics,
    impressions,
    privacy_meta,
    state_journal,
    user_reliability,
    user_state,
)
from recloop.adapters.sql.users import user_from_row
from recloop.core.events import Event
from recloop.core.experiments import UserMetric
from recloop.core.preferences import UserState
from recloop.core.privacy import Tombstone
from recloop.core.state import UserRows
from recloop.ports import Exposure, ReliabilityRecord, StateChanges, UserData

# What erase() deletes, per kind, keyed by user_id (events are handled apart).
_BY_USER = (
    ("impressions", impressions),
    ("state", user_state),
    ("exposures", experiment_exposures),
    ("metric_values", experiment_user_metrics),
    ("reliability", user_reliability),
    ("dead_letters", dead_letters),
)


class SqlPrivacyStore:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db
        self._add_stats = add_experiment_stats_statement(db)
        self._add_counts = add_counts_statement(db)
        tomb = dialect_insert(db, erased_users)
        self._put_tombstone = tomb.on_conflict_do_update(
            index_elements=["user_digest"],
            set_={"erased_at": tomb.excluded.erased_at, "log_offset": tomb.excluded.log_offset},
        )
        meta = dialect_insert(db, privacy_meta)
        self._put_meta = meta.on_conflict_do_update(
            index_elements=["name"], set_={"value": meta.excluded.value}
        )

    # -- retention -------------------------------------------------------------------

    async def purge_events(self, before: float, max_offset: int | None, limit: int) -> int:
        oldest = select(events.c.offset).where(events.c.accepted_at < before)
        if max_offset is not None:
            oldest = oldest.where(events.c.offset <= max_offset)
        # Offsets grow with acceptance: the oldest rows come first, the scan stops early.
        oldest = oldest.order_by(events.c.offset).limit(limit)
        linked = delete(event_impressions).where(event_impressions.c.offset.in_(oldest))
        async with self._db.write() as conn:
            await conn.execute(linked)  # the same rows: one transaction, one writer
            result = await conn.execute(delete(events).where(events.c.offset.in_(oldest)))
        return int(result.rowcount or 0)

    async def purge_impressions(self, before: float, limit: int) -> int:
        oldest = (
            select(impressions.c.impression_id)
            .where(impressions.c.created_at < before)
            .order_by(impressions.c.created_at)
            .limit(limit)
        )
        stmt = delete(impressions).where(impressions.c.impression_id.in_(oldest))
        return await self._delete(stmt)

    async def purge_dead_letters(self, before: float, limit: int) -> int:
        oldest = (
            select(dead_letters.c.id)
            .where(dead_letters.c.failed_at < before)
            .order_by(dead_letters.c.id)
            .limit(limit)
        )
        return await self._delete(delete(dead_letters).where(dead_letters.c.id.in_(oldest)))

    async def _delete(self, stmt: Any) -> int:
        async with self._db.write() as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount or 0)

    # -- export ------------------------------------------------------------------------

    async def user_data(self, user_id: str) -> UserData:
        async with self._db.read() as conn:
            state_row = (
                (await conn.execute(select(user_state).where(user_state.c.user_id == user_id)))
                .mappings()
                .first()
            )
            logged = await conn.execute(  # a scan: the log has no per-user index
                select(*(events.c[name] for name in READ_COLUMNS))
                .where(events.c.user_id == user_id)
                .order_by(events.c.offset)
            )
            found_events = [event_from_row(row) for row in logged]
            shown = await conn.execute(
                impression_query()
                .where(impressions.c.user_id == user_id)
                .order_by(impressions.c.created_at, impressions.c.impression_id)
            )
            found_impressions = [impression_from_row(dict(row)) for row in shown.mappings()]
            t = experiment_exposures
            exposed = await conn.execute(
                select(t.c.experiment_id, t.c.variant, t.c.exposed_at, t.c.overridden_by)
                .where(t.c.user_id == user_id)
                .order_by(t.c.exposed_at, t.c.experiment_id)
            )
            exposures = [Exposure(e, user_id, v, at, by) for e, v, at, by in exposed]
            m = experiment_user_metrics
            values = await conn.execute(
                select(m.c.experiment_id, m.c.metric, m.c.y, m.c.x)
                .where(m.c.user_id == user_id)
                .order_by(m.c.experiment_id, m.c.metric)
            )
            metric_values = [(e, name, UserMetric(y, x)) for e, name, y, x in values]
            record = (
                (
                    await conn.execute(
                        select(user_reliability).where(user_reliability.c.user_id == user_id)
                    )
                )
                .mappings()
                .first()
            )
            failed = await conn.execute(
                select(dead_letters.c.offset, dead_letters.c.payload, dead_letters.c.reason)
                .where(dead_letters.c.user_id == user_id)
                .order_by(dead_letters.c.id)
            )
            letters = [(Event.from_record(orjson.loads(p), o), r) for o, p, r in failed]
            journaled = await _journaled_state(conn, user_id)
        state = None if state_row is None else user_from_row(state_row)
        return UserData(
            state=journaled or state,
            events=found_events,
            impressions=found_impressions,
            exposures=exposures,
            metric_values=metric_values,
            reliability=None if record is None else ReliabilityRecord(**record),
            dead_letters=letters,
        )

    # -- erasure -----------------------------------------------------------------------

    async def erase(
        self, user_id: str, digest: str, tombstone: Tombstone, changes: StateChanges
    ) -> dict[str, int]:
        counts: dict[str, int] = {}
        # Scans of the log (it has no per-user index): erasure is rare.
        logged = delete(events).where(events.c.user_id == user_id)
        theirs = select(events.c.offset).where(events.c.user_id == user_id)
        if tombstone.log_offset is not None:
            logged = logged.where(events.c.offset <= tombstone.log_offset)
            theirs = theirs.where(events.c.offset <= tombstone.log_offset)
        linked = delete(event_impressions).where(event_impressions.c.offset.in_(theirs))
        async with self._db.write() as conn:
            await conn.execute(linked)
            counts["events"] = int((await conn.execute(logged)).rowcount or 0)
            for kind, table in _BY_USER:
                result = await conn.execute(delete(table).where(table.c.user_id == user_id))
                counts[kind] = int(result.rowcount or 0)
            if await _erase_journaled(conn, user_id):
                counts["state"] = 1
            if changes.experiment_stats:
                await conn.execute(self._add_stats, stats_rows(changes.experiment_stats))
            if changes.algorithm_counts:
                await conn.execute(
                    self._add_counts, [count_to_row(c) for c in changes.algorithm_counts]
                )
            await conn.execute(
                self._put_tombstone,
                {
                    "user_digest": digest,
                    "erased_at": tombstone.erased_at,
                    "log_offset": tombstone.log_offset,
                },
            )
        return counts

    async def get_tombstones(self) -> dict[str, Tombstone]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(erased_users))).all()
        return {d: Tombstone(at, None if o is None else int(o)) for d, at, o in rows}

    # -- key fingerprint ---------------------------------------------------------------------

    async def get_meta(self, name: str) -> str | None:
        query = select(privacy_meta.c.value).where(privacy_meta.c.name == name)
        async with self._db.read() as conn:
            value = (await conn.execute(query)).scalar()
        return None if value is None else str(value)

    async def put_meta(self, name: str, value: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(self._put_meta, {"name": name, "value": value})

    async def has_users(self) -> bool:
        async with self._db.read() as conn:
            found = (await conn.execute(select(user_state.c.user_id).limit(1))).first()
            journaled = (await conn.execute(select(state_journal.c.seq).limit(1))).first()
        return found is not None or journaled is not None


# The state journal holds users' latest rows until compacted (a few seconds' worth, as
# records of many users each): export and erasure read every record (they are rare).


async def _journaled_state(conn: Any, user_id: str) -> UserState | None:
    """The user's row in the latest journal record that has one (newer than user_state's)."""
    query = select(state_journal.c.users).order_by(state_journal.c.seq.desc())
    for (record,) in await conn.execute(query):
        rows = UserRows.from_bytes(bytes(record))
        if user_id in rows.user_ids:
            return rows.state(rows.user_ids.index(user_id))
    return None


async def _erase_journaled(conn: Any, user_id: str) -> bool:
    """Rewrite the journal records that hold the user without their rows; whether any did."""
    found = False
    query = select(state_journal.c.seq, state_journal.c.users)
    for seq, record in (await conn.execute(query)).all():
        rows = UserRows.from_bytes(bytes(record))
        if user_id not in rows.user_ids:
            continue
        found = True
        rest = rows.without([user_id])
        where = state_journal.c.seq == seq
        if len(rest):
            await conn.execute(state_journal.update().where(where).values(users=rest.to_bytes()))
        else:
            await conn.execute(delete(state_journal).where(where))
    return found
