"""A worker in process against the Kafka-protocol broker and PostgreSQL: what it applies,
what it skips, where poison messages go, and where it resumes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from recloop.adapters.kafka import KafkaEventLog
from recloop.adapters.sql import SqlDatabase
from recloop.adapters.sql.tables import consumer_offsets
from recloop.config import Settings
from recloop.container import Container, build_worker, kafka_config
from recloop.core.events import Event
from recloop.core.items import make_item
from recloop.services.worker import Worker
from tests.conftest import eventually
from tests.kafka_broker import kafka_broker, worker_settings  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 2


@pytest.fixture
async def settings(tmp_path: Any, kafka_broker: str, postgres_url: str) -> Settings:  # noqa: F811
    return await worker_settings(
        tmp_path, kafka_broker, postgres_url, "worker", PARTITIONS, rate_limits={"enabled": False}
    )


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Worker, Container]]:
    worker, container = build_worker(settings)
    assert container.db is not None
    await container.db.migrate()
    await container.experiments.start()
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:
        yield worker, container
    finally:
        worker.stop()
        await task
        await worker.close()
        await container.experiments.stop()
        await container.db.dispose()


def like(event_id: str, user: str, item: str = "i1") -> Event:
    return Event(event_id=event_id, user_id=user, item_id=item, type="like", timestamp=1.0)


async def applied(container: Container, users: list[str]) -> dict[str, int]:
    states = await container.store.get_users(users)
    return {u: s.interactions for u, s in states.items()}


async def test_applies_once_skips_duplicates_and_dead_letters_poison(settings: Settings) -> None:
    async with running(settings) as (worker, container):
        await container.store.put_items(
            [make_item("i1", [1.0] * 8, None, 8, 0.0), make_item("i2", [0.5] * 8, None, 8, 0.0)]
        )
        users = [f"u{n}" for n in range(10)]
        events = [like(f"e{n}", users[n % 10], "i1" if n % 2 else "i2") for n in range(100)]
        async with KafkaEventLog(kafka_config(settings)) as log:
            await log.append(events[:50])
            await log.append([events[3], events[7]])  # a client's retry: same ids, new offsets
            await log.append(events[50:])
        producer = AIOKafkaProducer(bootstrap_servers=settings.event_log.kafka.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(settings.event_log.kafka.topic, b"{not json", key=b"u1")
        finally:
            await producer.stop()

        async def settled() -> bool:
            return sum((await container.store.get_positions()).values()) == 103

        await eventually(settled, within=60)
        assert await applied(container, users) == {u: 10 for u in users}
        assert worker.duplicates == 2
        assert worker.undecodable == 1
        # Events of a user are kept with where they were read, for reads by user.
        kept = await container.event_log.read_user_events("u3", 0.0, 2.0)
        assert [e.event_id for e in kept] == [f"e{n}" for n in range(3, 100, 10)]

    dlq = AIOKafkaConsumer(
        settings.event_log.kafka.topic + ".dlq",
        bootstrap_servers=settings.event_log.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await dlq.start()
    try:
        batch = await dlq.getmany(timeout_ms=5000)
        records = [r for rs in batch.values() for r in rs]
    finally:
        await dlq.stop()
    assert [r.value for r in records] == [b"{not json"]
    assert dict(records[0].headers)["reason"].startswith(b"not an event")


async def test_a_restarted_worker_resumes_from_the_stored_positions(settings: Settings) -> None:
    users = ["a", "b", "c"]
    async with KafkaEventLog(kafka_config(settings)) as log:
        async with running(settings) as (_, container):
            await container.store.put_items([make_item("i1", [1.0] * 8, None, 8, 0.0)])
            await log.append([like(f"x{n}", users[n % 3]) for n in range(30)])

            async def first_settled() -> bool:
                return sum((await container.store.get_positions()).values()) == 30

            await eventually(first_settled, within=60)
            positions = await container.store.get_positions()
        # Offsets committed to Kafka trail the stored ones; the stored ones decide.
        await log.append([like(f"y{n}", users[n % 3]) for n in range(30)])
        async with running(settings) as (_, container):

            async def second_settled() -> bool:
                return sum((await container.store.get_positions()).values()) == 60

            await eventually(second_settled, within=60)
            after = await container.store.get_positions()
            assert all(after[p] >= positions.get(p, 0) for p in after)
            assert await applied(container, users) == {u: 20 for u in users}


async def test_events_read_again_past_the_stored_positions_apply_once(settings: Settings) -> None:
    """A crash between a state commit and the next positions commit: the partition is read
    again from older positions. Implicit events are summed before they are applied, so the
    worker must pass over what each user's state already holds before summing."""
    users = ["p", "q"]
    kinds = ["view", "click", "impression", "like"]
    events = [Event(f"r{n}", users[n % 2], "i1", kinds[n % 4], timestamp=1.0) for n in range(40)]
    async with KafkaEventLog(kafka_config(settings)) as log:
        async with running(settings) as (_, container):
            await container.store.put_items([make_item("i1", [1.0] * 8, None, 8, 0.0)])
            await log.append(events)

            async def settled() -> bool:
                return sum((await container.store.get_positions()).values()) == 40

            await eventually(settled, within=60)
            before = await container.store.get_users(users)
        db = SqlDatabase(settings.storage.url)
        try:
            async with db.write() as conn:  # the positions of an older commit
                await conn.execute(
                    consumer_offsets.update()
                    .where(consumer_offsets.c.consumer.startswith("partition:"))
                    .values(offset=0)
                )
        finally:
            await db.dispose()
        async with running(settings) as (worker, container):

            async def read_again() -> bool:
                return worker.redelivered == 40

            await eventually(read_again, within=60)
            await container.processor.flush_implicit()
            after = await container.store.get_users(users)
    for u in users:
        assert (after[u].interactions, after[u].impressions) == (
            before[u].interactions,
            before[u].impressions,
        )
        assert (after[u].interactions + after[u].impressions) == 20
        assert after[u].vector.tolist() == before[u].vector.tolist()
