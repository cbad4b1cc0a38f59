"""The distributed deployment's processor: a worker's share of the event topic, applied.

::

    topic partitions ──poll──▶ archive (PostgreSQL ``events``: first seen here?)
                                  │ fresh                │ duplicate / undecodable
                                  ▼                      ▼
                      guard.observe ─▶ Processor     skipped (undecodable: <topic>.dlq)
                                  │  states + per-partition positions, one transaction
                                  ▼
                      Kafka offset commit (every ``commit_seconds``)

Effectively-once, from two facts:

- *Positions are stored with the state.* Each commit of user states also
  writes, per owned partition, the offset below which every message is in
  the state (``StateChanges.positions``); a worker that gains a partition
  fetches from there, not from Kafka's committed offset, which only trails
  it (for lag monitoring and for tools). A message redelivered after a
  crash is applied or skipped by its user's stored offsets, exactly as in
  the embedded deployment.
- *Duplicates are recognised by position.* The archive keeps the first
  position each ``event_id`` was read at; the same id at another position
  (a client's retry, a spool replayed twice) is skipped.

Offsets inside recloop are 1-based (``Event.offset = kafka offset + 1``), so a
partition's stored position is also the next Kafka offset to fetch.

A rebalance drains: before its partitions go, the worker applies and commits
everything it has taken from them and forgets every user's state (another
worker may change it next).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from recloop.adapters.kafka.log import KafkaBatch, KafkaConfig, KafkaEventLog, KafkaEventSource
from recloop.core.errors import Unavailable
from recloop.core.events import Event
from recloop.ports import StateStore
from recloop.resilience import retry_forever
from recloop.services.feedback import Processor

log = logging.getLogger(__name__)


class Archive(Protocol):
    async def archive(self, batch: Sequence[Event]) -> list[bool]:
        """Keep the events; for each, whether it is first seen at its position."""
        ...


class Observer(Protocol):
    async def observe(self, events: Sequence[Event]) -> None: ...


class Worker:
    """Consumes the event topic in the ``config.group_id`` group and applies it.

    Parameters
    ----------
    config
        The event topic and the consumer group.
    processor
        Applies events and commits state with the partitions' positions.
    store
        Where those positions are read back from on assignment.
    archive
        Keeps every event (for reads by user or impression) and tells duplicates.
    dead_letters
        The producer undecodable messages go to (``<topic>.dlq``).
    guard
        Takes every fresh event as evidence before it is applied (optional).
    """

    def __init__(
        self,
        config: KafkaConfig,
        processor: Processor,
        store: StateStore,
        archive: Archive,
        dead_letters: KafkaEventLog,
        guard: Observer | None = None,
        max_records: int = 2_000,
        commit_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._processor = processor
        self._store = store
        self._archive = archive
        self._dlq = dead_letters
        self._guard = guard
        self._max_records = max_records
        self._commit_seconds = commit_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._source = KafkaEventSource(
            config, on_revoked=self._on_revoked, on_assigned=self._on_assigned
        )
        self._committed: dict[int, int] = {}
        self._committed_at = 0.0
        self._stopping = asyncio.Event()
        self.applied = 0
        self.redelivered = 0
        """Fresh events already in their user's state (read again after a crash)."""
        self.duplicates = 0
        self.undecodable = 0
        self.blocked = 0
        """Events of erased users skipped (accepted before the erasure)."""

    async def start(self) -> None:
        """Start the processor, then join the group (the first assignment comes with it)."""
        await self._dlq.start()
        self._processor.start_partitioned()
        await self._source.start()

    async def run(self) -> None:
        """Poll, apply and commit until :meth:`stop` is called."""
        while not self._stopping.is_set():
            batch = await self._source.poll(self._max_records, timeout_ms=200)
            async with self._lock:
                await self._handle(batch)
            if self._clock() - self._committed_at >= self._commit_seconds:
                await self._commit_offsets()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand."""
        self._stopping.set()

    async def close(self) -> None:
        """Apply and commit everything taken, commit the offsets, leave the group."""
        async with self._lock:
            await self._processor.stop()  # stores the final positions with the last state
        await self._commit_offsets(checkpoint=False)
        await self._source.stop()
        await self._dlq.stop()

    def assignment(self) -> frozenset[int]:
        """The partitions this worker owns now."""
        return self._source.assignment()

    # -- one batch ---------------------------------------------------------------

    async def _handle(self, batch: KafkaBatch) -> None:
        owned = self._processor.trackers
        # Taken are only messages past what each owned partition has taken: those of
        # partitions revoked since the poll returned go to their new owner, who fetches
        # them again; those fetched before a seek on assignment come again after it.
        events: list[Event] = []
        for event, partition in zip(batch.events, batch.partitions, strict=True):
            tracker = owned.get(partition)
            if tracker is not None and event.offset + 1 > tracker.last_begun:
                event.partition, event.offset = partition, event.offset + 1
                events.append(event)
        # An erased user's events accepted before the erasure are neither archived nor
        # applied (their tombstones come with the periodic refresh).
        blocked = [e for e in events if self._processor.blocks(e)]
        if blocked:
            events = [e for e in events if not self._processor.blocks(e)]
            self.blocked += len(blocked)
        first_seen = await retry_forever("archive", self._archive.archive, events) if events else []
        # Per partition in offset order: runs of fresh events are dispatched, the rest
        # (duplicates, erased users' events, undecodable messages) are marked done in
        # their turn.
        messages: list[tuple[int, int, Any]] = [
            (e.partition, e.offset, e if fresh else None)
            for e, fresh in zip(events, first_seen, strict=True)
        ]
        messages.extend((e.partition, e.offset, None) for e in blocked)
        for u in batch.undecodable:
            tracker = owned.get(u.position.partition)
            if tracker is not None and u.position.offset + 1 > tracker.last_begun:
                await retry_forever("dead_letter", self._dlq.dead_letter, u, u.reason)
                messages.append((u.position.partition, u.position.offset + 1, None))
                self.undecodable += 1
        messages.sort(key=lambda m: (m[0], m[1]))
        fresh = [m[2] for m in messages if m[2] is not None]
        if fresh and self._guard is not None:
            await self._guard.observe(fresh)
        run: list[Event] = []
        redelivered = 0
        for partition, offset, event in messages:
            if event is not None:
                run.append(event)
                continue
            if run:
                redelivered += await self._processor.dispatch_unapplied(run)
                run = []
            self._processor.skip(partition, offset)
        if run:
            redelivered += await self._processor.dispatch_unapplied(run)
        self.redelivered += redelivered
        self.applied += len(fresh) - redelivered
        self.duplicates += len(events) - len(fresh)

    async def _commit_offsets(self, checkpoint: bool = True) -> None:
        """Store the positions reached, then tell Kafka (for lag and for tools)."""
        self._committed_at = self._clock()
        if checkpoint:
            async with self._lock:
                await self._processor.checkpoint()
        positions = {
            p: o
            for p, o in self._processor.positions().items()
            if o > 0 and o != self._committed.get(p)
        }
        if not positions:
            return
        try:
            await self._source.commit(positions)
        except Unavailable as exc:  # a rebalance: the stored positions are what counts
            log.info("offset commit skipped: %s", exc)
            return
        self._committed.update(positions)

    # -- rebalancing ---------------------------------------------------------------

    async def _on_assigned(self, partitions: frozenset[int]) -> None:
        async with self._lock:
            stored = await retry_forever("get_positions", self._store.get_positions)
            positions = {p: stored.get(p, 0) for p in partitions}
            self._processor.assign(positions)
            self._source.seek(positions)
            self._committed = {}
            log.info("assigned partitions %s at %s", sorted(partitions), positions)

    async def _on_revoked(self, partitions: frozenset[int]) -> None:
        async with self._lock:
            positions = await self._processor.release()
            log.info("released partitions %s at %s", sorted(partitions), positions)
        try:
            await self._source.commit({p: o for p, o in positions.items() if o > 0})
        except Unavailable as exc:
            log.info("offset commit on revoke skipped: %s", exc)
