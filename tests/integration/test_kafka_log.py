"""The Kafka event log against a real Kafka-protocol broker (Tansu, in memory): no mocks.

Every test has a topic (4 partitions) and a consumer group of its own. Tansu
holds each group join about 3 s (it waits for more members): that, and one
restart that waits for a session to expire, is most of this file's run time.
Every wait is bounded, so a broken broker fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TypeVar

import msgspec
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import UnknownError
from aiokafka.structs import ConsumerRecord

from recloop.adapters.kafka import (
    KafkaConfig,
    KafkaEventLog,
    KafkaEventSource,
    KafkaPosition,
    Undecodable,
)
from recloop.core.errors import ConfigError, Unavailable
from recloop.core.events import Event
from tests.conftest import eventually, free_port
from tests.kafka_broker import create_topic, kafka_broker  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

PARTITIONS = 4
WAIT = 20.0  # seconds: a hang guard, far above what Tansu needs (a group join takes ~3 s)
QUIET_MS = 300  # how long "nothing more arrives" is watched for

Client = TypeVar("Client", KafkaEventLog, KafkaEventSource)


@pytest.fixture
async def config(kafka_broker: str) -> KafkaConfig:  # noqa: F811
    topic = f"events-{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_broker, topic, PARTITIONS)
    await create_topic(kafka_broker, f"{topic}.dlq", 1)
    return KafkaConfig(
        bootstrap_servers=kafka_broker,
        topic=topic,
        group_id=f"workers-{uuid.uuid4().hex[:10]}",
        enable_idempotence=False,  # Tansu has no InitProducerId
        linger_ms=1,
        request_timeout_ms=5_000,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=100,  # notice rebalances quickly
    )


@asynccontextmanager
async def running(client: Client) -> AsyncIterator[Client]:
    """``client`` started (within WAIT seconds) and always stopped afterwards."""
    try:
        async with asyncio.timeout(WAIT):
            await client.start()
        yield client
    finally:
        await client.stop()


def make_events(n: int, users: int = 8) -> list[Event]:
    """``n`` events of ``users`` users, of every shape the record can take."""
    kinds = ["like", "click", "rating", "dwell", "view"]
    events = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        events.append(
            Event(
                event_id=f"e{i:05d}",
                user_id=f"user-{i % users}",
                item_id=f"item-{i % 13}",
                type=kind,
                timestamp=1_700_000_000.0 + i / 4,
                value={"rating": 4.0, "dwell": 12.5}.get(kind),
                text="fine" if i % 7 == 0 else None,
                context={"device": "mobile", "page": i % 3} if i % 2 else {},
                attribution={"impression_id": f"imp-{i // 10}", "position": i % 10}
                if i % 3 == 0
                else {},
            )
        )
    return events


async def consume(source: KafkaEventSource, count: int) -> list[tuple[int, Event]]:
    """(partition, event) of the next ``count`` events, then check that no more arrive."""
    received: list[tuple[int, Event]] = []
    async with asyncio.timeout(WAIT):
        while len(received) < count:
            batch = await source.poll(max_records=50, timeout_ms=200)
            assert not batch.undecodable
            received += zip(batch.partitions, batch.events, strict=True)
    extra = await source.poll(timeout_ms=QUIET_MS)
    assert extra.events == [], f"{len(extra.events)} events more than the {count} expected"
    return received


def logged(events: list[Event], positions: list[KafkaPosition]) -> dict[str, tuple[int, Event]]:
    """event_id → (partition, the event as a consumer must decode it)."""
    return {
        e.event_id: (p.partition, msgspec.structs.replace(e, offset=p.offset))
        for e, p in zip(events, positions, strict=True)
    }


async def test_append_waits_for_every_acknowledgement_and_keys_by_user(
    config: KafkaConfig,
) -> None:
    events = make_events(200)
    async with running(KafkaEventLog(config)) as log:
        assert await log.append([]) == []
        positions = await log.append(events)

    assert len(positions) == len(events)
    assert len(set(positions)) == len(positions)
    partition_of_user: dict[str, set[int]] = defaultdict(set)
    offsets_of_partition: dict[int, list[int]] = defaultdict(list)
    for event, position in zip(events, positions, strict=True):
        assert 0 <= position.partition < PARTITIONS
        partition_of_user[event.user_id].add(position.partition)
        offsets_of_partition[position.partition].append(position.offset)
    assert all(len(p) == 1 for p in partition_of_user.values()), partition_of_user
    assert len(offsets_of_partition) > 1  # 8 users spread over the 4 partitions
    for offsets in offsets_of_partition.values():  # in append order, from 0, no gaps
        assert offsets == list(range(len(offsets)))
    assert all(e.offset == -1 for e in events)  # the consumer sets offsets, not append


async def test_a_worker_receives_every_event_once_in_order_per_user(config: KafkaConfig) -> None:
    events = make_events(200)
    async with running(KafkaEventLog(config)) as log:
        positions = await log.append(events)
    expected = logged(events, positions)

    async with running(KafkaEventSource(config)) as source:
        assert source.assignment() == frozenset(range(PARTITIONS))
        received = await consume(source, len(events))
        async with asyncio.timeout(WAIT):
            async for batch in source.batches(timeout_ms=50):
                assert batch.events == []
                await source.stop()  # a shutdown ends the iteration
        assert source.assignment() == frozenset()

    assert sorted(e.event_id for _, e in received) == sorted(expected)
    for partition, event in received:
        assert (partition, event) == expected[event.event_id]  # every field, offset included
    sent_order: dict[str, list[str]] = defaultdict(list)
    for e in events:
        sent_order[e.user_id].append(e.event_id)
    received_order: dict[str, list[str]] = defaultdict(list)
    for _, e in received:
        received_order[e.user_id].append(e.event_id)
    assert received_order == sent_order


async def test_a_restarted_worker_resumes_after_the_last_commit(config: KafkaConfig) -> None:
    events = make_events(120)
    async with running(KafkaEventLog(config)) as log:
        positions = await log.append(events)
    expected = logged(events, positions)
    used = sorted({p.partition for p in positions})
    # Commit halfway through every partition but one; that one is never committed.
    uncommitted = used[0]
    commit = {
        p: sum(1 for q in positions if q.partition == p) // 2 for p in used if p != uncommitted
    }

    async with running(KafkaEventSource(config)) as first:
        assert len(await consume(first, len(events))) == len(events)
        await first.commit(commit)
    # Slow (~15 s) on Tansu: it numbers a group's first generation 0, and aiokafka sends no
    # LeaveGroup from generation 0, so ``second`` waits for ``first``'s session to expire.

    async with running(KafkaEventSource(config)) as second:
        received = await consume(second, len(events) - sum(commit.values()))

    again = {e.event_id for _, e in received}
    assert again == {
        event_id
        for event_id, (partition, event) in expected.items()
        if event.offset >= commit.get(partition, 0)
    }
    assert uncommitted in {p for p, _ in received}
    for partition, event in received:
        assert (partition, event) == expected[event.event_id]


async def test_seeking_on_assignment_resumes_from_offsets_kept_with_the_state(
    config: KafkaConfig,
) -> None:
    events = make_events(80)
    async with running(KafkaEventLog(config)) as log:
        positions = await log.append(events)
    expected = logged(events, positions)
    used = sorted({q.partition for q in positions})
    await commit_without_joining(config, {p: 1 for p in used})
    # As if read from the state store: ahead of the commits, for all partitions but one.
    stored = {p: 3 for p in used[1:]}

    async def resume(partitions: frozenset[int]) -> None:
        source.seek({p: o for p, o in stored.items() if p in partitions})

    source = KafkaEventSource(config, on_assigned=resume)
    async with running(source):
        received = await consume(source, len(events) - 3 * len(stored) - 1)

    assert {e.event_id for _, e in received} == {
        event_id
        for event_id, (partition, event) in expected.items()
        if event.offset >= stored.get(partition, 1)
    }


async def test_two_workers_split_the_partitions_and_hear_of_the_rebalance(
    config: KafkaConfig,
) -> None:
    calls: dict[str, list[tuple[str, frozenset[int]]]] = {"a": [], "b": []}

    def recorder(name: str, what: str) -> Callable[[frozenset[int]], Awaitable[None]]:
        async def hook(partitions: frozenset[int]) -> None:
            calls[name].append((what, partitions))

        return hook

    def worker(name: str) -> KafkaEventSource:
        return KafkaEventSource(
            config,
            on_revoked=recorder(name, "revoked"),
            on_assigned=recorder(name, "assigned"),
        )

    everything = frozenset(range(PARTITIONS))
    async with running(worker("a")) as a:
        assert a.assignment() == everything
        async with running(worker("b")) as b:

            async def rebalanced() -> bool:  # both own partitions and both hooks have run
                return len(calls["a"]) == 3 and len(calls["b"]) == 1

            await eventually(rebalanced, within=WAIT)
            assert a.assignment() | b.assignment() == everything
            assert not a.assignment() & b.assignment()
            assert calls["a"] == [
                ("assigned", everything),
                ("revoked", everything),  # before b may take any of them
                ("assigned", a.assignment()),
            ]
            assert calls["b"] == [("assigned", b.assignment())]

            share = {"a": a.assignment(), "b": b.assignment()}
            events = make_events(100)
            async with running(KafkaEventLog(config)) as log:
                positions = await log.append(events)
            count_a = sum(1 for p in positions if p.partition in share["a"])
            got = dict(
                zip(
                    "ab",
                    await asyncio.gather(consume(a, count_a), consume(b, len(events) - count_a)),
                    strict=True,
                )
            )

    for name in "ab":
        assert {partition for partition, _ in got[name]} <= share[name], name
    both = sorted(e.event_id for _, e in got["a"] + got["b"])
    assert both == sorted(logged(events, positions))


async def test_a_dead_letter_carries_its_reason_and_source(config: KafkaConfig) -> None:
    event = make_events(1)[0]
    async with running(KafkaEventLog(config)) as log:
        at = await log.dead_letter(event, "vector has NaN", source=KafkaPosition(2, 41))

    [message] = await read_dead_letters(config, 1)
    assert (message.partition, message.offset) == (at.partition, at.offset)
    assert dict(message.headers) == {
        "reason": b"vector has NaN",
        "event_id": event.event_id.encode(),
        "source_partition": b"2",
        "source_offset": b"41",
    }
    assert message.key == event.user_id.encode()
    assert Event.from_record(orjson.loads(message.value), -1) == event


async def test_an_undecodable_message_is_reported_then_dead_lettered(
    config: KafkaConfig,
) -> None:
    good = make_events(1)[0]
    garbage = b"{not json"
    async with running(KafkaEventLog(config)) as log:
        [good_at] = await log.append([good])
        raw = AIOKafkaProducer(bootstrap_servers=config.bootstrap_servers, acks="all")
        try:
            async with asyncio.timeout(WAIT):
                await raw.start()
                bad = await raw.send_and_wait(config.topic, garbage, key=good.user_id.encode())
        finally:
            await raw.stop()
        assert bad.partition == good_at.partition  # same key, same partition, after the event

        events: list[Event] = []
        positions: list[KafkaPosition] = []
        undecodable: list[Undecodable] = []
        next_offsets: dict[int, int] = {}
        async with running(KafkaEventSource(config)) as source, asyncio.timeout(WAIT):
            while not undecodable:
                batch = await source.poll(timeout_ms=200)
                events += batch.events
                positions += batch.positions()
                undecodable += batch.undecodable
                next_offsets |= batch.next_offsets
        assert events == [msgspec.structs.replace(good, offset=good_at.offset)]
        assert positions == [good_at]
        [poison] = undecodable
        assert poison.position == KafkaPosition(bad.partition, bad.offset)
        assert (poison.key, poison.value) == (good.user_id.encode(), garbage)
        assert "JSONDecodeError" in poison.reason
        assert next_offsets == {bad.partition: bad.offset + 1}  # commit past it

        await log.dead_letter(poison, poison.reason)

    [message] = await read_dead_letters(config, 1)
    assert message.value == garbage
    headers = dict(message.headers)
    assert headers["reason"] == poison.reason.encode()
    assert headers["source_offset"] == str(bad.offset).encode()
    assert "event_id" not in headers


async def test_a_failing_rebalance_hook_stops_the_worker(config: KafkaConfig) -> None:
    async def broken(partitions: frozenset[int]) -> None:
        raise RuntimeError(f"could not load state of {sorted(partitions)}")

    async with running(KafkaEventSource(config, on_assigned=broken)) as source:
        with pytest.raises(RuntimeError, match=r"could not load state of \[0, 1, 2, 3\]"):
            await source.poll(timeout_ms=100)
        assert (await source.poll(timeout_ms=100)).events == []  # raised once, not forever


async def test_an_idempotent_producer_is_refused_by_tansu(config: KafkaConfig) -> None:
    """Tansu does not serve InitProducerId: the error is immediate and says what to change."""
    log = KafkaEventLog(replace(config, enable_idempotence=True))
    with pytest.raises(Unavailable, match="enable_idempotence") as refused:
        async with running(log):
            pass
    assert isinstance(refused.value.__cause__, UnknownError)


async def test_no_broker_is_unavailable() -> None:
    nowhere = KafkaConfig(f"127.0.0.1:{free_port()}", request_timeout_ms=2_000)
    with pytest.raises(Unavailable, match="could not start") as refused:
        async with running(KafkaEventLog(nowhere)):
            pass
    assert "InitProducerId" not in str(refused.value)  # no hint when nobody answers at all
    with pytest.raises(Unavailable, match="could not join"):
        async with running(KafkaEventSource(nowhere)):
            pass


def test_config_names_the_bad_key() -> None:
    with pytest.raises(ConfigError, match="'heartbeat_interval_ms'"):
        KafkaConfig("127.0.0.1:9092", heartbeat_interval_ms=10_000, session_timeout_ms=10_000)
    with pytest.raises(ConfigError, match="'topic'"):
        KafkaConfig("127.0.0.1:9092", topic="")
    assert KafkaConfig("127.0.0.1:9092", topic="t").dlq_topic == "t.dlq"


async def read_dead_letters(config: KafkaConfig, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """The first ``count`` messages of the DLQ topic, read without a group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap_servers, auto_offset_reset="earliest"
    )
    consumer.assign([TopicPartition(config.dlq_topic, 0)])
    messages: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(WAIT):
            await consumer.start()
            while len(messages) < count:
                fetched = await consumer.getmany(timeout_ms=200)
                for records in fetched.values():
                    messages += records
    finally:
        await consumer.stop()
    return messages


async def commit_without_joining(config: KafkaConfig, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for the group from a consumer that assigns itself the partitions
    (no group join, so no ~3 s wait)."""
    tps = {TopicPartition(config.topic, p): o for p, o in offsets.items()}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        group_id=config.group_id,
        enable_auto_commit=False,
    )
    consumer.assign(list(tps))
    try:
        async with asyncio.timeout(WAIT):
            await consumer.start()
            await consumer.commit(tps)
    finally:
        await consumer.stop()
