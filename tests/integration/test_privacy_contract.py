"""One privacy contract, every storage adapter: purges, erasure, export, tombstones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore
from recloop.adapters.memory.privacy import InMemoryPrivacyStore
from recloop.adapters.sql import SqlDatabase, SqlEventLog, SqlStateStore
from recloop.adapters.sql.privacy import SqlPrivacyStore
from recloop.core.events import Event
from recloop.core.experiments import UserMetric
from recloop.core.preferences import UserState
from recloop.core.privacy import Tombstone, user_digest
from recloop.core.state import UserRows
from recloop.core.stats import PairStats
from recloop.ports import (
    EventLog,
    Exposure,
    Impression,
    PrivacyStore,
    ReliabilityRecord,
    StateChanges,
    StateStore,
)

Adapters = tuple[EventLog, StateStore, PrivacyStore]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def adapters(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Adapters]:
    if request.param == "memory":
        log, store = InMemoryEventLog(), InMemoryStateStore()
        yield log, store, InMemoryPrivacyStore(log, store)
        return
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"
    db = SqlDatabase(url)
    await db.migrate()
    yield SqlEventLog(db), SqlStateStore(db), SqlPrivacyStore(db)
    await db.dispose()


def ev(event_id: str, user: str = "u") -> Event:
    return Event(event_id=event_id, user_id=user, item_id="i", type="like", timestamp=1.5)


async def test_purge_events_stops_at_the_offset_and_the_batch(adapters: Adapters) -> None:
    log, _, privacy = adapters
    offsets = await log.append([ev(f"e{n}") for n in range(10)])
    future = 4e9
    assert await privacy.purge_events(0.0, None, 100) == 0  # nothing that old
    assert await privacy.purge_events(future, 6, 4) == 4  # a batch
    assert await privacy.purge_events(future, 6, 4) == 2  # up to offset 6 only
    assert await privacy.purge_events(future, 6, 4) == 0
    assert [e.offset for e in await log.read(0, 100)] == offsets[6:]
    assert [e.offset for e in await log.read(7, 100)] == offsets[7:]
    # Offsets are never reused after a purge.
    (later,) = await log.append([ev("late")])
    assert later is not None and later > offsets[-1]


async def test_purge_impressions_by_age(adapters: Adapters) -> None:
    _, store, privacy = adapters
    await store.add_impressions([Impression(f"p{n}", "u", "new", float(n), 0.1) for n in range(5)])
    assert await privacy.purge_impressions(3.0, 2) == 2
    assert await privacy.purge_impressions(3.0, 2) == 1
    assert [i.impression_id for i in await store.get_impressions(0.0, 10.0)] == ["p3", "p4"]


async def test_erase_export_and_tombstones(adapters: Adapters) -> None:
    log, store, privacy = adapters
    await log.append([ev("a", "x"), ev("b", "y"), ev("c", "x")])
    state = UserState.new("x", 4)
    changes = StateChanges(
        users=UserRows.of([state, UserState.new("y", 4)]),
        exposures=[Exposure("exp", "x", "control", 1.0), Exposure("exp", "y", "treatment", 1.0)],
        user_metrics=[
            ("exp", "x", "m", UserMetric(2.0, 1.0)),
            ("exp", "y", "m", UserMetric(5.0, 0.0)),
        ],
        experiment_stats=[
            ("exp", "control", "m", PairStats(1, 1.0, 1.0, 2.0, 4.0, 2.0)),
            ("exp", "treatment", "m", PairStats(1, 0.0, 0.0, 5.0, 25.0, 0.0)),
        ],
    )
    await store.commit(changes)
    await store.add_impressions([Impression("p1", "x", "new", 1.0, 0.1)])
    await store.put_reliability([ReliabilityRecord("x", 10.0, "blocked", 1.0, True, "")])
    await store.add_dead_letter(ev("d", "x"), "ValueError: bad")

    data = await privacy.user_data("x")
    assert [e.event_id for e in data.events] == ["a", "c"]
    assert data.state is not None and data.state.user_id == "x"
    assert [i.impression_id for i in data.impressions] == ["p1"]
    assert data.exposures == [Exposure("exp", "x", "control", 1.0)]
    assert data.metric_values == [("exp", "m", UserMetric(2.0, 1.0))]
    assert data.reliability is not None and data.reliability.status == "blocked"
    assert [(e.event_id, r) for e, r in data.dead_letters] == [("d", "ValueError: bad")]

    assert await privacy.has_users()
    removal = StateChanges(
        experiment_stats=[
            ("exp", "control", "m", PairStats() - PairStats(1, 1.0, 1.0, 2.0, 4.0, 2.0))
        ]
    )
    tombstone = Tombstone(9.0, await log.last_offset())
    counts = await privacy.erase("x", user_digest("x"), tombstone, removal)
    assert counts == {
        "events": 2,
        "impressions": 1,
        "state": 1,
        "exposures": 1,
        "metric_values": 1,
        "reliability": 1,
        "dead_letters": 1,
    }
    assert set(
        (await privacy.erase("x", user_digest("x"), tombstone, StateChanges())).values()
    ) == {0}
    empty = await privacy.user_data("x")
    assert (empty.state, empty.events, empty.exposures, empty.metric_values) == (None, [], [], [])
    stats = {(v, m): s for v, m, s in await store.get_experiment_stats("exp")}
    assert stats[("control", "m")] == PairStats()
    assert stats[("treatment", "m")].n == 1
    assert [e.event_id for e in await log.read(0, 10)] == ["b"]
    assert await privacy.get_tombstones() == {user_digest("x"): tombstone}

    assert await privacy.get_meta("k") is None
    await privacy.put_meta("k", "v1")
    await privacy.put_meta("k", "v2")
    assert await privacy.get_meta("k") == "v2"
