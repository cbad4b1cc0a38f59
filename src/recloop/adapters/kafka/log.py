"""The distributed event log over Kafka (aiokafka): a producer for the API, a source for workers.

::

    api ── KafkaEventLog.append ──▶ topic (keyed by user_id) ──▶ KafkaEventSource.poll ──▶ worker
                                                                         │
           KafkaEventLog.dead_letter ──▶ <topic>.dlq  ◀── poison events ─┘

Messages
--------
One message per event: key ``user_id`` (UTF-8), value the JSON of
:meth:`Event.to_record`, header ``event_id``. Keying by user sends every event
of a user to one partition (Kafka's default murmur2 partitioner, the same in
every client), which is what keeps a user's events in order.

Guarantees and where they come from
-----------------------------------
- *Durable*: :meth:`KafkaEventLog.append` returns only once every event is
  acknowledged with ``acks="all"`` (written to all in-sync replicas).
- *In order per user*: one partition per user; aiokafka keeps at most one
  produce request in flight per broker and re-queues a retried batch before
  the next one, so retries do not reorder a partition.
- *Not deduplicated here*: unlike :class:`~recloop.adapters.sql.SqlEventLog`,
  the producer cannot tell that an ``event_id`` was logged before, so the same
  event sent twice (a client retry, or a resend after a partial failure) is
  logged twice. Duplicates are dropped on the consumer side: a worker skips an
  ``event_id`` its state store has already applied, and stores the offsets it
  applied in the same transaction as the state they changed, so replay after
  a crash or rebalance is effectively-once.
- ``enable_idempotence`` (on by default) stops the producer's own retries from
  writing a batch twice. It needs the broker's ``InitProducerId`` API, which
  Tansu (the broker the tests run) does not serve: there it must be off.

Offsets are per partition, so positions in this log are
:class:`KafkaPosition` ``(partition, offset)`` pairs, not the single integer of
the embedded :class:`~recloop.ports.EventLog`. The read side of that protocol
(``read_user_events``, ``read_impression_feedback``) is served by the state
store in the distributed deployment; this module only writes and consumes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaConnectionError, KafkaError
from aiokafka.structs import ConsumerRecord, RecordMetadata

from recloop.adapters.kafka.partitioning import partitions_of
from recloop.config import KafkaSettings
from recloop.core.errors import ConfigError, Unavailable
from recloop.core.events import Event
from recloop.core.records import dumps as encode_record

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "event_id"
REQUEST_ID_HEADER = "request_id"
REASON_HEADER = "reason"
SOURCE_PARTITION_HEADER = "source_partition"
SOURCE_OFFSET_HEADER = "source_offset"

_DEFAULTS = KafkaSettings()
"""The settings' defaults: the one definition of each (``event_log.kafka``)."""

