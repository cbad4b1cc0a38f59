"""Users' learnt state over SQL, and the state commit (the ``UserStateStore`` role of the
state store).

The commit writes, in one transaction, everything a :class:`StateChanges` holds: users'
rows or a journal record, the algorithms' counts (``optimizer.py``'s statement), the
experiments' exposures, values and statistics (``experiments.py``'s statements), the
applied watermark and partitions' positions, and the writer's commit mark. It has three
lanes: SQLite's fast lane (one call in the writer thread), PostgreSQL's lane (asyncpg,
the users as one array per column) and SQLAlchemy Core (PostgreSQL without the lane,
SQLite in memory).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from sqlalchemy import bindparam, case, delete, select

from recloop.adapters.sql.base import SqlRole, dialect_insert, executemany, select_in, vector_of
from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.experiments import (
    add_experiment_stats_statement,
    add_exposures_statement,
    set_user_metrics_statement,
    stats_rows,
)
from recloop.adapters.sql.optimizer import add_counts_statement, count_to_row
from recloop.adapters.sql.pg import PgStatement
from recloop.adapters.sql.tables import commit_marks, consumer_offsets, state_journal, user_state
from recloop.core.ids import uuid7
from recloop.core.preferences import UserState
from recloop.core.state import UserRows
from recloop.ports import Exposure, StateChanges

CONSUMER = "processor"
PARTITION_CONSUMER = "partition:"
"""Prefix of the ``consumer_offsets`` rows holding event-topic partitions' offsets."""

_USERS_PG = "SELECT {} FROM user_state WHERE user_id = ANY($1::VARCHAR[])".format(
    ", ".join(c.name for c in user_state.c)
)
POINT_READ_MAX = 4
"""SQLite: users read by primary key at once on the caller's thread (``run_point_read``),
at most; more go to the reader thread."""
_MARKS_KEPT_SECONDS = 7 * 86_400.0
"""A writer's commit mark outlives its process by this much (then it is pruned)."""


