"""Feedback processing: durable acceptance, then learning from every event.

::

    ingest() ──▶ GroupCommitter ── one log transaction per round ──▶ 202
                       │ (after commit, in offset order)
                       ▼
                  Processor.dispatch
           explicit ─▶ applier queue[hash(user) % explicit_workers]
           implicit ─▶ aggregator[hash(user) % implicit_workers]
                          sums per (user, item); flushes on timer, size, shutdown
                          └──▶ applier queues
           applier: load states ─ apply (core.preferences) ─ state writer: the
                    states of every waiting applier + the watermark in one
                    transaction ─ mark offsets done ─ refresh read cache

Every state change of one user happens in the one applier that owns the user,
so a user's events apply in order and no two tasks race on a state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recloop.adapters.memory.cache import LruCache
from recloop.core.events import Event, SignalTable, is_explicit
from recloop.core.offsets import OffsetTracker
from recloop.core.preferences import ImplicitAggregate, LearningRate, UserState
from recloop.ports import Cache, EventLog, StateStore
from recloop.services.vectors import ItemVectors

log = logging.getLogger(__name__)

_RETRY_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


def shard(user_id: str, n: int) -> int:
    """A stable shard of ``user_id`` among ``n`` (the same in every process)."""
    return zlib.crc32(user_id.encode()) % n


def preferences_key(user_id: str) -> str:
    return f"preferences:{user_id}"


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    dim: int
    rate: LearningRate
    signals: SignalTable
    explicit_workers: int = 10
    implicit_workers: int = 5
    implicit_flush_seconds: float = 300.0
    implicit_max_buffer: int = 100_000
    explicit_queue_size: int = 1_000
    apply_batch_max: int = 1_000
    max_users: int = 200_000


@dataclass(slots=True)
class _Pending:
    """Aggregates of one flush bound for one applier, with the offsets they cover."""

    aggregates: list[tuple[str, str, ImplicitAggregate]]
    offsets: list[int]


@dataclass(slots=True)
class _Shard:
    """One implicit aggregator's buffer: per (user, item) the sum and the offsets in it."""

    buffer: dict[tuple[str, str], tuple[ImplicitAggregate, list[int]]] = field(default_factory=dict)
    count: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)


