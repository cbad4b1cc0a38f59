"""PostgreSQL's lane (adapters/sql/pg.py) against SQLAlchemy's path, its oracle.

The same random sequences of archives and state commits go to two fresh databases, one
through the asyncpg lane (the default on PostgreSQL) and one with ``pg_lane=False``: the
answers and every stored row must be the same.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from recloop.adapters.sql import SqlDatabase, SqlEventLog, SqlStateStore
from recloop.adapters.sql.tables import (
    algorithm_stats,
    commit_marks,
    consumer_offsets,
    event_impressions,
    events,
    experiment_exposures,
    experiment_stats,
    experiment_user_metrics,
    user_state,
)
from recloop.core.bandit import PerformanceCounts
from recloop.core.events import Event
from recloop.core.experiments import UserMetric
from recloop.core.preferences import UserState
from recloop.core.state import UserRows
from recloop.core.stats import PairStats
from recloop.ports import AlgorithmCount, Exposure, StateChanges
from tests.postgres import PG_DSN, _admin


@pytest.fixture
def second_postgres_url(postgres_url: str) -> Iterator[str]:
    """Another empty database beside ``postgres_url``'s."""
    name = f"recloop_test_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    base = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pair(postgres_url: str, second_postgres_url: str) -> AsyncIterator[tuple[Any, Any]]:
    """(lane, oracle): two migrated databases."""
    dbs = [SqlDatabase(postgres_url), SqlDatabase(second_postgres_url)]
    for db in dbs:
        await db.migrate()
    yield dbs[0], dbs[1]
    for db in dbs:
        await db.dispose()


async def _rows(db: SqlDatabase, query: Any) -> list[tuple[Any, ...]]:
    async with db.read() as conn:
        return [tuple(r) for r in (await conn.execute(query)).all()]


def _event(rng: random.Random, ids: list[str], partition: int, offset: int) -> Event:
    """An event whose id is new or, now and then, one sent before (a client's retry)."""
    event_id = rng.choice(ids) if ids and rng.random() < 0.2 else f"e{len(ids)}-{rng.random()}"
    ids.append(event_id)
    kind = rng.choice(["like", "view", "click", "rating", "impression"])
    attribution = {"impression_id": f"imp-{rng.randrange(5)}"} if rng.random() < 0.3 else {}
    return Event(
        event_id,
        f"u{rng.randrange(20)}",
        f"i{rng.randrange(50)}",
        kind,
        1_700_000_000.0 + offset,
        4.0 if kind == "rating" else None,
        text="nice" if rng.random() < 0.1 else None,
        context={"page": "home"} if rng.random() < 0.2 else {},
        attribution=attribution,
        request_id=rng.choice([None, "r1", "r2"]),
        offset=offset,
        partition=partition,
    )


async def test_the_archive_answers_and_stores_what_sqlalchemys_path_does(
    pair: tuple[SqlDatabase, SqlDatabase],
) -> None:
    lane_db, oracle_db = pair
    lane, oracle = SqlEventLog(lane_db), SqlEventLog(oracle_db, pg_lane=False)
    rng = random.Random(7)
    ids: list[str] = []
    next_offset = {p: 1 for p in range(3)}
    sent: list[list[Event]] = []
    for _ in range(30):
        batch: list[Event] = []
        if sent and rng.random() < 0.25:  # a redelivery after a crash: the same positions
            batch = list(rng.choice(sent))
        else:
            for _ in range(rng.randrange(1, 60)):
                p = rng.randrange(3)
                batch.append(_event(rng, ids, p, next_offset[p]))
                next_offset[p] += 1
            sent.append(batch)
        assert await lane.archive(batch) == await oracle.archive(batch)
    columns = [c for c in events.c if c.name not in ("offset", "accepted_at")]
    stored = sa.select(*columns).order_by(events.c.offset)
    assert await _rows(lane_db, stored) == await _rows(oracle_db, stored)
    links = (
        sa.select(events.c.event_id, event_impressions.c.impression_id)
        .join_from(event_impressions, events, events.c.offset == event_impressions.c.offset)
        .order_by(events.c.event_id)
    )
    linked = await _rows(lane_db, links)
    assert linked == await _rows(oracle_db, links) and linked


