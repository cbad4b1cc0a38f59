"""One history contract, every adapter: append (idempotent), read by kind and scope, purge."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from recloop.adapters.memory.history import InMemoryHistoryStore
from recloop.adapters.sql import SqlDatabase
from recloop.adapters.sql.database import MIGRATIONS
from recloop.adapters.sql.history import SqlHistoryStore
from recloop.ports import HistoryPoint, HistoryStore


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def history(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    if request.param == "memory":
        yield InMemoryHistoryStore()
        return
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    db = SqlDatabase(url)
    await db.migrate()
    yield SqlHistoryStore(db)
    await db.dispose()


def point(
    scope: str, subject: str, at: float, mean: float, kind: str = "algorithm"
) -> HistoryPoint:
    return HistoryPoint(kind, scope, subject, at, {"mean": mean, "low": mean - 0.1, "high": None})


async def test_read_returns_one_kind_by_scope_subject_and_time(history: HistoryStore) -> None:
    await history.append(
        [
            point("regular", "popular", 20.0, 0.2),
            point("new", "popular", 10.0, 0.1),
            point("regular", "popular", 10.0, 0.3),
            point("regular", "content", 10.0, 0.4),
            point("exp-1", "m:b", 10.0, 0.5, kind="experiment"),
        ]
    )
    found = await history.read("algorithm", None, 0.0, 100)
    assert [(p.scope, p.subject, p.at) for p in found] == [
        ("new", "popular", 10.0),
        ("regular", "content", 10.0),
        ("regular", "popular", 10.0),
        ("regular", "popular", 20.0),
    ]
    assert found[2].values == {"mean": 0.3, "low": pytest.approx(0.2), "high": None}
    assert [p.at for p in await history.read("algorithm", "regular", 15.0, 100)] == [20.0]
    assert [p.subject for p in await history.read("experiment", "exp-1", 0.0, 100)] == ["m:b"]
    assert await history.read("canary", None, 0.0, 100) == []
    assert len(await history.read("algorithm", None, 0.0, 3)) == 3


async def test_append_keeps_the_first_point_of_a_time_and_stores_nan_as_none(
    history: HistoryStore,
) -> None:
    await history.append([point("s", "a", 5.0, 0.5)])
    await history.append([point("s", "a", 5.0, 0.9), point("s", "a", 6.0, 0.6)])
    await history.append([HistoryPoint("algorithm", "s", "b", 5.0, {"mean": math.nan})])
    await history.append([])
    found = await history.read("algorithm", "s", 0.0, 100)
    assert [(p.subject, p.at, p.values["mean"]) for p in found] == [
        ("a", 5.0, 0.5),
        ("a", 6.0, 0.6),
        ("b", 5.0, None),
    ]


async def test_purge_drops_old_samples_whole_and_in_batches(history: HistoryStore) -> None:
    await history.append(
        [point("s", subject, float(at), 0.1) for at in range(1, 6) for subject in ("a", "b")]
    )
    assert await history.purge(1.0, 10) == 0  # nothing that old
    assert await history.purge(4.0, 3) == 4  # the 3rd oldest is at 2.0: samples 1 and 2
    assert await history.purge(4.0, 3) == 2  # sample 3; sample 4 is not before 4.0
    assert await history.purge(4.0, 3) == 0
    assert sorted({p.at for p in await history.read("algorithm", None, 0.0, 100)}) == [4.0, 5.0]
    assert await history.purge(10.0, 0) == 0
    assert await history.purge(10.0, 100) == 4
    assert await history.read("algorithm", None, 0.0, 100) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_0012_adds_the_table_and_goes_back(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    db = SqlDatabase(url)
    try:
        await db.migrate()
        await SqlHistoryStore(db).append([point("s", "a", 1.0, 0.5)])

        def tables_after_downgrade(connection: object) -> list[str]:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.downgrade(config, "0011")
            return list(inspect(connection).get_table_names())

        async with db.write() as conn:
            left = await conn.run_sync(tables_after_downgrade)
        assert "history_points" not in left and "events" in left
        await db.migrate()
        assert await SqlHistoryStore(db).read("algorithm", None, 0.0, 10) == []
    finally:
        await db.dispose()
