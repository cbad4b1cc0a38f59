"""SQLite's point reads (``SqlDatabase.run_point_read``): a user or a few read by primary
key on the caller's thread, the reader thread's answer, and the reader thread when SQLite
answers busy."""

from __future__ import annotations

import sqlite3
import threading
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from recloop.adapters.sql import SqlDatabase
from recloop.adapters.sql.base import select_in
from recloop.adapters.sql.store import SqlStateStore
from recloop.adapters.sql.tables import user_state
from recloop.adapters.sql.users import POINT_READ_MAX
from recloop.core.breaker import CircuitBreaker
from recloop.core.errors import CircuitOpen, TransientError
from recloop.core.preferences import UserState
from recloop.core.state import UserRows
from recloop.ports import StateChanges


async def test_point_reads_answer_as_the_reader_thread(tmp_path: Path) -> None:
    db = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    await db.migrate()
    store = SqlStateStore(db)
    rng = np.random.default_rng(3)
    states = [
        UserState(f"u{i}", rng.normal(size=8), events_applied=i, interactions=2 * i)
        for i in range(20)
    ]
    await store.commit(StateChanges(users=UserRows.of(states)))
    try:
        asked = [["u3"], ["nobody"], ["u1", "nobody", "u7"], [f"u{i}" for i in range(12)]]
        for user_ids in asked:
            got = await store.get_users(user_ids)  # point reads up to POINT_READ_MAX users
            want = {u: s for u in user_ids for s in states if s.user_id == u}
            assert got.keys() == want.keys()
            for u, state in want.items():
                assert np.array_equal(got[u].vector, state.vector)
                assert got[u].interactions == state.interactions
        assert len(asked[2]) <= POINT_READ_MAX < len(asked[3])
    finally:
        await db.dispose()


async def test_a_busy_point_read_is_read_by_the_reader_thread(tmp_path: Path) -> None:
    db = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    here = threading.get_ident()

    def busy_here(conn: sqlite3.Connection) -> Any:
        if threading.get_ident() == here:
            raise sqlite3.OperationalError("database is locked")
        return conn.execute("SELECT 41 + 1").fetchone()[0]

    def broken(conn: sqlite3.Connection) -> Any:
        return conn.execute("SELECT * FROM no_such_table").fetchone()

    try:
        assert await db.run_point_read(lambda c: c.execute("SELECT 1").fetchone()[0]) == 1
        assert await db.run_point_read(busy_here) == 42
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await db.run_point_read(broken)  # an error of its own: raised, not read again
    finally:
        await db.dispose()


async def test_point_reads_go_through_the_storage_breaker(tmp_path: Path) -> None:
    breaker = CircuitBreaker("storage", failure_threshold=1, open_seconds=60.0)
    db = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", breaker=breaker)

    def unreachable(_: Any) -> None:
        raise ConnectionResetError("reset by peer")

    try:
        with pytest.raises(TransientError):
            await db.run_point_read(unreachable)
        with pytest.raises(CircuitOpen):
            await db.run_point_read(lambda c: 1)
    finally:
        await db.dispose()


async def test_select_in_answers_as_sqlalchemy(tmp_path: Path) -> None:
    """The fast lane's ``select_in`` (its query built once per table, key and size) reads
    the rows SQLAlchemy's ``select … where key in (…)`` reads, column for column, for
    random sets of stored and unknown keys, asked again and again."""
    db = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    await db.migrate()
    store = SqlStateStore(db)
    rng = np.random.default_rng(11)
    states = [UserState(f"u{i}", rng.normal(size=4), events_applied=i) for i in range(60)]
    await store.commit(StateChanges(users=UserRows.of(states)))
    try:
        for _ in range(40):
            size = int(rng.integers(1, 30))
            keys = [f"u{k}" for k in rng.integers(0, 90, size).tolist()]  # some unknown
            got = await db.run_read(partial(select_in, user_state, "user_id", keys))
            query = select(user_state).where(user_state.c.user_id.in_(keys))
            async with db.read() as conn:
                want = [dict(r) for r in (await conn.execute(query)).mappings().all()]
            assert sorted(got, key=lambda r: r["user_id"]) == sorted(
                want, key=lambda r: r["user_id"]
            )
            assert {r["user_id"] for r in got} == {k for k in keys if int(k[1:]) < 60}
    finally:
        await db.dispose()
