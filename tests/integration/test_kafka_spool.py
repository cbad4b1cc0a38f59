"""The spooled Kafka log against a real broker (Tansu, in memory) that the tests cut off: no mocks.

The broker is this module's own: it advertises the address of a
:class:`~tests.tcp_proxy.TcpProxy` in front of it, so every connection of the
clients (bootstrap, then the partition leader) goes through the proxy, and
``proxy.cut()`` is Kafka going away for them. Every test has a topic of its
own (4 partitions) and reads it back without a consumer group (no join wait).

Consumers drop a repeated ``event_id`` (an at-least-once log; see the spool's
module docstring), so order is checked the way they see it: the first copy of
each event, per user.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from recloop.adapters.kafka import KafkaConfig, KafkaEventLog, KafkaPosition, SpooledEventLog
from recloop.core.errors import ConfigError
from recloop.core.events import Event
from tests.conftest import eventually, free_port
from tests.kafka_broker import create_topic, proxied_kafka  # noqa: F401
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

PARTITIONS = 4
SEND_TIMEOUT = 1.0  # seconds a direct append may take before its batch is spooled
RETRY = 0.2  # seconds between drain attempts
REQUEST_TIMEOUT_MS = 2_000  # the producer gives up on a batch after this
WAIT = 20.0  # seconds: a hang guard, far above what any step needs
QUIET_MS = 300  # how long "nothing more arrives" is watched for


@pytest.fixture(scope="module")
def proxy(proxied_kafka: TcpProxy) -> TcpProxy:  # noqa: F811
    return proxied_kafka


@pytest.fixture
async def config(proxy: TcpProxy) -> AsyncIterator[KafkaConfig]:
    topic = f"spooled-{uuid.uuid4().hex[:10]}"
    await create_topic(proxy.address, topic, PARTITIONS)
    try:
        yield KafkaConfig(
            bootstrap_servers=proxy.address,
            topic=topic,
            enable_idempotence=False,  # Tansu has no InitProducerId
            linger_ms=1,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
    finally:
        proxy.restore()  # for the next test, whatever this one did


def spooled_log(config: KafkaConfig, path: Path, chunk_size: int = 500) -> SpooledEventLog:
    kafka = KafkaEventLog(config)
    return SpooledEventLog(kafka, path, RETRY, SEND_TIMEOUT, chunk_size=chunk_size)


@asynccontextmanager
async def running(log: SpooledEventLog) -> AsyncIterator[SpooledEventLog]:
    """``log`` started (within WAIT seconds) and always stopped afterwards."""
    try:
        async with asyncio.timeout(WAIT):
            await log.start()
        yield log
    finally:
        await log.stop()


def make_events(n: int, start: int = 0, users: int = 8) -> list[Event]:
    """Events ``start`` to ``start + n - 1`` of ``users`` users, ids in send order."""
    return [
        Event(
            event_id=f"e{i:05d}",
            user_id=f"user-{i % users}",
            item_id=f"item-{i % 13}",
            type="rating" if i % 3 == 0 else "click",
            timestamp=1_700_000_000.0 + i,
            value=4.0 if i % 3 == 0 else None,
            context={"page": i % 3} if i % 2 else {},
        )
        for i in range(start, start + n)
    ]


def rows_in(path: Path) -> int:
    """How many events the spool file at ``path`` holds."""
    with closing(sqlite3.connect(path)) as db:
        (count,) = db.execute("SELECT count(*) FROM spool").fetchone()
    return int(count)


async def read_topic(config: KafkaConfig, expected: int) -> list[tuple[KafkaPosition, Event]]:
    """Every message of the topic, each partition in offset order, once ``expected``
    distinct events have arrived and nothing more comes; read without a group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    consumer.assign([TopicPartition(config.topic, p) for p in range(PARTITIONS)])
    by_partition: dict[int, list[tuple[KafkaPosition, Event]]] = defaultdict(list)
    seen: set[str] = set()
    try:
        async with asyncio.timeout(WAIT):
            await consumer.start()
            quiet = False
            while len(seen) < expected or not quiet:
                fetched = await consumer.getmany(timeout_ms=QUIET_MS)
                quiet = not any(fetched.values())
                for tp, records in fetched.items():
                    for r in records:
                        assert r.value is not None
                        event = Event.from_record(orjson.loads(r.value), r.offset)
                        by_partition[tp.partition].append(
                            (KafkaPosition(tp.partition, r.offset), event)
                        )
                        seen.add(event.event_id)
    finally:
        await consumer.stop()
    return [m for p in sorted(by_partition) for m in by_partition[p]]


