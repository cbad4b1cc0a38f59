"""A worker's metrics endpoint, in process, against the Kafka-protocol broker and PostgreSQL:
what it exposes, that its counters follow the work, and that it says so when the worker's
event loop does not answer. (The process itself, its signals and its deadline:
tests/e2e/test_worker_ops.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import httpx
import pytest

from recloop.adapters.kafka import KafkaEventLog
from recloop.config import Settings
from recloop.container import Container, build_worker, kafka_config
from recloop.core.events import Event
from recloop.core.items import make_item
from recloop.metrics import WorkerMetrics
from recloop.services.worker import Worker
from tests.conftest import eventually
from tests.kafka_broker import kafka_broker, worker_settings  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401
from tests.prometheus import Samples, samples, series, value

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 2


@pytest.fixture
async def settings(tmp_path: Any, kafka_broker: str, postgres_url: str) -> Settings:  # noqa: F811
    # rate limits built but unused by a worker: not among its metrics
    return await worker_settings(
        tmp_path,
        kafka_broker,
        postgres_url,
        "worker-ops",
        PARTITIONS,
        rate_limits={"enabled": True},
    )


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, loop_timeout: float = 5.0
) -> AsyncIterator[tuple[Worker, Container, WorkerMetrics]]:
    worker, container = build_worker(settings)
    assert container.db is not None
    await container.db.migrate()
    await container.experiments.start()
    metrics = WorkerMetrics(worker, container, "127.0.0.1", 0, timeout=loop_timeout)
    try:
        await worker.start()
        task = asyncio.create_task(worker.run())
        try:
            yield worker, container, metrics
        finally:
            worker.stop()
            await task
            await worker.close()
    finally:
        await asyncio.to_thread(metrics.close)
        await container.experiments.stop()
        await container.db.dispose()


async def get(metrics: WorkerMetrics, path: str) -> httpx.Response:
    """From a thread: the server answers through the loop this test runs in."""
    url = f"http://127.0.0.1:{metrics.port}{path}"
    return await asyncio.to_thread(httpx.get, url, timeout=30)


async def scrape(metrics: WorkerMetrics) -> Samples:
    r = await get(metrics, "/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def like(event_id: str, user: str) -> Event:
    return Event(event_id=event_id, user_id=user, item_id="i1", type="like", timestamp=1.0)


async def test_metrics_follow_what_the_worker_applies(settings: Settings) -> None:
    users = [f"u{n}" for n in range(6)]
    async with (
        serving(settings) as (worker, container, metrics),
        KafkaEventLog(kafka_config(settings)) as log,
    ):
        await container.store.put_items([make_item("i1", [1.0] * 8, None, 8, 0.0)])
        first = [like(f"a{n}", users[n % 6]) for n in range(30)]
        await log.append(first)
        await log.append(first[:4])  # a client's retry: duplicates

        async def settled(total: int) -> bool:
            return sum((await container.store.get_positions()).values()) == total

        await eventually(lambda: settled(34), within=60)
        samples = await scrape(metrics)
        assert value(samples, "recloop_worker_events_total", type="like", status="applied") == 30
        assert value(samples, "recloop_worker_events_total", type="like", status="duplicate") == 4
        assert value(samples, "recloop_worker_redelivered_total") == 0
        assert value(samples, "recloop_worker_partitions") == PARTITIONS
        positions = series(samples, "recloop_worker_partition_position")
        assert {dict(k)["partition"] for k in positions} == {"0", "1"}
        assert sum(positions.values()) == 34
        taken = series(samples, "recloop_worker_partition_taken")
        assert sum(taken.values()) == 34
        assert value(samples, "recloop_event_log_lag") == 0
        assert value(samples, "recloop_worker_stopping") == 0
        assert value(samples, "recloop_explicit_queue_depth") == 0
        assert value(samples, "recloop_implicit_buffered") == 0
        assert value(samples, "recloop_dead_letters_total") == 0
        # The dependencies a worker has: not the API's event log spool nor its rate limits.
        assert series(samples, "recloop_dependency_up") == {
            frozenset({("dependency", "storage")}): 1.0
        }
        assert series(samples, "recloop_breaker_open") == {
            frozenset({("dependency", "storage")}): 0.0
        }
        assert value(samples, "recloop_spam_users", status="blocked") == 0

        await log.append([like(f"b{n}", users[n % 6]) for n in range(10)])
        await eventually(lambda: settled(44), within=60)
        samples = await scrape(metrics)
        assert value(samples, "recloop_worker_events_total", type="like", status="applied") == 40
        assert worker.applied == 40

        live = await get(metrics, "/health/live")
        assert live.status_code == 200
        assert live.json() == {"status": "ok", "stopping": False, "partitions": [0, 1]}
        assert (await get(metrics, "/elsewhere")).status_code == 404
        # Every sample is read on the loop: a scrape costs it a storage ping and a few reads.
        assert (await get(metrics, "/")).status_code == 200


async def test_scrapes_say_so_when_the_worker_loop_does_not_answer(settings: Settings) -> None:
    async with serving(settings, loop_timeout=0.5) as (_, _, metrics):
        assert (await get(metrics, "/health/live")).status_code == 200
        url = f"http://127.0.0.1:{metrics.port}"
        with ThreadPoolExecutor(2) as pool:
            asked = [pool.submit(httpx.get, url + p, timeout=30) for p in ("/health/live", "/")]
            # The loop waits for the answers without running: it cannot give them.
            wait(asked, timeout=60)
            answers = [a.result() for a in asked]
        assert [a.status_code for a in answers] == [503, 503]
        assert answers[0].json()["status"] == "unresponsive"
        assert "did not answer within 0.5s" in answers[1].text
        # Once the loop runs again, so do the answers.
        assert (await get(metrics, "/health/live")).status_code == 200
        assert (await get(metrics, "/metrics")).status_code == 200
