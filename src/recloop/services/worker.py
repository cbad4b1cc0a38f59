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

Stopping (:class:`Shutdown`, the ``recloop worker`` process): the first SIGTERM or
SIGINT stops gracefully (apply and commit what was taken, commit the offsets, leave
the group); a second one, or ``event_log.worker_shutdown_seconds`` after the first,
exits at once. A forced exit loses nothing: the events are in Kafka and the stored
positions only move with committed state, so what was taken and not committed is
fetched again by the partitions' next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from types import FrameType
from typing import Any, Protocol

from recloop.core.errors import Unavailable
from recloop.core.events import Event
from recloop.ports import DeadLetterSink, PolledBatch, SourceFactory, StateStore
from recloop.resilience import RetryCounts, retry_forever
from recloop.services.feedback import Processor

log = logging.getLogger(__name__)

CONNECT_FIRST_PAUSE = 0.5
"""Seconds before the second attempt to reach an unanswering broker at start-up."""
CONNECT_MAX_PAUSE = 30.0
"""The longest pause between two attempts (they double up to it)."""


class Archive(Protocol):
    async def archive(self, batch: Sequence[Event]) -> list[bool]:
        """Keep the events; for each, whether it is first seen at its position."""
        ...


class EvidenceSink(Protocol):
    """Takes every event the worker hands on as evidence about its user (the guard)."""

    async def observe(self, events: Sequence[Event]) -> None: ...


Report = Callable[[dict[int, int], dict[int, int | None]], Awaitable[None]]
"""Told, after each commit of the positions, each owned partition's committed position
and how many of its messages are not fetched yet (None: unknown)."""


