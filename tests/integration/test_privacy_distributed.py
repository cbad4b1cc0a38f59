"""Erasure in the distributed deployment: a worker learns the tombstone and skips the erased
history still in the topic; the spool gives up a user's waiting events."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from recloop.adapters.kafka import KafkaConfig, KafkaEventLog, SpooledEventLog
from recloop.config import Settings
from recloop.container import build_container, kafka_config
from recloop.core.events import Event
from recloop.core.items import make_item
from tests.conftest import eventually, free_port
from tests.integration.test_worker import like, running, settings  # noqa: F401
from tests.kafka_broker import kafka_broker  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401

pytestmark = pytest.mark.timeout(120)

VICTIM = "victim-77c1"


async def test_a_worker_skips_the_erased_history_left_in_the_topic(
    settings: Settings,  # noqa: F811
) -> None:
    async with running(settings) as (worker, container):
        assert container.privacy is not None
        await container.privacy.start(purge=False)
        await container.store.put_items([make_item("i1", [1.0] * 8, None, 8, 0.0)])
        async with KafkaEventLog(kafka_config(settings)) as log:
            await log.append([like(f"a{n}", VICTIM if n % 2 else "other") for n in range(10)])

            async def settled(total: int) -> bool:
                return sum((await container.store.get_positions()).values()) == total

            await eventually(lambda: settled(10), within=60)
            # An API instance erases the user (its own container, as in production).
            api = build_container(settings)
            try:
                assert api.privacy is not None
                removed = await api.privacy.erase(VICTIM)
            finally:
                assert api.db is not None
                await api.db.dispose()
            assert (removed["events"], removed["state"]) == (5, 1)
            # The worker takes the tombstone at its next refresh.
            await container.privacy.reload_tombstones()
            assert VICTIM not in container.processor.held_users()
            # Still in the topic: events the user sent before the erasure; then new ones.
            old = [like(f"b{n}", VICTIM) for n in range(3)]
            new = Event("c0", VICTIM, "i1", "like", time.time() + 1.0)
            await log.append([*old, new])
            await eventually(lambda: settled(14), within=60)
        assert worker.blocked == 3
        kept = await container.event_log.read_user_events(VICTIM, 0.0, time.time() + 10)
        assert [e.event_id for e in kept] == ["c0"]
        state = (await container.store.get_users([VICTIM]))[VICTIM]
        assert state.interactions == 1  # a new start, not the erased history plus one


async def test_the_spool_gives_up_a_users_waiting_events(tmp_path: Path) -> None:
    dead = KafkaConfig(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        topic="nowhere",
        enable_idempotence=False,
        request_timeout_ms=1_000,
    )
    spool = SpooledEventLog(KafkaEventLog(dead), tmp_path / "spool.db", 60.0, 0.5)
    await spool.start()  # Kafka is away: appends go to the spool
    try:
        events = [like(f"e{n}", VICTIM if n % 3 == 0 else "other") for n in range(9)]
        assert await spool.append(events) == [None] * 9
        assert spool.spooled == 9
        assert await spool.delete_user(VICTIM) == 3
        assert spool.spooled == 6
        assert await spool.delete_user(VICTIM) == 0
    finally:
        await spool.stop()