class SqlUserStateStore(SqlRole):
    def __init__(self, db: SqlDatabase, pg_lane: bool | None = None) -> None:
        super().__init__(db, pg_lane)
        # This process's name in commit_marks (see StateChanges.commit_id).
        self._writer = uuid7()
        self._marks_pruned = False
        # The state journal's users, by their latest record, and each record's users (as
        # this process read and wrote them: the embedded server is the journal's only
        # writer); None until first needed.
        self._journal_latest: dict[str, int] | None = None
        self._journal_users: dict[int, list[str]] = {}
        marks = dialect_insert(db, commit_marks)
        self._mark_commit = marks.on_conflict_do_update(
            index_elements=["writer"],
            set_={name: marks.excluded[name] for name in ("commit_id", "committed_at")},
        )
        self._last_commit = select(commit_marks.c.commit_id).where(
            commit_marks.c.writer == bindparam("writer")
        )
        self._prune_marks = delete(commit_marks).where(
            commit_marks.c.committed_at < bindparam("before")
        )
        upsert = dialect_insert(db, user_state)
        # A user's applied offsets never go back: a stale write (a worker that lost the
        # user's partition to another, then wrote late) leaves the newer state alone.
        self._save_user = upsert.on_conflict_do_update(
            index_elements=["user_id"],
            set_={c.name: upsert.excluded[c.name] for c in user_state.c if c.name != "user_id"},
            where=(upsert.excluded.explicit_offset >= user_state.c.explicit_offset)
            & (upsert.excluded.implicit_offset >= user_state.c.implicit_offset),
        )
        offsets = dialect_insert(db, consumer_offsets)
        self._save_offset = offsets.on_conflict_do_update(
            index_elements=["consumer"], set_={"offset": offsets.excluded.offset}
        )
        # Partition offsets only move forward: a late write from a worker that has
        # lost the partition (a zombie) cannot take them back.
        ahead = offsets.excluded.offset > consumer_offsets.c.offset
        self._save_position = offsets.on_conflict_do_update(
            index_elements=["consumer"],
            set_={
                "offset": case((ahead, offsets.excluded.offset), else_=consumer_offsets.c.offset)
            },
        )
        self._add_counts = add_counts_statement(db)
        self._add_exposure = add_exposures_statement(db)
        self._set_user_metric = set_user_metrics_statement(db)
        self._add_experiment_stats = add_experiment_stats_statement(db)
        self._add_record = state_journal.insert()
        self._drop_records = delete(state_journal).where(
            state_journal.c.seq <= bindparam("through")
        )
        # The fast lane's SQL for every statement commit() may run; PostgreSQL's lane
        # runs them too.
        committed = (
            self._last_commit,
            self._mark_commit,
            self._prune_marks,
            self._save_user,
            self._save_offset,
            self._save_position,
            self._add_counts,
            self._add_exposure,
            self._set_user_metric,
            self._add_experiment_stats,
            self._add_record,
            self._drop_records,
        )
        self._compile(*committed)
        if self._pg_lane:  # PostgreSQL: the same statements, compiled once for asyncpg
            self._pg = {id(stmt): PgStatement(stmt) for stmt in committed}
            self._save_users_pg = self._pg[id(self._save_user)].unnest()

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        """The users' newest committed rows: the user table's, or a newer one in the state
        journal (found by this process's index of the journal, read once)."""
        found = await self._stored_users(user_ids)
        index = await self._journal_index()
        wanted = {u: index[u] for u in user_ids if u in index}
        if wanted:
            query = select(state_journal.c.seq, state_journal.c.users).where(
                state_journal.c.seq.in_(sorted(set(wanted.values())))
            )
            async with self._db.read() as conn:
                records = [
                    (seq, UserRows.from_bytes(bytes(r))) for seq, r in await conn.execute(query)
                ]
            for seq, rows in records:
                for i, user_id in enumerate(rows.user_ids):
                    if wanted.get(user_id) == seq:  # an older record may hold an older row
                        found[user_id] = rows.state(i)
        return found

    async def get_user_ids(self) -> list[str]:
        async with self._db.read() as conn:
            stored = (await conn.execute(select(user_state.c.user_id))).scalars().all()
        return [*stored, *await self._journal_index()]

    async def _stored_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        if not user_ids:
            return {}
        if self._pg_lane:
            async with self._db.pg_read() as conn:
                found = await conn.fetch(_USERS_PG, list(user_ids))
            return {row["user_id"]: user_from_row(row) for row in found}
        if self._db.fast_lane:
            select_users = partial(select_in, user_state, "user_id", user_ids)
            if len(user_ids) <= POINT_READ_MAX:  # the read path's one user: no hand-off
                found = await self._db.run_point_read(select_users)
            else:
                found = await self._db.run_read(select_users)
            return {row["user_id"]: user_from_row(row) for row in found}
        query = select(user_state).where(user_state.c.user_id.in_(list(user_ids)))
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return {row["user_id"]: user_from_row(row) for row in rows}

    async def commit(self, changes: StateChanges) -> None:
        batches: list[tuple[Any, list[dict[str, Any]]]] = []
        users = _user_columns(changes.users) if len(changes.users) else None
        if users is not None and not self._db.fast_lane and not self._pg_lane:
            names = list(users)
            rows = [
                dict(zip(names, values, strict=True))
                for values in zip(*users.values(), strict=True)
            ]
            batches.append((self._save_user, rows))
        if changes.algorithm_counts:
            batches.append((self._add_counts, [count_to_row(c) for c in changes.algorithm_counts]))
        if changes.exposures:
            rows = [{n: getattr(e, n) for n in Exposure.__slots__} for e in changes.exposures]
            batches.append((self._add_exposure, rows))
        if changes.user_metrics:
            rows = [
                {"experiment_id": e, "user_id": u, "metric": m, "y": v.y, "x": v.x}
                for e, u, m, v in changes.user_metrics
            ]
            batches.append((self._set_user_metric, rows))
        if changes.experiment_stats:
            rows = stats_rows(changes.experiment_stats)
            batches.append((self._add_experiment_stats, rows))
        if changes.watermark is not None:
            batches.append(
                (self._save_offset, [{"consumer": CONSUMER, "offset": changes.watermark}])
            )
        if changes.journal is not None and len(changes.journal):
            record = {
                "seq": changes.journal_seq,
                "users": changes.journal.to_bytes(),
                "written_at": time.time(),
            }
            batches.append((self._add_record, [record]))
        if changes.journal_through:
            batches.append((self._drop_records, [{"through": changes.journal_through}]))
        if changes.positions:
            rows = [
                {"consumer": f"{PARTITION_CONSUMER}{p}", "offset": o}
                for p, o in sorted(changes.positions.items())
            ]
            batches.append((self._save_position, rows))
        if not batches and users is None:
            return
        mark = None
        if changes.commit_id is not None:
            now = time.time()
            mark = {"writer": self._writer, "commit_id": changes.commit_id, "committed_at": now}
            if not self._marks_pruned:  # once per process: the marks of writers long gone
                batches.append((self._prune_marks, [{"before": now - _MARKS_KEPT_SECONDS}]))
                self._marks_pruned = True
            batches.append((self._mark_commit, [mark]))
        if self._db.fast_lane:
            raw = [self._compiled[id(stmt)].bind(rows) for stmt, rows in batches]
            if users is not None:  # straight from the columns: no mapping per row
                save = self._compiled[id(self._save_user)]
                raw.insert(0, (save.sql, list(zip(*(users[k] for k in save.order), strict=True))))
            check = None if mark is None else self._compiled[id(self._last_commit)].bind([mark])
            await self._db.run_write(partial(_commit_once, check, changes.commit_id, raw))
        elif self._pg_lane:
            if not await self._commit_pg(batches, users, mark, changes.commit_id):
                return  # the first attempt went through; its answer was lost
        else:
            async with self._db.write() as conn:
                if mark is not None:
                    applied = (await conn.execute(self._last_commit, mark)).scalar()
                    if applied == changes.commit_id:
                        return  # the first attempt went through; its answer was lost
                for stmt, rows in batches:
                    await conn.execute(stmt, rows)
        self._journaled(changes)

    async def _journal_index(self) -> dict[str, int]:
        if self._journal_latest is None:
            await self.get_journal()
        assert self._journal_latest is not None
        return self._journal_latest

    def _journaled(self, changes: StateChanges) -> None:
        """Keep the journal's index (user → their latest record) as ``changes`` moved it."""
        index, owners = self._journal_latest, self._journal_users
        if index is None:
            return  # not read yet: it will be, whole
        if changes.journal is not None and len(changes.journal):
            ids = changes.journal.user_ids
            index.update(dict.fromkeys(ids, changes.journal_seq))
            owners[changes.journal_seq] = ids
        for seq in [k for k in owners if k <= changes.journal_through]:
            for user_id in owners.pop(seq):
                if index.get(user_id) == seq:
                    del index[user_id]

    async def _commit_pg(
        self,
        batches: list[tuple[Any, list[dict[str, Any]]]],
        users: dict[str, list[Any]] | None,
        mark: dict[str, Any] | None,
        commit_id: str | None,
    ) -> bool:
        """:meth:`commit` on PostgreSQL, in one transaction on the asyncpg connection: the
        users' rows as one array per column in one upsert, the other batches (a few rows
        each) by ``executemany``. False if ``commit_id`` was committed before."""
        async with self._db.pg_write() as conn:
            if mark is not None:
                check = self._pg[id(self._last_commit)]
                applied = await conn.fetchval(check.sql, *check.rows([mark])[0])
                if applied == commit_id:
                    return False
            if users is not None:
                order = self._pg[id(self._save_user)].order
                await conn.execute(self._save_users_pg, *(users[k] for k in order))
            for stmt, rows in batches:
                statement = self._pg[id(stmt)]
                await conn.executemany(statement.sql, statement.rows(rows))
        return True

    async def get_journal(self) -> list[tuple[int, UserRows]]:
        query = select(state_journal.c.seq, state_journal.c.users).order_by(state_journal.c.seq)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        records = [(int(seq), UserRows.from_bytes(bytes(users))) for seq, users in rows]
        self._journal_latest, self._journal_users = {}, {}
        for seq, users in records:
            self._journal_latest.update(dict.fromkeys(users.user_ids, seq))
            self._journal_users[seq] = users.user_ids
        return records

    async def get_watermark(self) -> int:
        query = select(consumer_offsets.c.offset).where(consumer_offsets.c.consumer == CONSUMER)
        async with self._db.read() as conn:
            value = (await conn.execute(query)).scalar()
        return int(value or 0)

    async def get_positions(self) -> dict[int, int]:
        query = select(consumer_offsets.c.consumer, consumer_offsets.c.offset).where(
            consumer_offsets.c.consumer.startswith(PARTITION_CONSUMER)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {int(name[len(PARTITION_CONSUMER) :]): int(offset) for name, offset in rows}


def _commit_once(
    check: tuple[str, list[tuple[Any, ...]]] | None,
    commit_id: str | None,
    batches: Sequence[tuple[str, list[tuple[Any, ...]]]],
    conn: sqlite3.Connection,
) -> None:
    """``batches``, unless ``check`` (the query of the writer's last commit id) finds
    ``commit_id`` applied already."""
    if check is not None:
        sql, (params,) = check
        row = conn.execute(sql, params).fetchone()
        if row is not None and row[0] == commit_id:
            return  # the first attempt went through; its answer was lost
    executemany(batches, conn)


def _user_columns(rows: UserRows) -> dict[str, list[Any]]:
    """The ``user_state`` columns of ``rows`` as lists (times NaN → NULL)."""

    def times(values: Any) -> list[float | None]:
        return [None if x != x else x for x in values.tolist()]

    vectors = np.ascontiguousarray(rows.vectors, dtype="<f8")
    return {
        "user_id": rows.user_ids,
        "vector": [v.tobytes() for v in vectors],
        "events_applied": rows.events_applied.tolist(),
        "events_skipped": rows.events_skipped.tolist(),
        "interactions": rows.interactions.tolist(),
        "impressions": rows.impressions.tolist(),
        "first_event_at": times(rows.first_event_at),
        "last_event_at": times(rows.last_event_at),
        "updated_at": times(rows.updated_at),
        "explicit_offset": rows.explicit_offset.tolist(),
        "implicit_offset": rows.implicit_offset.tolist(),
        "events_held": rows.events_held.tolist(),
    }


def user_from_row(row: Any) -> UserState:
    """A ``user_state`` row as a :class:`UserState`."""
    return UserState(
        user_id=row["user_id"],
        vector=vector_of(row["vector"]),
        events_applied=row["events_applied"],
        events_skipped=row["events_skipped"],
        interactions=row["interactions"],
        impressions=row["impressions"],
        first_event_at=row["first_event_at"],
        last_event_at=row["last_event_at"],
        updated_at=row["updated_at"],
        explicit_offset=row["explicit_offset"],
        implicit_offset=row["implicit_offset"],
        events_held=row["events_held"],
    )