class Worker:
    """Consumes its consumer group's share of the event topic and applies it.

    Parameters
    ----------
    source
        Builds the group's consumer, given the worker's rebalance hooks
        (``on_revoked``, ``on_assigned``).
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
    report
        Told the positions and the messages not fetched yet after each commit (the
        experiments' report of the events waiting, :data:`Report`; optional).
    """

    def __init__(
        self,
        source: SourceFactory,
        processor: Processor,
        store: StateStore,
        archive: Archive,
        dead_letters: DeadLetterSink,
        guard: EvidenceSink | None = None,
        max_records: int = 2_000,
        report: Report | None = None,
        commit_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._processor = processor
        self._store = store
        self._archive = archive
        self._dlq = dead_letters
        self._guard = guard
        self._report = report
        self._max_records = max_records
        self._commit_seconds = commit_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._source = source(self._on_revoked, self._on_assigned)
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
        self.events: dict[tuple[str, str], int] = {}
        """Messages taken, by (event type, outcome): ``applied`` (fresh: handed to the
        processor; includes the :attr:`redelivered` ones it passes over), ``duplicate``,
        ``blocked``, ``undecodable`` (type ``unknown``). For the metrics."""
        self.retries = RetryCounts()
        """The worker's own calls retried (``archive``, ``dlq``, ``get_positions``); the
        processor's are counted in the container's."""
        self.last_error: str | None = None
        """The last failure of one of those calls (it stays after they succeed)."""
        self.started = False
        self._in_hand = 0  # messages of the batch being handled

    async def start(self) -> None:
        """Start the processor, then join the group (the first assignment comes with it).

        A broker that does not answer is waited for, with pauses doubling from
        :data:`CONNECT_FIRST_PAUSE` to :data:`CONNECT_MAX_PAUSE` seconds, each attempt
        logged with what failed; :meth:`stop` ends the wait (then nothing is started).
        """
        if not await self._connect("the dead-letter producer", self._dlq.start):
            return
        self._processor.start_partitioned()
        self.started = True
        await self._connect("the consumer group", self._source.start)

    async def _connect(self, what: str, start: Callable[[], Awaitable[None]]) -> bool:
        """``start()`` until it succeeds (True) or :meth:`stop` is called (False)."""
        pause = CONNECT_FIRST_PAUSE
        attempt = 1
        while not self._stopping.is_set():
            try:
                await start()
                return True
            except Unavailable as exc:
                self._failed(exc)
                self.retries.add("connect")
                log.warning(
                    "waiting for the Kafka broker (%s, attempt %d), next attempt in %.1fs: %s",
                    what,
                    attempt,
                    pause,
                    exc,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)
            pause = min(pause * 2, CONNECT_MAX_PAUSE)
            attempt += 1
        return False

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

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    async def close(self) -> None:
        """Apply and commit everything taken, commit the offsets, leave the group."""
        if self.started:  # else (stopped while waiting for the broker) nothing was taken
            async with self._lock:
                await self._processor.stop()  # stores the final positions with the last state
            await self._commit_offsets(checkpoint=False)
        await self._source.stop()
        await self._dlq.stop()

    def assignment(self) -> frozenset[int]:
        """The partitions this worker owns now."""
        return self._source.assignment()

    def progress(self) -> dict[int, tuple[int, int]]:
        """Per owned partition: (stored position, taken), both next Kafka offsets to fetch.

        The position is where every message before it is committed state (what a
        new owner resumes from); ``taken`` is past the last message this worker took.
        Between them: messages taken and not committed yet.
        """
        if not self.started:
            return {}
        trackers = dict(self._processor.trackers)  # a copy: callers may be in another thread
        return {p: (t.watermark, t.last_begun) for p, t in trackers.items()}

    def unfinished(self) -> str:
        """What a stop abandoned now would leave, in words (for the forced exit's log)."""
        progress = self.progress()
        begun = sum(max(t - s, 0) for s, t in progress.values())
        p = self._processor
        parts = [
            f"{self._in_hand} message(s) in the batch being handled",
            f"{begun} begun past the stored positions (taken, not committed)",
            "partitions "
            + (
                ", ".join(f"{n}: stored {s}, taken {t}" for n, (s, t) in sorted(progress.items()))
                or "none"
            ),
            f"explicit queue {p.explicit_queue_depth}, implicit buffered {p.implicit_buffered}",
        ]
        if p.calls.failing:
            parts.append(
                f"storage calls failing {p.calls.failing} (last error: {p.calls.last_error})"
            )
        if self.last_error is not None:
            parts.append(f"last worker error: {self.last_error}")
        return "; ".join(parts)

    def _count(self, event_type: str, status: str, n: int = 1) -> None:
        key = (event_type, status)
        self.events[key] = self.events.get(key, 0) + n

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"

    async def _retrying(self, operation: str, fn: Callable[..., Any], *args: Any) -> Any:
        return await retry_forever(operation, fn, *args, counts=self.retries, on_error=self._failed)

    # -- one batch ---------------------------------------------------------------

    async def _handle(self, batch: PolledBatch) -> None:
        self._in_hand = len(batch.events) + len(batch.undecodable)
        try:
            await self._take(batch)
        finally:
            self._in_hand = 0

    async def _take(self, batch: PolledBatch) -> None:
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
        flags = self._processor.erasures.blocks(events)
        blocked = [e for e, erased in zip(events, flags, strict=True) if erased]
        if blocked:
            events = [e for e, erased in zip(events, flags, strict=True) if not erased]
            self.blocked += len(blocked)
            for e in blocked:
                self._count(e.type, "blocked")
        first_seen = (
            await self._retrying("archive", self._archive.archive, events) if events else []
        )
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
                await self._retrying("dlq", self._dlq.dead_letter, u, u.reason)
                messages.append((u.position.partition, u.position.offset + 1, None))
                self.undecodable += 1
                self._count("unknown", "undecodable")
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
        taken = Counter(zip([e.type for e in events], first_seen, strict=True))
        for (event_type, is_fresh), n in taken.items():
            self._count(event_type, "applied" if is_fresh else "duplicate", n)

    async def _tell_report(self) -> None:
        assert self._report is not None
        try:
            progress = self.progress()
            highwaters = self._source.highwaters()
            unfetched: dict[int, int | None] = {}
            for partition, (_, taken) in progress.items():
                high = highwaters.get(partition)
                unfetched[partition] = None if high is None else max(high - taken, 0)
            await self._report({p: s for p, (s, _) in progress.items()}, unfetched)
        except Exception as exc:  # a report is advisory: the next commit sends another
            self._failed(exc)
            log.warning("report of the waiting events failed: %s", exc)

    async def _commit_offsets(self, checkpoint: bool = True) -> None:
        """Store the positions reached, then tell Kafka (for lag and for tools)."""
        self._committed_at = self._clock()
        if checkpoint:
            async with self._lock:
                await self._processor.checkpoint()
        if self._report is not None:
            await self._tell_report()
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
            stored = await self._retrying("get_positions", self._store.get_positions)
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


# -- stopping the process ------------------------------------------------------------

SIGNAL_EXIT_BASE = 128
"""A second signal exits with status 128 + its number (143 for SIGTERM, 130 for SIGINT)."""
DEADLINE_EXIT_STATUS = 124
"""The graceful stop outlasted its deadline (the status ``timeout(1)`` uses)."""


class Shutdown:
    """How a ``recloop worker`` process stops: gracefully, unless told twice or too slow.

    - The first SIGTERM or SIGINT calls :meth:`begin`: the worker stops taking
      messages, and the caller's graceful stop follows (apply and commit what was
      taken, commit the offsets, leave the group).
    - A second signal exits at once, with status 128 + its number.
    - ``deadline_seconds`` after :meth:`begin`, if the process still runs, it exits
      with status :data:`DEADLINE_EXIT_STATUS`.

    A forced exit logs what it abandons (:meth:`Worker.unfinished`) and leaves
    through ``os._exit``: no more of the stop runs, which is what makes it prompt
    whatever the stop is waiting for (a storage call retried until it succeeds, a
    broker that does not answer). Nothing accepted is lost by it: the events are in
    Kafka, and the stored positions only move with committed state, so whatever
    was taken and not committed is fetched again by the partitions' next owner
    (once the group notices this member is gone: ``session_timeout_ms``).

    The signal handlers are Python's (``signal.signal``), not the loop's: a second
    signal is acted on even while the loop is busy. The deadline is a timer thread.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(
        self,
        worker: Worker,
        deadline_seconds: float,
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        self._worker = worker
        self._deadline = deadline_seconds
        self._exit = exit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0
        self._begun_at: float | None = None
        self._timer: threading.Timer | None = None
        self._previous: dict[int, Any] = {}
        self._forcing = threading.Lock()

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on (main thread; before ``asyncio.run``, so
        that it leaves SIGINT to these handlers)."""
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the worker runs in: a first signal begins the stop there."""
        self._loop = loop

    def uninstall(self) -> None:
        """Put the previous handlers back and cancel the deadline (the stop has finished)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        if self._timer is not None:
            self._timer.cancel()

    def begin(self, reason: str) -> None:
        """Begin the graceful stop, once: the worker stops taking, the deadline runs."""
        if self._begun_at is not None:
            return
        self._begun_at = time.monotonic()
        log.info(
            "stopping gracefully (%s): applying and committing what was taken, within %gs "
            "(event_log.worker_shutdown_seconds); a second SIGTERM or SIGINT exits at once",
            reason,
            self._deadline,
        )
        timer = threading.Timer(self._deadline, self._on_deadline)
        timer.daemon = True
        timer.name = "shutdown-deadline"
        self._timer = timer
        timer.start()
        self._worker.stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes of whatever the loop was doing.
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1 and self._begun_at is None:
            try:
                if self._loop is None:
                    raise RuntimeError("no loop yet")
                # Through the loop's self-pipe: it wakes up even if it was waiting for I/O.
                self._loop.call_soon_threadsafe(self.begin, name)
            except RuntimeError:  # no loop (yet, or any more): nothing waits on the worker
                self.begin(name)
            return
        self._force(f"{name} during the graceful stop", SIGNAL_EXIT_BASE + signum)

    def _on_deadline(self) -> None:
        self._force(
            f"the graceful stop took longer than {self._deadline:g}s "
            "(event_log.worker_shutdown_seconds)",
            DEADLINE_EXIT_STATUS,
        )

    def _force(self, why: str, status: int) -> None:
        if not self._forcing.acquire(blocking=False):
            return  # the other trigger is already exiting
        try:
            left = self._worker.unfinished()
        except Exception as exc:  # read from another thread: a summary is not worth a hang
            left = f"(not known: {type(exc).__name__}: {exc})"
        log.error(
            "exiting now, status %d: %s. Abandoned: %s. Nothing is lost: what was not "
            "committed stays in Kafka and is applied by the partitions' next owner",
            status,
            why,
            left,
        )
        for stream in [*logging.getLogger().handlers, sys.stdout, sys.stderr]:
            with contextlib.suppress(Exception):  # exiting anyway
                stream.flush()
        self._exit(status)
