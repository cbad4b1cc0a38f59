"""Experiments across processes sharing one database (the distributed deployment): an
API instance records exposures and answers for results, a worker moves the metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config

from recloop.adapters.sql import SqlDatabase, SqlEventLog, SqlStateStore
from recloop.adapters.sql.database import MIGRATIONS
from recloop.config import ExperimentSettings
from recloop.core.experiments import Experiment, Metric, Variant
from recloop.ports import Exposure, StateChanges
from recloop.services.experiments import ExperimentService


async def test_a_worker_learns_exposures_and_the_api_its_metrics(tmp_path: Path) -> None:
    db = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    await db.migrate()
    store, log = SqlStateStore(db), SqlEventLog(db)
    api = ExperimentService(store, log, ExperimentSettings(cuped_days=0.0))
    worker = ExperimentService(store, log, ExperimentSettings(cuped_days=0.0))
    for service in (api, worker):
        await service.start()
    try:
        exp = Experiment(
            "ctr",
            "CTR",
            (Variant("a", 0.5), Variant("b", 0.5)),
            (Metric("clicks", "binomial", event="click"),),
        )
        await api.create(exp)
        await api.transition("ctr", "start")
        users = [f"u{n}" for n in range(40)]
        variants = {u: (await api.expose("ctr", u))[0] for u in users}
        assert not worker.watches(users[0])

        await worker.refresh(statistics=False)
        assert all(worker.watches(u) for u in users)
        clicked = users[::2]
        for u in clicked:
            changes = worker.observe(u, "click", None, timestamp=2e9)
            await store.commit(changes)
        # A refresh never rolls back values the worker moved itself.
        await worker.refresh(statistics=False)
        assert all(worker.observe(u, "click", None, 2e9).user_metrics == [] for u in clicked)

        await api.refresh(statistics=True)
        results = api.results("ctr")
        by_variant = {row["key"]: row for row in results["metrics"][0]["variants"]}
        for key in ("a", "b"):
            exposed = sum(1 for v in variants.values() if v == key)
            converted = sum(1 for u in clicked if variants[u] == key)
            assert by_variant[key]["users"] == exposed
            assert by_variant[key]["conversions"] == converted

        await api.transition("ctr", "stop")
        await worker.refresh(statistics=False)
        assert not any(worker.watches(u) for u in users)
    finally:
        for service in (api, worker):
            await service.stop()
        await db.dispose()


async def test_colliding_running_experiments_one_wins_and_the_other_does_not_count(
    tmp_path: Path,
) -> None:
    """Two running experiments overriding ``epsilon`` for the same users (as ones started
    before starting was refused, or by two instances at once): the earliest started wins,
    the exposure in the other records the winner, and the loser's results leave the user
    out, in this process and in one that reads the store."""
    db = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    await db.migrate()
    store, log = SqlStateStore(db), SqlEventLog(db)
    clicks = (Metric("clicks", "binomial", event="click"),)

    def arms(eps: float) -> tuple[Variant, ...]:
        return (Variant("c", 0.5), Variant("t", 0.5, {"epsilon": eps}))

    first = Experiment(
        "first",
        "first",
        arms(0.0),
        clicks,
        traffic_allocation=0.5,
        status="running",
        created_at=5.0,
        started_at=10.0,
    )
    later = Experiment(
        "later", "later", arms(0.9), clicks, status="running", created_at=1.0, started_at=20.0
    )
    for exp in (first, later):
        await store.put_experiment(exp)
    api = ExperimentService(store, log, ExperimentSettings(cuped_days=0.0))
    worker = ExperimentService(store, log, ExperimentSettings(cuped_days=0.0))
    for service in (api, worker):
        await service.start()
    try:
        users = [f"u{n}" for n in range(200)]
        in_first = {u for u in users if api.variant_for(api.get("first"), u) is not None}
        assert 0 < len(in_first) < len(users)
        for u in users:
            applied = await api.expose_running(u)
            expected = ["first"] if u in in_first else ["later"]
            assert [e.experiment_id for e, _ in applied] == expected
        results = api.results("later")
        assert results["overridden"] == {"first": len(in_first)}
        assert sum(results["srm"]["observed"].values()) == len(users) - len(in_first)
        assert any("not counted" in w for w in results["warnings"])
        assert api.results("first")["overridden"] == {}
        loser = next(iter(in_first))
        assert await api.expose("later", loser) == (None, "first")

        await worker.refresh(statistics=False)
        assert worker.watches(loser)  # counted in "first"
        changes = worker.observe(loser, "click", None, timestamp=2e9)
        assert {eid for eid, *_ in changes.experiment_stats} == {"first"}
        await store.commit(changes)
        await api.refresh(statistics=True)
        later_clicks = next(m for m in api.results("later")["metrics"] if m["name"] == "clicks")
        assert sum(row["users"] for row in later_clicks["variants"]) == len(users) - len(in_first)
        assert all(row["conversions"] == 0 for row in later_clicks["variants"])

        # Raising "first"'s coverage keeps users counted in "later" where they are.
        widened = await api.update("first", {"traffic_allocation": 1.0})
        counted_later = [u for u in users if u not in in_first]
        for u in counted_later[:20]:
            applied = await api.expose_running(u)
            assert [e.experiment_id for e, _ in applied] == ["later"]
            assert api.variant_for(widened, u) is not None
        assert api.results("first")["overridden"] == {"later": 20}
    finally:
        for service in (api, worker):
            await service.stop()
        await db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_0011_adds_overridden_by_and_goes_back(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Exposures recorded before 0011 read as counted; downgrading drops only the column."""
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    db = SqlDatabase(url)
    try:
        await db.migrate()
        store = SqlStateStore(db)
        rows = [Exposure("e", "won", "a", 1.0), Exposure("e", "lost", "b", 2.0, "w")]
        await store.commit(StateChanges(exposures=rows))
        assert sorted(await store.get_exposures("e"), key=lambda x: x.exposed_at) == rows

        def downgrade(connection: Any) -> None:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.downgrade(config, "0010")

        async with db.write() as conn:
            await conn.run_sync(downgrade)
        await db.migrate()
        back = sorted(await store.get_exposures("e"), key=lambda x: x.exposed_at)
        assert [(x.user_id, x.variant, x.overridden_by) for x in back] == [
            ("won", "a", None),
            ("lost", "b", None),
        ]
    finally:
        await db.dispose()