def check_as_consumers_see_it(
    sent: list[Event], received: list[tuple[KafkaPosition, Event]]
) -> dict[str, KafkaPosition]:
    """Every sent event arrived, none unknown, each user on one partition and, keeping the
    first copy of each event_id, in send order. Returns event_id → first position."""
    first: dict[str, KafkaPosition] = {}
    order: dict[str, list[str]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for position, event in received:
        partitions[event.user_id].add(position.partition)
        if event.event_id not in first:
            first[event.event_id] = position
            order[event.user_id].append(event.event_id)
    assert sorted(first) == sorted(e.event_id for e in sent), "missing or unknown events"
    assert all(len(p) == 1 for p in partitions.values()), partitions
    sent_order: dict[str, list[str]] = defaultdict(list)
    for e in sent:
        sent_order[e.user_id].append(e.event_id)
    assert order == sent_order
    originals = {e.event_id: e for e in sent}
    for position, event in received:  # every field survives the spool
        assert event == Event.from_record(originals[event.event_id].to_record(), position.offset)
    return first


async def test_with_kafka_up_events_go_straight_to_kafka(
    config: KafkaConfig, tmp_path: Path
) -> None:
    events = make_events(120)
    async with running(spooled_log(config, tmp_path / "spool.db")) as log:
        assert not log.degraded
        assert await log.append([]) == []
        positions = await log.append(events[:60]) + await log.append(events[60:])
        assert log.spooled == 0
        assert not log.degraded
        assert log.last_error is None

    assert all(p is not None for p in positions)
    received = await read_topic(config, len(events))
    assert len(received) == len(events)  # nothing went twice
    first = check_as_consumers_see_it(events, received)
    assert positions == [first[e.event_id] for e in events]
    assert rows_in(tmp_path / "spool.db") == 0


async def test_while_kafka_is_cut_off_batches_are_spooled_then_drained_in_order(
    config: KafkaConfig, proxy: TcpProxy, tmp_path: Path
) -> None:
    path = tmp_path / "spool.db"
    events = make_events(250)
    before, after = events[:50], events[200:]
    cut_off = [events[50:100], events[100:150], events[150:200]]
    async with running(spooled_log(config, path)) as log:
        assert None not in await log.append(before)

        proxy.cut()
        for batch in cut_off:
            started = time.monotonic()
            assert await log.append(batch) == [None] * len(batch)
            # the first waits for send_timeout, the others go straight to the spool
            assert time.monotonic() - started < SEND_TIMEOUT + 2.0
        assert log.spooled == 150
        assert rows_in(path) == 150  # committed to the file, not only counted
        assert log.degraded
        assert log.last_error is not None

        proxy.restore()

        async def drained() -> bool:
            return log.spooled == 0 and not log.degraded

        await eventually(drained, within=WAIT)
        assert rows_in(path) == 0
        assert None not in await log.append(after)  # direct again

    received = await read_topic(config, len(events))
    check_as_consumers_see_it(events, received)


async def test_a_spool_left_by_a_stopped_instance_is_drained_on_the_next_start(
    config: KafkaConfig, proxy: TcpProxy, tmp_path: Path
) -> None:
    path = tmp_path / "spool.db"
    events = make_events(150)
    first = spooled_log(config, path)
    async with running(first):
        proxy.cut()
        assert await first.append(events[:60]) == [None] * 60
        assert await first.append(events[60:100]) == [None] * 40
        stopping = time.monotonic()
    # One last drain within send_timeout, then the producer gives up its batches.
    assert time.monotonic() - stopping < SEND_TIMEOUT + REQUEST_TIMEOUT_MS / 1000 + 3.0
    assert rows_in(path) == 100  # kept for the next start

    proxy.restore()
    second = spooled_log(config, path)
    async with running(second):

        async def drained() -> bool:
            return second.spooled == 0 and not second.degraded

        await eventually(drained, within=WAIT)
        assert None not in await second.append(events[100:])

    assert rows_in(path) == 0
    received = await read_topic(config, len(events))
    check_as_consumers_see_it(events, received)


async def test_appends_during_the_drain_queue_behind_the_spool(
    config: KafkaConfig, proxy: TcpProxy, tmp_path: Path
) -> None:
    """Small drain chunks make the drain take many round trips; appends keep coming meanwhile."""
    log = spooled_log(config, tmp_path / "spool.db", chunk_size=25)
    sent: list[Event] = []
    results_after_restore: list[bool] = []  # per batch: went to Kafka directly?
    async with running(log):
        proxy.cut()
        for _ in range(10):
            batch = make_events(100, start=len(sent))
            assert await log.append(batch) == [None] * 100
            sent += batch
        assert log.spooled == 1000

        proxy.restore()
        async with asyncio.timeout(WAIT):
            while results_after_restore.count(True) < 5:
                batch = make_events(10, start=len(sent))
                result = await log.append(batch)
                sent += batch
                direct = result[0] is not None
                assert (None in result) is not direct  # a batch goes one way, whole
                results_after_restore.append(direct)
                await asyncio.sleep(0.01)

        assert log.spooled == 0

    spooled_while_draining = results_after_restore.index(True)
    assert spooled_while_draining > 0, "no append came while the spool was draining"
    # Once the spool was empty, every later append went straight to Kafka.
    assert all(results_after_restore[spooled_while_draining:])
    received = await read_topic(config, len(sent))
    check_as_consumers_see_it(sent, received)


async def test_it_starts_with_kafka_down_and_connects_once_it_is_back(
    config: KafkaConfig, proxy: TcpProxy, tmp_path: Path
) -> None:
    events = make_events(60)
    proxy.cut()
    async with running(spooled_log(config, tmp_path / "spool.db")) as log:
        assert log.degraded
        assert log.last_error is not None
        assert await log.append(events[:30]) == [None] * 30

        proxy.restore()

        async def recovered() -> bool:
            return not log.degraded

        await eventually(recovered, within=WAIT)
        assert None not in await log.append(events[30:])

    check_as_consumers_see_it(events, await read_topic(config, len(events)))


async def test_append_needs_a_started_log_and_settings_name_the_bad_key(tmp_path: Path) -> None:
    kafka = KafkaEventLog(KafkaConfig(f"127.0.0.1:{free_port()}"))
    log = SpooledEventLog(kafka, tmp_path / "spool.db")
    with pytest.raises(RuntimeError, match="not started"):
        await log.append(make_events(1))
    await log.stop()  # stopping what never started is a no-op
    with pytest.raises(ConfigError, match="'send_timeout'"):
        SpooledEventLog(kafka, tmp_path / "spool.db", send_timeout=0)
    with pytest.raises(ConfigError, match="'retry_seconds'"):
        SpooledEventLog(kafka, tmp_path / "spool.db", retry_seconds=-1.0)
    with pytest.raises(ConfigError, match="'chunk_size'"):
        SpooledEventLog(kafka, tmp_path / "spool.db", chunk_size=0)