def _users(rng: random.Random, names: list[str], offsets: dict[str, int]) -> UserRows:
    states = []
    for name in names:
        state = UserState.new(name, 4)
        state.vector = np.array([rng.uniform(-1, 1) for _ in range(4)])
        state.events_applied = rng.randrange(100)
        state.interactions = rng.randrange(100)
        state.first_event_at = None if rng.random() < 0.3 else rng.uniform(0, 1e9)
        state.last_event_at = rng.uniform(0, 1e9)
        state.updated_at = rng.uniform(0, 1e9)
        # Now and then an offset behind the stored one: a late write the store must refuse.
        offsets[name] = max(offsets.get(name, 0) + rng.randrange(-2, 5), 0)
        state.explicit_offset = offsets[name]
        state.implicit_offset = rng.randrange(3)
        states.append(state)
    return UserRows.of(states, 4)


def _changes(rng: random.Random, offsets: dict[str, int], n: int) -> StateChanges:
    names = rng.sample([f"u{i}" for i in range(40)], rng.randrange(0, 15))
    counts = [
        AlgorithmCount(
            "regular", rng.choice(["a", "b"]), 3600.0 * rng.randrange(2), PerformanceCounts(2, 1)
        )
        for _ in range(rng.randrange(3))
    ]
    exposures = [
        Exposure("x1", f"u{rng.randrange(40)}", rng.choice(["c", "t"]), 1.0 * n)
        for _ in range(rng.randrange(3))
    ]
    metrics = [
        ("x1", f"u{rng.randrange(40)}", "m", UserMetric(rng.random(), rng.random()))
        for _ in range(rng.randrange(3))
    ]
    stats = [
        ("x1", rng.choice(["c", "t"]), "m", PairStats(1, 1.0, 1.0, 2.0, 4.0, 2.0))
        for _ in range(rng.randrange(3))
    ]
    return StateChanges(
        users=_users(rng, names, offsets),
        algorithm_counts=counts,
        exposures=exposures,
        user_metrics=metrics,
        experiment_stats=stats,
        positions={p: n * 10 + rng.randrange(-15, 5) for p in range(2)},
        commit_id=f"c{n}" if rng.random() < 0.9 else None,
    )


async def test_a_state_commit_stores_what_sqlalchemys_path_does(
    pair: tuple[SqlDatabase, SqlDatabase],
) -> None:
    lane_db, oracle_db = pair
    lane, oracle = SqlStateStore(lane_db), SqlStateStore(oracle_db, pg_lane=False)
    rng = random.Random(11)
    offsets: dict[str, int] = {}
    for n in range(40):
        changes = _changes(rng, offsets, n)
        await lane.commit(changes)
        await oracle.commit(changes)
        if changes.commit_id is not None and rng.random() < 0.2:
            await lane.commit(changes)  # a retry whose first attempt went through: nothing
            await oracle.commit(changes)
    for table in (
        user_state,
        consumer_offsets,
        algorithm_stats,
        experiment_exposures,
        experiment_user_metrics,
        experiment_stats,
    ):
        query = sa.select(table).order_by(*table.primary_key.columns)
        found = await _rows(lane_db, query)
        assert found == await _rows(oracle_db, query), table.name
        assert found, table.name
    assert len(await _rows(lane_db, sa.select(commit_marks))) == 1
    users = [f"u{i}" for i in range(45)]
    read, expected = await lane.get_users(users), await oracle.get_users(users)
    assert read.keys() == expected.keys() and read
    for user_id, state in read.items():
        assert _fields(state) == _fields(expected[user_id])


def _fields(state: UserState) -> dict[str, Any]:
    found = {name: getattr(state, name) for name in UserState.__dataclass_fields__}
    found["vector"] = state.vector.tolist()
    return found
