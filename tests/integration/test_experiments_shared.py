"""Experiments across processes sharing one database (the distributed deployment): an
API instance records exposures and answers for results, a worker moves the metrics."""

from __future__ import annotations

from pathlib import Path

from recloop.adapters.sql import SqlDatabase, SqlEventLog, SqlStateStore
from recloop.core.experiments import Experiment, Metric, Variant
from recloop.services.experiments import ExperimentsConfig, ExperimentService


async def test_a_worker_learns_exposures_and_the_api_its_metrics(tmp_path: Path) -> None:
    db = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    await db.migrate()
    store, log = SqlStateStore(db), SqlEventLog(db)
    api = ExperimentService(store, log, ExperimentsConfig(cuped_days=0.0))
    worker = ExperimentService(store, log, ExperimentsConfig(cuped_days=0.0))
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
        variants = {u: await api.expose("ctr", u) for u in users}
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