PartitionsHook = Callable[[frozenset[int]], Awaitable[None]]
"""Called with a set of partition numbers of the event topic."""


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Where the log lives and how its clients behave.

    Parameters
    ----------
    bootstrap_servers
        ``host:port`` of one or more brokers, comma-separated.
    topic
        The event topic; dead letters go to ``<topic>.dlq``.
    group_id
        The consumer group workers join; its partitions are split among them.
    client_id
        Sent to the broker with every request (shows up in its logs and metrics).
    enable_idempotence
        Idempotent producer: broker-side dedupe of the producer's own retries.
        Needs ``InitProducerId``; turn it off for brokers without it (Tansu).
    linger_ms
        How long the producer waits to fill a batch before sending it.
    max_batch_size
        Upper bound of one partition's batch, in bytes.
    request_timeout_ms
        How long a client waits for any broker response.
    session_timeout_ms
        A worker that sends no heartbeat for this long leaves the group.
    heartbeat_interval_ms
        How often a worker heartbeats; also how soon it notices a rebalance.
    max_poll_interval_ms
        A worker that does not poll for this long is considered stuck and leaves the group.
    fetch_max_wait_ms
        How long the broker may hold a fetch that has no new messages. Kafka answers
        as soon as a message arrives, so this only bounds idle polling there; brokers
        that answer when the wait expires (Tansu) add up to this much latency.
    """

    bootstrap_servers: str
    topic: str = _DEFAULTS.topic
    group_id: str = _DEFAULTS.group_id
    client_id: str = _DEFAULTS.client_id
    enable_idempotence: bool = _DEFAULTS.enable_idempotence
    linger_ms: int = _DEFAULTS.linger_ms
    max_batch_size: int = 256 * 1024
    request_timeout_ms: int = _DEFAULTS.request_timeout_ms
    session_timeout_ms: int = _DEFAULTS.session_timeout_ms
    heartbeat_interval_ms: int = _DEFAULTS.heartbeat_interval_ms
    max_poll_interval_ms: int = 300_000
    fetch_max_wait_ms: int = _DEFAULTS.fetch_max_wait_ms

    @classmethod
    def of(cls, settings: KafkaSettings) -> KafkaConfig:
        """The ``event_log.kafka`` section's values."""
        return cls(**settings.model_dump())

    def __post_init__(self) -> None:
        for name in ("bootstrap_servers", "topic", "group_id", "client_id"):
            if not getattr(self, name):
                raise ConfigError(f"Kafka '{name}' must not be empty.")
        for name in (
            "max_batch_size",
            "request_timeout_ms",
            "session_timeout_ms",
            "heartbeat_interval_ms",
            "max_poll_interval_ms",
            "fetch_max_wait_ms",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"Kafka '{name}' must be > 0, got {getattr(self, name)}.")
        if self.linger_ms < 0:
            raise ConfigError(f"Kafka 'linger_ms' must be >= 0, got {self.linger_ms}.")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigError(
                f"Kafka 'heartbeat_interval_ms' ({self.heartbeat_interval_ms}) must be below "
                f"'session_timeout_ms' ({self.session_timeout_ms})."
            )

    @property
    def dlq_topic(self) -> str:
        """The dead-letter topic, ``<topic>.dlq``."""
        return f"{self.topic}.dlq"


@dataclass(frozen=True, slots=True)
class KafkaPosition:
    """Where a message sits in a topic: its partition and its offset in that partition.

    Offsets increase within a partition only; positions of different
    partitions are not ordered. ``offset + 1`` is what a consumer commits
    once the message is applied.
    """

    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A message of the event topic that is not a valid event (a poison message).

    It is kept, not dropped: the worker sends it to the dead-letter topic
    (:meth:`KafkaEventLog.dead_letter`) and commits past it.
    """

    position: KafkaPosition
    key: bytes | None
    value: bytes | None
    reason: str


@dataclass(frozen=True, slots=True)
class KafkaBatch:
    """What one poll returned.

    ``partitions`` runs parallel to ``events`` (``partitions[i]`` is the
    partition of ``events[i]``; ``events[i].offset`` is its offset there): a
    list of ints costs less per event than a wrapper object around each one.
    Events of one partition come in offset order, one partition after the
    other; there is no order across partitions.

    ``next_offsets`` maps each partition the batch touched to the offset
    after its last message, decoded or not: what to store with the applied
    state and then pass to :meth:`KafkaEventSource.commit`.
    """

    events: list[Event] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    undecodable: list[Undecodable] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)

    def positions(self) -> list[KafkaPosition]:
        """Each event's position, in the order of ``events``."""
        return [
            KafkaPosition(p, e.offset) for p, e in zip(self.partitions, self.events, strict=True)
        ]