class Processor:
    """Applies logged events to user state; see the module docstring."""

    def __init__(
        self,
        store: StateStore,
        cache: Cache,
        vectors: ItemVectors,
        config: ProcessorConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._cache = cache
        self._vectors = vectors
        self._config = config
        self._clock = clock
        self._states: LruCache[str, UserState] = LruCache(config.max_users)
        self._queues: list[asyncio.Queue[list[Event] | _Pending]] = [
            asyncio.Queue(config.explicit_queue_size) for _ in range(config.explicit_workers)
        ]
        self._shards = [_Shard() for _ in range(config.implicit_workers)]
        self._shard_limit = max(1, config.implicit_max_buffer // config.implicit_workers)
        self._tasks: list[asyncio.Task[None]] = []
        self._to_commit: list[tuple[list[UserState], asyncio.Future[None]]] = []
        self._commit_wake = asyncio.Event()
        self.commits = 0
        self.tracker = OffsetTracker()
        self.applied_total = 0
        self.dead_letters = 0
        self.last_error: str | None = None

    # -- lifecycle -----------------------------------------------------------

    async def start(self, log_: EventLog, replay_chunk: int = 5_000) -> int:
        """Start the workers and replay what the log holds past the stored watermark.

        Returns the number of events replayed. New events must not be
        dispatched before this returns, so that each user's events stay in order.
        """
        watermark = await self._store.get_watermark()
        self.tracker = OffsetTracker(watermark)
        self._tasks = [
            asyncio.create_task(self._apply_loop(q), name=f"applier-{i}")
            for i, q in enumerate(self._queues)
        ] + [
            asyncio.create_task(self._flush_loop(s), name=f"aggregator-{i}")
            for i, s in enumerate(self._shards)
        ]
        self._tasks.append(asyncio.create_task(self._state_writer(), name="state-writer"))
        replayed = 0
        after = watermark
        while batch := await log_.read(after, replay_chunk):
            after = batch[-1].offset
            states = await self._load_states({e.user_id for e in batch})
            fresh = []
            for event in batch:
                state = states[event.user_id]
                done = state.explicit_offset if is_explicit(event.type) else state.implicit_offset
                if event.offset > done:
                    fresh.append(event)
            # Offsets already in the state still pass through the tracker, so
            # the watermark moves past them.
            for event in batch:
                self.tracker.begin(event.offset)
            skipped = {e.offset for e in batch} - {e.offset for e in fresh}
            for offset in skipped:
                self.tracker.done(offset)
            await self._route(fresh)
            replayed += len(fresh)
        if replayed:
            log.info("replayed %d logged events not yet applied", replayed)
        return replayed

    async def stop(self) -> None:
        """Apply everything dispatched (flushing implicit buffers), then stop the workers."""
        for s in self._shards:
            await self._flush(s)
        for q in self._queues:
            await q.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._store.save_users([], self.tracker.watermark)

    async def flush_implicit(self) -> None:
        """Flush every implicit buffer now and wait until it is applied."""
        for s in self._shards:
            await self._flush(s)
        for q in self._queues:
            await q.join()

    # -- dispatch ------------------------------------------------------------

    async def dispatch(self, events: Sequence[Event]) -> None:
        """Hand logged events (in offset order) to their workers; waits when queues are full."""
        for event in events:
            self.tracker.begin(event.offset)
        await self._route(events)

    async def _route(self, events: Sequence[Event]) -> None:
        n_apply = len(self._queues)
        n_shard = len(self._shards)
        signals = self._config.signals
        explicit: list[list[Event]] = [[] for _ in range(n_apply)]
        for event in events:
            if is_explicit(event.type):
                explicit[shard(event.user_id, n_apply)].append(event)
                continue
            try:
                signal = signals.signal(event.type, event.value)
            except Exception as exc:  # a poison event: kept, with its reason
                await self._dead_letter(event, exc)
                self.tracker.done(event.offset)
                continue
            s = self._shards[shard(event.user_id, n_shard)]
            key = (event.user_id, event.item_id)
            bucket = s.buffer.get(key)
            if bucket is None:
                bucket = s.buffer[key] = (ImplicitAggregate(), [])
            bucket[0].add(signal, event.type == "impression", event.offset, event.timestamp)
            bucket[1].append(event.offset)
            s.count += 1
            if s.count >= self._shard_limit:
                s.full.set()
                await asyncio.sleep(0)  # let the aggregator flush before buffering more
        for q, batch in zip(self._queues, explicit, strict=True):
            if batch:
                await q.put(batch)

    # -- implicit aggregation --------------------------------------------------

    async def _flush_loop(self, s: _Shard) -> None:
        period = self._config.implicit_flush_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(s.full.wait(), timeout=period)
            s.full.clear()
            await self._flush(s)

    async def _flush(self, s: _Shard) -> None:
        if not s.count:
            return
        buffer = s.buffer
        s.buffer, s.count = {}, 0
        n_apply = len(self._queues)
        bundles = [_Pending([], []) for _ in range(n_apply)]
        for (user_id, item_id), (agg, offsets) in buffer.items():
            # Offsets travel with their user's aggregate, so each is marked done
            # only once that user's state is committed.
            bundle = bundles[shard(user_id, n_apply)]
            bundle.aggregates.append((user_id, item_id, agg))
            bundle.offsets.extend(offsets)
        for i, bundle in enumerate(bundles):
            if bundle.aggregates:
                await self._queues[i].put(bundle)

    # -- applying ------------------------------------------------------------

    async def _apply_loop(self, q: asyncio.Queue[list[Event] | _Pending]) -> None:
        limit = self._config.apply_batch_max
        while True:
            work = [await q.get()]
            size = _size(work[0])
            while size < limit and not q.empty():
                nxt = q.get_nowait()
                work.append(nxt)
                size += _size(nxt)
            try:
                await self._apply(work)
            finally:
                for _ in work:
                    q.task_done()

    async def _apply(self, work: list[list[Event] | _Pending]) -> None:
        users: set[str] = set()
        item_ids: set[str] = set()
        for w in work:
            if isinstance(w, list):
                for e in w:
                    users.add(e.user_id)
                    item_ids.add(e.item_id)
            else:
                for user_id, item_id, _agg in w.aggregates:
                    users.add(user_id)
                    item_ids.add(item_id)
        states = await self._retrying(self._load_states, users)
        vectors = await self._retrying(self._vectors.get_many, item_ids)
        now = self._clock()
        rate = self._config.rate
        signals = self._config.signals
        changed: dict[str, UserState] = {}
        done: list[int] = []
        for w in work:
            if isinstance(w, list):
                for e in w:
                    done.append(e.offset)
                    try:
                        signal = signals.signal(e.type, e.value)
                    except Exception as exc:
                        await self._dead_letter(e, exc)
                        continue
                    state = states[e.user_id]
                    if state.apply_explicit(
                        e.offset, signal, vectors[e.item_id], e.timestamp, rate, now
                    ):
                        self.applied_total += 1
                    changed[e.user_id] = state
            else:
                for user_id, item_id, agg in w.aggregates:
                    state = states[user_id]
                    state.apply_implicit(agg, vectors[item_id], rate, now)
                    changed[user_id] = state
                    self.applied_total += agg.interactions + agg.impressions
                done.extend(w.offsets)
        await self._commit_states(list(changed.values()))
        for offset in done:
            self.tracker.done(offset)
        for user_id, state in changed.items():
            self._cache.set(preferences_key(user_id), state.snapshot())

    async def _commit_states(self, states: list[UserState]) -> None:
        """Store ``states`` durably; appliers waiting at once share one transaction."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_commit.append((states, future))
        self._commit_wake.set()
        await future

    async def _state_writer(self) -> None:
        while True:
            await self._commit_wake.wait()
            self._commit_wake.clear()
            round_, self._to_commit = self._to_commit, []
            if not round_:
                continue
            states = [state for batch, _ in round_ for state in batch]
            # The watermark only covers offsets whose state is already committed.
            await self._retrying(self._store.save_users, states, self.tracker.watermark)
            self.commits += 1
            for _, future in round_:
                if not future.done():
                    future.set_result(None)

    async def _retrying(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Storage errors are retried with backoff: nothing dispatched is dropped."""
        for attempt in range(10_000):
            try:
                return await fn(*args)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = _RETRY_SECONDS[min(attempt, len(_RETRY_SECONDS) - 1)]
                log.warning("storage error, retrying in %.2fs: %s", delay, self.last_error)
                await asyncio.sleep(delay)
        raise RuntimeError("unreachable")

    async def _dead_letter(self, event: Event, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        log.error("event %s dead-lettered: %s", event.event_id, reason)
        await self._retrying(self._store.add_dead_letter, event, reason)
        self.dead_letters += 1

    # -- state and item caches -------------------------------------------------

    async def _load_states(self, user_ids: set[str]) -> dict[str, UserState]:
        found: dict[str, UserState] = {}
        missing = []
        for user_id in user_ids:
            state = self._states.get(user_id)
            if state is None:
                missing.append(user_id)
            else:
                found[user_id] = state
        if missing:
            stored = await self._store.get_users(missing)
            for user_id in missing:
                state = stored.get(user_id) or UserState.new(user_id, self._config.dim)
                self._states.set(user_id, state)
                found[user_id] = state
        return found

    # -- introspection -----------------------------------------------------------

    @property
    def explicit_queue_depth(self) -> int:
        return sum(q.qsize() for q in self._queues)

    @property
    def implicit_buffered(self) -> int:
        return sum(s.count for s in self._shards)

    @property
    def workers_alive(self) -> int:
        return sum(1 for t in self._tasks if not t.done())

    @property
    def workers_expected(self) -> int:
        return len(self._queues) + len(self._shards) + 1


def _size(work: list[Event] | _Pending) -> int:
    return len(work) if isinstance(work, list) else len(work.offsets)


class GroupCommitter:
    """Writes accepted events to the log, many requests per transaction.

    A request's events are durable when :meth:`submit` returns; they are then
    handed to the processor in log order.
    """

    def __init__(self, log_: EventLog, processor: Processor, max_events: int = 20_000) -> None:
        self._log = log_
        self._processor = processor
        self._max_events = max_events
        self._pending: list[tuple[list[Event], asyncio.Future[list[int | None]]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.rounds = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-committer")

    async def stop(self) -> None:
        """Commit what is pending, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def submit(self, events: list[Event]) -> list[int | None]:
        """Log ``events`` durably; each one's offset, or None for an already logged event_id."""
        if self._closing:
            raise RuntimeError("the service is shutting down")
        future: asyncio.Future[list[int | None]] = asyncio.get_running_loop().create_future()
        self._pending.append((events, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            taken, count = 0, 0
            while taken < len(self._pending) and count < self._max_events:
                count += len(self._pending[taken][0])
                taken += 1
            round_, self._pending = self._pending[:taken], self._pending[taken:]
            flat = [e for events, _ in round_ for e in events]
            try:
                offsets = await self._log.append(flat)
            except Exception as exc:
                for _, future in round_:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.rounds += 1
            logged: list[Event] = []
            start = 0
            for events, future in round_:
                part = offsets[start : start + len(events)]
                start += len(events)
                if not future.done():
                    future.set_result(part)
            for event, offset in zip(flat, offsets, strict=True):
                if offset is not None:
                    event.offset = offset
                    logged.append(event)
            await self._processor.dispatch(logged)
