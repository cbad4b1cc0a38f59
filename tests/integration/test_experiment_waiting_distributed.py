"""Distributed results say what the workers have not applied yet (issue 20): a worker
reports, per partition, the events it took that will move a running experiment and are
not committed, and how many messages it has not fetched; an API instance, which applies
nothing, sums the reports. Against the Kafka-protocol broker and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from recloop.adapters.kafka import KafkaEventLog
from recloop.config import Settings
from recloop.container import build_container, kafka_config
from recloop.core.events import Event
from recloop.core.experiments import from_dict
from tests.conftest import eventually
from tests.integration.test_experiments_api import EXPERIMENT
from tests.integration.test_worker import running
from tests.kafka_broker import kafka_broker, worker_settings  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def settings(tmp_path: Path, kafka_broker: str, postgres_url: str) -> Settings:  # noqa: F811
    return await worker_settings(
        tmp_path,
        kafka_broker,
        postgres_url,
        "waiting",
        2,
        rate_limits={"enabled": False},
        # implicit events stay buffered until the test flushes them
        feedback={"implicit_flush_seconds": 3600.0},
    )


async def test_an_api_instance_reports_the_events_the_workers_have_not_applied(
    settings: Settings,
) -> None:
    async with running(settings) as (worker, container):
        api = build_container(settings)  # an API instance: applies nothing
        assert api.distributed
        await api.experiments.start()
        try:
            exp = from_dict({**EXPERIMENT, "experiment_id": "dist"})
            await api.experiments.create(exp)
            await api.experiments.transition("dist", "start")
            users = [f"u{n}" for n in range(8)]
            for user in users:
                await api.experiments.expose("dist", user)
            await container.experiments.refresh(statistics=False)  # the worker's refresh

            later = time.time() + 1.0
            events = [
                Event(f"{u}-{t}", u, "i", t, later) for u in users for t in ("impression", "click")
            ]
            events.append(Event("s-click", "stranger", "i", "click", later))  # not exposed
            async with KafkaEventLog(kafka_config(settings)) as log:
                await log.append(events)

            seen: dict[str, Any] = {}

            async def buffered(expected: int) -> bool:
                await api.experiments.refresh(statistics=True)
                seen.update(await api.experiments.live_results("dist"))
                shown = seen["buffered"]
                return shown is not None and shown["events"] == expected and shown["complete"]

            await eventually(lambda: buffered(2 * len(users)), within=60)
            waiting = dict(seen)
            assert waiting["buffered"]["as_of"] is not None
            provisional = {m["name"]: m["provisional"] for m in waiting["metrics"]}
            assert provisional == {"purchased": False, "clicks": True, "ctr": True}
            reports = await api.store.get_waiting()
            assert {r.partition for r in reports} == {0, 1}
            assert sum(sum(r.events.get("dist", {}).values()) for r in reports) == 16

            await container.processor.flush_implicit()
            await eventually(lambda: buffered(0), within=60)
            done = dict(seen)
            assert not any(m["provisional"] for m in done["metrics"])
            clicks = next(m for m in done["metrics"] if m["name"] == "clicks")
            assert sum(v["users"] for v in clicks["variants"]) == len(users)
            assert sum(v["mean"] * v["users"] for v in clicks["variants"]) == len(users)
        finally:
            await api.experiments.stop()
            assert api.db is not None
            await api.db.dispose()
        assert worker.started