class KafkaEventLog:
    """The producer side: appends accepted events to the topic, and poison events to its DLQ.

    Parameters
    ----------
    config
        Brokers, topic and producer settings.

    Examples
    --------
    ::

        async with KafkaEventLog(KafkaConfig("127.0.0.1:9092")) as log:
            positions = await log.append(events)   # all acknowledged (acks=all)
    """

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect to the brokers (and get a producer id, if idempotent).

        Raises
        ------
        Unavailable
            if no broker answers, or the broker refuses the idempotent
            producer's ``InitProducerId`` (the message then says so).
        """
        if self._producer is not None:
            return
        c = self.config
        producer = AIOKafkaProducer(
            bootstrap_servers=c.bootstrap_servers,
            client_id=c.client_id,
            acks="all",
            enable_idempotence=c.enable_idempotence,
            linger_ms=c.linger_ms,
            max_batch_size=c.max_batch_size,
            request_timeout_ms=c.request_timeout_ms,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            hint = (
                " With enable_idempotence on, the broker must serve InitProducerId"
                " (Kafka does; Tansu does not: set enable_idempotence to false there)."
                if c.enable_idempotence and not isinstance(exc, KafkaConnectionError)
                else ""
            )
            raise Unavailable(
                f"Kafka producer could not start on {c.bootstrap_servers}: {exc!r}.{hint}"
            ) from exc
        except BaseException:  # cancelled (a timeout): close what was opened
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        """Send what is buffered and close the connections. Safe to call twice."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def append(self, events: Sequence[Event]) -> list[KafkaPosition]:
        """Write ``events`` to the topic and wait until every one is acknowledged.

        Events are sent in order, so events of one user keep their order in
        its partition. Duplicate ``event_id``\\ s are written again (see the
        module docstring: consumers dedupe). ``Event.offset`` is left as it
        is; the consumer sets it from the message.

        Returns
        -------
        list[KafkaPosition]
            Each event's position, in the order of ``events``.

        Raises
        ------
        Unavailable
            if any event was not acknowledged. Others of the batch may have
            been written; sending the whole batch again is safe.
        """
        producer = self._running()
        topic = self.config.topic
        if not events:
            return []
        # Kafka's default partitioner, for the whole batch at once; then one batch per
        # partition (more if one is full), its messages in the order of ``events``.
        keys = [e.user_id.encode() for e in events]
        sent: list[tuple[asyncio.Future[RecordMetadata], list[int]]] = []
        try:
            partitions = sorted(await producer.partitions_for(topic))
            chosen = partitions_of(keys, partitions)
            order = np.argsort(chosen, kind="stable").tolist()
            bounds = np.flatnonzero(np.diff(chosen[order])) + 1
            for run in np.split(np.asarray(order), bounds):
                members = run.tolist()
                partition = int(chosen[members[0]])
                builder, taken = producer.create_batch(), []
                for i in members:
                    event = events[i]
                    value = encode_record(event.to_record())
                    headers = _headers(event)
                    while (
                        builder.append(key=keys[i], value=value, timestamp=None, headers=headers)
                        is None
                    ):
                        if not taken:  # one message larger than a batch: as send() says
                            raise KafkaError(
                                f"a message of {len(value)} bytes exceeds max_batch_size"
                            )
                        sent.append(
                            (await producer.send_batch(builder, topic, partition=partition), taken)
                        )
                        builder, taken = producer.create_batch(), []
                    taken.append(i)
                sent.append((await producer.send_batch(builder, topic, partition=partition), taken))
        except KafkaError as exc:
            await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
            raise Unavailable(f"Kafka did not accept events for {topic!r}: {exc!r}") from exc
        positions: list[KafkaPosition | None] = [None] * len(events)
        failed: list[BaseException] = []
        results = await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
        for result, (_, taken) in zip(results, sent, strict=True):
            if isinstance(result, BaseException):
                failed.extend([result] * len(taken))
                continue
            for j, i in enumerate(taken):
                positions[i] = KafkaPosition(result.partition, result.offset + j)
        if failed:
            raise Unavailable(
                f"Kafka did not acknowledge {len(failed)} of {len(events)} events"
                f" for {topic!r}: {failed[0]!r}"
            ) from failed[0]
        return positions  # type: ignore[return-value]  # every one is set

    async def dead_letter(
        self,
        event: Event | Undecodable,
        reason: str,
        source: KafkaPosition | None = None,
    ) -> KafkaPosition:
        """Write a poison event to ``<topic>.dlq`` and wait for the acknowledgement.

        Parameters
        ----------
        event
            The event that failed, or a message that could not be decoded
            (written with its original key and value bytes).
        reason
            Why it failed; sent in the ``reason`` header.
        source
            Where it was read from, if known (an :class:`Undecodable` knows);
            sent in the ``source_partition`` and ``source_offset`` headers.

        Returns
        -------
        KafkaPosition
            Its position in the dead-letter topic.

        Raises
        ------
        Unavailable
            if the broker did not acknowledge it.
        """
        producer = self._running()
        headers = [(REASON_HEADER, reason.encode())]
        if isinstance(event, Undecodable):
            key, value = event.key, event.value
            source = source or event.position
        else:
            key, value = event.user_id.encode(), encode_record(event.to_record())
            headers.append((EVENT_ID_HEADER, event.event_id.encode()))
            if event.request_id is not None:
                headers.append((REQUEST_ID_HEADER, event.request_id.encode()))
        if source is not None:
            headers.append((SOURCE_PARTITION_HEADER, str(source.partition).encode()))
            headers.append((SOURCE_OFFSET_HEADER, str(source.offset).encode()))
        topic = self.config.dlq_topic
        try:
            meta = await producer.send_and_wait(topic, value=value, key=key, headers=headers)
        except KafkaError as exc:
            raise Unavailable(f"Kafka did not accept a dead letter for {topic!r}: {exc!r}") from exc
        return KafkaPosition(meta.partition, meta.offset)

    def _running(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaEventLog is not started: call start() first")
        return self._producer


class KafkaEventSource:
    """The consumer side: a worker's share of the topic, as batches of decoded events.

    It joins the consumer group ``config.group_id`` and owns the partitions
    the group assigns it. Nothing is committed automatically: the worker
    applies a batch, stores ``batch.next_offsets`` with the state in one
    transaction, then calls :meth:`commit`. A crash in between re-delivers
    the batch; the stored offsets (or the applied ``event_id``\\ s) let the
    worker skip it. A new group starts from the earliest message.

    Parameters
    ----------
    config
        Brokers, topic, group and consumer settings.
    on_revoked
        Awaited with the partitions this worker gives up, before the group
        reassigns them (eager protocol: every partition it owned; not called
        when it owned none). The worker drops their in-memory state here.
    on_assigned
        Awaited with the partitions this worker now owns (the full new
        assignment, possibly empty when there are more workers than
        partitions), before any of their messages is fetched; calling
        :meth:`seek` here resumes from offsets kept with the state.

    Notes
    -----
    aiokafka only logs an exception raised by a rebalance hook; this class
    re-raises it from the next :meth:`poll`, so a worker that failed to drop
    state stops instead of running on with it.

    Tansu numbers a group's first generation 0, and aiokafka sends
    ``LeaveGroup`` only from generation 1 on (Kafka's first): on Tansu a
    worker stopped in the first generation does not leave, and its
    partitions move only once its session expires.
    """

    def __init__(
        self,
        config: KafkaConfig,
        *,
        on_revoked: PartitionsHook | None = None,
        on_assigned: PartitionsHook | None = None,
    ) -> None:
        self.config = config
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self._consumer: AIOKafkaConsumer | None = None
        self._hook_error: BaseException | None = None

    async def start(self) -> None:
        """Connect, join the group and wait for this worker's first assignment.

        Raises
        ------
        Unavailable
            if no broker answers.
        """
        if self._consumer is not None:
            return
        c = self.config
        consumer = AIOKafkaConsumer(
            bootstrap_servers=c.bootstrap_servers,
            client_id=c.client_id,
            group_id=c.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=c.request_timeout_ms,
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            max_poll_interval_ms=c.max_poll_interval_ms,
            fetch_max_wait_ms=c.fetch_max_wait_ms,
        )
        consumer.subscribe(topics=[c.topic], listener=_Listener(self._revoked, self._assigned))
        self._consumer = consumer  # set now: the first on_assigned runs inside start()
        try:
            await consumer.start()
        except KafkaError as exc:
            await self.stop()
            raise Unavailable(
                f"Kafka consumer could not join group {c.group_id!r}"
                f" on {c.bootstrap_servers}: {exc!r}"
            ) from exc
        except BaseException:  # cancelled (a timeout): close what was opened
            await self.stop()
            raise

    async def stop(self) -> None:
        """Leave the group (its partitions go to the other workers) and close. Commits nothing."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def assignment(self) -> frozenset[int]:
        """The partitions this worker owns now (empty while rebalancing or stopped)."""
        if self._consumer is None:
            return frozenset()
        return frozenset(tp.partition for tp in self._consumer.assignment())

    def highwaters(self) -> dict[int, int | None]:
        """Per owned partition, the offset after its last message as of the last fetch
        response (None before one said)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        found: dict[int, int | None] = {}
        for tp in consumer.assignment():
            try:
                found[tp.partition] = consumer.highwater(tp)
            except AssertionError:  # aiokafka's "not assigned": a rebalance meanwhile
                found[tp.partition] = None
        return found

    async def poll(self, max_records: int = 500, timeout_ms: int = 1000) -> KafkaBatch:
        """The next messages of the owned partitions, decoded.

        Waits up to ``timeout_ms`` for at least one message; returns an empty
        batch if none came (or the source was stopped meanwhile), so the
        caller gets control back regularly (to flush windows, to shut down).

        Raises
        ------
        Exception
            whatever a rebalance hook raised since the last poll.
        """
        consumer = self._running()
        self._raise_hook_error()
        try:
            fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except ConsumerStoppedError:
            if self._consumer is None:
                return KafkaBatch()
            raise
        self._raise_hook_error()
        return _decode(fetched)

    async def batches(
        self, max_records: int = 500, timeout_ms: int = 1000
    ) -> AsyncIterator[KafkaBatch]:
        """:meth:`poll` in a loop, until the source is stopped (empty batches included)."""
        while self._consumer is not None:
            yield await self.poll(max_records, timeout_ms)

    def seek(self, offsets: Mapping[int, int]) -> None:
        """Fetch from ``offsets`` (partition → next offset) instead of the committed ones.

        For partitions this worker owns; call it from ``on_assigned`` with
        the offsets stored alongside the state.
        """
        consumer = self._running()
        for partition, offset in offsets.items():
            consumer.seek(TopicPartition(self.config.topic, partition), offset)

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit ``offsets`` (partition → offset of the next message to read) for the group.

        Call it after the state transaction that applied the messages before
        those offsets; :attr:`KafkaBatch.next_offsets` is such a mapping.

        Raises
        ------
        Unavailable
            if the commit failed, e.g. because the group rebalanced and a
            partition is no longer this worker's. Nothing is lost: its new
            owner re-reads from the last commit and skips what is applied.
        """
        if not offsets:
            return
        consumer = self._running()
        topic = self.config.topic
        try:
            await consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
        except KafkaError as exc:
            raise Unavailable(f"Kafka offset commit for {topic!r} failed: {exc!r}") from exc

    async def _revoked(self, tps: Any) -> None:
        partitions = self._partitions(tps)
        if partitions:  # aiokafka also calls it, with nothing, before the first join
            await self._run_hook(self._on_revoked, partitions)

    async def _assigned(self, tps: Any) -> None:
        if self._consumer is None:  # stopping: a last assignment comes with leaving
            return
        await self._run_hook(self._on_assigned, self._partitions(tps))

    def _partitions(self, tps: Any) -> frozenset[int]:
        return frozenset(tp.partition for tp in tps if tp.topic == self.config.topic)

    async def _run_hook(self, hook: PartitionsHook | None, partitions: frozenset[int]) -> None:
        if hook is None:
            return
        try:
            await hook(partitions)
        except Exception as exc:
            log.exception("rebalance hook %r failed", hook)
            if self._hook_error is None:
                self._hook_error = exc

    def _raise_hook_error(self) -> None:
        error, self._hook_error = self._hook_error, None
        if error is not None:
            raise error

    def _running(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("KafkaEventSource is not started: call start() first")
        return self._consumer


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's listener interface over two callables taking its sets of TopicPartition."""

    def __init__(
        self,
        revoked: Callable[[Any], Awaitable[None]],
        assigned: Callable[[Any], Awaitable[None]],
    ) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._assigned(assigned)


def _decode(fetched: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> KafkaBatch:
    batch = KafkaBatch()
    for tp, records in fetched.items():
        if not records:
            continue
        partition = tp.partition
        for record in records:
            try:
                if record.value is None:
                    raise ValueError("the message has no value")
                event = Event.from_record(orjson.loads(record.value), record.offset)
            except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
                position = KafkaPosition(partition, record.offset)
                reason = f"not an event: {type(exc).__name__}: {exc}"
                batch.undecodable.append(Undecodable(position, record.key, record.value, reason))
                continue
            batch.events.append(event)
            batch.partitions.append(partition)
        batch.next_offsets[partition] = records[-1].offset + 1
    return batch


def _headers(event: Event) -> list[tuple[str, bytes]]:
    headers = [(EVENT_ID_HEADER, event.event_id.encode())]
    if event.request_id is not None:
        headers.append((REQUEST_ID_HEADER, event.request_id.encode()))
    return headers
