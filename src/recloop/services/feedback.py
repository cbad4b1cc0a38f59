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
from typing import Any, Protocol

from recloop.adapters.memory.cache import LruCache
from recloop.core.bandit import PerformanceCounts, bucket_start, counts_of
from recloop.core.events import Event, SignalTable, is_explicit
from recloop.core.ids import uuid7
from recloop.core.offsets import OffsetTracker
from recloop.core.preferences import ImplicitAggregate, LearningRate, UserState
from recloop.core.privacy import Tombstone, user_digest
from recloop.core.segments import SegmentRules, segment_of
from recloop.ports import AlgorithmCount, Cache, EventLog, StateChanges, StateStore
from recloop.resilience import RetryCounts, retry_forever
from recloop.services.batching import GroupCommit
from recloop.services.vectors import ItemVectors

log = logging.getLogger(__name__)

_ZERO = PerformanceCounts()


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
    segment_rules: SegmentRules = field(default_factory=SegmentRules)
    algorithms: frozenset[str] = frozenset()
    """Algorithms whose attributed events are counted for the optimizer."""
    bucket_seconds: float = 3600.0


@dataclass(slots=True)
class _Entry:
    """The implicit events of one (user, item) waiting for the flush.

    ``performance`` counts, per (algorithm, time bucket), the attributed ones
    for the optimizer; the segment is decided when they are applied.
    """

    user_id: str
    item_id: str
    partition: int
    aggregate: ImplicitAggregate = field(default_factory=ImplicitAggregate)
    offsets: list[int] = field(default_factory=list)
    performance: dict[tuple[str, float], PerformanceCounts] = field(default_factory=dict)
    observed: list[tuple[str, float | None, float]] = field(default_factory=list)
    """(type, value, timestamp) of each event, kept only for users an observer watches."""


@dataclass(slots=True)
class _Pending:
    """Entries of one flush bound for one applier (offsets done once they are committed)."""

    entries: list[_Entry]


@dataclass(slots=True)
class _Shard:
    """One implicit aggregator's buffer, keyed by (user, item)."""

    buffer: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    count: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)


class Observer(Protocol):
    """Learns from each applied event; its changes commit with the user's state.

    The experiments service is one: it moves the metrics of exposed users.
    """

    def watches(self, user_id: str) -> bool: ...

    def observe(
        self, user_id: str, event_type: str, value: float | None, timestamp: float
    ) -> StateChanges: ...


class Gate(Protocol):
    """Whether, and how much, to learn from a user (the guard)."""

    def reliability(self, user_id: str) -> float | None:
        """The user's reliability 0..100 (it scales the learning rate), or None if the
        user is suspect or blocked: their events are then held, not learnt from."""
        ...


class Processor:
    """Applies logged events to user state; see the module docstring."""

    def __init__(
        self,
        store: StateStore,
        cache: Cache,
        vectors: ItemVectors,
        config: ProcessorConfig,
        clock: Callable[[], float] = time.time,
        on_counts: Callable[[list[AlgorithmCount]], None] | None = None,
        observer: Observer | None = None,
        gate: Gate | None = None,
        retries: RetryCounts | None = None,
    ) -> None:
        """``on_counts`` receives the optimizer counts of every committed round;
        ``retries`` counts the storage calls retried."""
        self._retries = retries
        self._on_counts = on_counts
        self._observer = observer
        self._gate = gate
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
        # Appliers committing at the same time share one transaction.
        self._state_writer: GroupCommit[StateChanges, None] = GroupCommit(
            "state-writer", self._save_changes
        )
        self.trackers: dict[int, OffsetTracker] = {0: OffsetTracker()}
        """Per log partition: the embedded log has only partition 0; a worker, the
        partitions of the event topic it owns."""
        self._partitioned = False
        self._saved_positions: dict[int, int] = {}
        # Erased users (core.privacy): their events accepted before the erasure are skipped.
        self._tombstones: dict[str, Tombstone] = {}
        self._blocking: dict[str, Tombstone | None] = {}  # user_id -> tombstone, memoised
        self._applying: set[asyncio.Event] = set()  # one per apply in progress
        self.dead_letters = 0
        self.last_error: str | None = None
        self.failing = 0
        """Storage calls failing right now (being retried); 0 when all is well."""

    # -- lifecycle -----------------------------------------------------------

    async def start(self, log_: EventLog, replay_chunk: int = 5_000) -> int:
        """Start the workers and replay what the log holds past the stored watermark.

        Returns the number of events replayed. New events must not be
        dispatched before this returns, so that each user's events stay in order.
        """
        watermark = await self._store.get_watermark()
        self.trackers = {0: OffsetTracker(watermark)}
        self._start_tasks()
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

    def start_partitioned(self) -> None:
        """Start the workers for a partitioned log (a worker's share of the event topic).

        No replay here: the log's consumer calls :meth:`assign` with the
        partitions it owns and fetches from their stored positions.
        """
        self._partitioned = True
        self.trackers = {}
        self._start_tasks()

    def assign(self, positions: dict[int, int]) -> None:
        """Own these partitions from now on; ``positions[p]`` is the last applied offset."""
        for partition, offset in positions.items():
            self.trackers[partition] = OffsetTracker(offset)

    async def release(self) -> dict[int, int]:
        """Apply and commit everything dispatched, then forget every partition and user.

        For a rebalance: what another worker may now change must not linger
        here. Returns the committed positions of the released partitions.
        """
        await self.flush_implicit()
        await self._state_writer.submit([StateChanges()])  # commits the final positions
        positions = self.positions()
        self.trackers = {}
        self._states.clear()
        return positions

    async def checkpoint(self) -> None:
        """Store the partitions' positions if they moved since the last state commit.

        Positions are written with the states of each commit, as they were before
        it (an offset counts once its state is committed): after the last commit
        of a burst they trail by that commit, until this is called.
        """
        if self._partitioned and self.positions() != self._saved_positions:
            await self._state_writer.submit([StateChanges()])

    def positions(self) -> dict[int, int]:
        """Each owned partition's watermark: every offset up to it is committed state."""
        return {p: t.watermark for p, t in self.trackers.items()}

    def _start_tasks(self) -> None:
        self._tasks = [
            asyncio.create_task(self._apply_loop(q), name=f"applier-{i}")
            for i, q in enumerate(self._queues)
        ] + [
            asyncio.create_task(self._flush_loop(s), name=f"aggregator-{i}")
            for i, s in enumerate(self._shards)
        ]
        self._state_writer.start()

    @property
    def tracker(self) -> OffsetTracker:
        """The embedded log's tracker (its only partition, 0)."""
        return self.trackers[0]

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
        await self._state_writer.stop()
        # Positions only: idempotent, so retried like the state commits (a worker's
        # shutdown deadline bounds the wait if storage stays down).
        if self._partitioned:
            last = StateChanges(positions=self.positions())
        else:
            last = StateChanges(watermark=self.tracker.watermark)
        await self._retrying("state_commit", self._store.commit, last)

    async def flush_implicit(self) -> None:
        """Flush every implicit buffer now and wait until it is applied."""
        for s in self._shards:
            await self._flush(s)
        for q in self._queues:
            await q.join()

    # -- dispatch ------------------------------------------------------------

    async def dispatch(self, events: Sequence[Event]) -> None:
        """Hand logged events (in offset order per partition) to their workers; waits when
        queues are full."""
        trackers = self.trackers
        for event in events:
            trackers[event.partition].begin(event.offset)
        await self._route(events)

    async def dispatch_unapplied(self, events: Sequence[Event]) -> int:
        """:meth:`dispatch` for a log that may deliver again what is applied (a worker
        after a crash or a rebalance): events at or below their user's applied offset of
        their stream are passed over in their turn. Returns how many were passed over.

        The implicit aggregates sum whatever they are given, so this check has to come
        before them, as it does in the embedded replay (:meth:`start`).
        """
        states = await self._retrying("load_states", self._load_states, {e.user_id for e in events})
        fresh = []
        for event in events:
            state = states[event.user_id]
            done = state.explicit_offset if is_explicit(event.type) else state.implicit_offset
            if event.offset > done:
                fresh.append(event)
        trackers = self.trackers
        for event in events:
            trackers[event.partition].begin(event.offset)
        if len(fresh) != len(events):
            kept = {id(e) for e in fresh}
            for event in events:
                if id(event) not in kept:
                    trackers[event.partition].done(event.offset)
        await self._route(fresh)
        return len(events) - len(fresh)

    def skip(self, partition: int, offset: int) -> None:
        """Pass over a message with nothing to apply (a duplicate, an undecodable one),
        in its turn, so the partition's watermark moves past it."""
        tracker = self.trackers[partition]
        tracker.begin(offset)
        tracker.done(offset)

    async def _route(self, events: Sequence[Event]) -> None:
        n_apply = len(self._queues)
        n_shard = len(self._shards)
        signals = self._config.signals
        algorithms = self._config.algorithms
        bucket_seconds = self._config.bucket_seconds
        observer = self._observer
        explicit: list[list[Event]] = [[] for _ in range(n_apply)]
        erased = bool(self._tombstones)
        for event in events:
            if erased and self.blocks(event):
                self.trackers[event.partition].done(event.offset)  # passed over, in its turn
                continue
            if is_explicit(event.type):
                explicit[shard(event.user_id, n_apply)].append(event)
                continue
            try:
                signal = signals.signal(event.type, event.value)
            except Exception as exc:  # a poison event: kept, with its reason
                await self._dead_letter(event, exc)
                self.trackers[event.partition].done(event.offset)
                continue
            s = self._shards[shard(event.user_id, n_shard)]
            key = (event.user_id, event.item_id)
            entry = s.buffer.get(key)
            if entry is None:
                entry = s.buffer[key] = _Entry(event.user_id, event.item_id, event.partition)
            entry.aggregate.add(signal, event.type == "impression", event.offset, event.timestamp)
            entry.offsets.append(event.offset)
            algorithm = event.attribution.get("algorithm")
            if algorithm in algorithms:
                counts = counts_of(event.type, event.value)
                if counts is not None:
                    slot = (algorithm, bucket_start(event.timestamp, bucket_seconds))
                    entry.performance[slot] = entry.performance.get(slot, _ZERO) + counts
            if observer is not None and observer.watches(event.user_id):
                entry.observed.append((event.type, event.value, event.timestamp))
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
        bundles = [_Pending([]) for _ in range(n_apply)]
        for entry in buffer.values():
            # Offsets travel with their user's entry, so each is marked done
            # only once that user's state is committed.
            bundles[shard(entry.user_id, n_apply)].entries.append(entry)
        for i, bundle in enumerate(bundles):
            if bundle.entries:
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
            applying = asyncio.Event()
            self._applying.add(applying)
            try:
                await self._apply(work)
            finally:
                applying.set()
                self._applying.discard(applying)
                for _ in work:
                    q.task_done()

    async def _apply(self, work: list[list[Event] | _Pending]) -> None:
        users: set[str] = set()
        item_ids: set[str] = set()
        erased = bool(self._tombstones)
        for w in work:
            for e in w if isinstance(w, list) else w.entries:
                if erased and self._blocks_work(e):
                    continue  # an erased user's state is not even loaded
                users.add(e.user_id)
                item_ids.add(e.item_id)
        states = await self._retrying("load_states", self._load_states, users)
        vectors = await self._retrying("load_items", self._vectors.get_many, item_ids)
        now = self._clock()
        c = self._config
        changed: dict[str, UserState] = {}
        performance: dict[tuple[str, str, float], PerformanceCounts] = {}
        observed = StateChanges()
        observer = self._observer
        gate = self._gate
        done: list[tuple[int, int]] = []
        for w in work:
            if isinstance(w, list):
                for e in w:
                    done.append((e.partition, e.offset))
                    if erased and self._blocks_work(e):
                        continue
                    try:
                        signal = c.signals.signal(e.type, e.value)
                    except Exception as exc:
                        await self._dead_letter(e, exc)
                        continue
                    state = states[e.user_id]
                    reliability = 100.0 if gate is None else gate.reliability(e.user_id)
                    if reliability is None:
                        if state.hold_explicit(e.offset, e.timestamp, now):
                            changed[e.user_id] = state
                        continue
                    segment = self._segment(state, e.timestamp)
                    if not state.apply_explicit(
                        e.offset,
                        signal,
                        vectors[e.item_id],
                        e.timestamp,
                        c.rate,
                        now,
                        reliability,
                    ):
                        continue  # replayed, already in the state
                    changed[e.user_id] = state
                    if observer is not None and observer.watches(e.user_id):
                        observed += observer.observe(e.user_id, e.type, e.value, e.timestamp)
                    algorithm = e.attribution.get("algorithm")
                    if algorithm in c.algorithms:
                        counts = counts_of(e.type, e.value)
                        if counts is not None:
                            key = (segment, algorithm, bucket_start(e.timestamp, c.bucket_seconds))
                            performance[key] = performance.get(key, _ZERO) + counts
            else:
                for entry in w.entries:
                    done.extend((entry.partition, o) for o in entry.offsets)
                    if erased and self._blocks_work(entry):
                        continue
                    state = states[entry.user_id]
                    agg = entry.aggregate
                    changed[entry.user_id] = state
                    reliability = 100.0 if gate is None else gate.reliability(entry.user_id)
                    if reliability is None:
                        state.hold_implicit(agg, now)
                        continue
                    segment = self._segment(state, agg.first_at)
                    state.apply_implicit(agg, vectors[entry.item_id], c.rate, now, reliability)
                    for (algorithm, bucket), counts in entry.performance.items():
                        key = (segment, algorithm, bucket)
                        performance[key] = performance.get(key, _ZERO) + counts
                    if observer is not None:
                        for event_type, value, timestamp in entry.observed:
                            observed += observer.observe(
                                entry.user_id, event_type, value, timestamp
                            )
        rows = [
            AlgorithmCount(seg, alg, b, counts) for (seg, alg, b), counts in performance.items()
        ]
        observed.users = list(changed.values())
        observed.algorithm_counts = rows
        await self._state_writer.submit([observed])
        trackers = self.trackers
        for partition, offset in done:
            trackers[partition].done(offset)
        for user_id, state in changed.items():
            self._cache.set(preferences_key(user_id), state.snapshot())
        if rows and self._on_counts is not None:
            self._on_counts(rows)

    def _segment(self, state: UserState, at: float) -> str:
        return segment_of(state.interactions, state.last_event_at, at, self._config.segment_rules)

    async def _save_changes(self, changes: list[StateChanges]) -> list[None]:
        merged = StateChanges()
        for c in changes:
            merged += c
        # The watermark only covers offsets whose state is already committed.
        if self._partitioned:
            merged.positions = self.positions()
            self._saved_positions = merged.positions
        else:
            merged.watermark = self.tracker.watermark
        # Each retry sends the same id: a retry of a commit that went through is a no-op.
        merged.commit_id = uuid7()
        await self._retrying("state_commit", self._store.commit, merged)
        return [None] * len(changes)

    async def _retrying(self, operation: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Storage errors are retried until the call succeeds, with jittered backoff capped
        at 2 s (``resilience.FOREVER``): nothing dispatched is dropped. Each retry is logged
        and counted under ``operation``; :attr:`failing` counts the calls still failing."""
        failing = False

        def failed(exc: BaseException) -> None:
            nonlocal failing
            self.last_error = f"{type(exc).__name__}: {exc}"
            if not failing:
                failing = True
                self.failing += 1

        try:
            return await retry_forever(operation, fn, *args, counts=self._retries, on_error=failed)
        finally:
            if failing:
                self.failing -= 1

    async def _dead_letter(self, event: Event, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        log.error(
            "event %s dead-lettered: %s",
            event.event_id,
            reason,
            extra={"request_id": event.request_id},
        )
        await self._retrying("dead_letter", self._store.add_dead_letter, event, reason)
        self.dead_letters += 1

    # -- erased users ------------------------------------------------------------

    def set_tombstones(self, tombstones: dict[str, Tombstone]) -> None:
        """Replace the tombstones (by :func:`~recloop.core.privacy.user_digest`): loaded
        before :meth:`start` replays the log, reloaded by workers as they refresh."""
        self._tombstones = dict(tombstones)
        self._blocking.clear()

    def blocks(self, event: Event) -> bool:
        """Whether ``event`` belongs to an erased user's history (accepted before the
        erasure): it is then neither applied nor kept."""
        if not self._tombstones:
            return False
        return self._blocked(event.user_id, event.offset, event.timestamp)

    def _blocks_work(self, work: Event | _Entry) -> bool:
        if isinstance(work, Event):
            return self.blocks(work)
        return self._blocked(work.user_id, work.offsets[0], work.aggregate.first_at)

    def _blocked(self, user_id: str, offset: int, timestamp: float) -> bool:
        memo = self._blocking
        if user_id in memo:
            tombstone = memo[user_id]
        else:
            tombstone = self._tombstones.get(user_digest(user_id))
            if len(memo) >= self._config.max_users:
                memo.clear()
            memo[user_id] = tombstone
        if tombstone is None:
            return False
        # A worker's offsets count per Kafka partition: only the time decides there.
        return tombstone.blocks(None if self._partitioned else offset, timestamp)

    async def forget(self, user_id: str, tombstone: Tombstone) -> None:
        """Erase ``user_id`` from this processor: from now on their events accepted before
        ``tombstone`` are skipped; buffered ones are dropped; applies in progress are waited
        for, so that when this returns nothing more of the user's erased history will be
        committed. The user's held state is forgotten."""
        tombstones = dict(self._tombstones)
        tombstones[user_digest(user_id)] = tombstone
        self.set_tombstones(tombstones)
        self.evict(user_id)
        for applying in list(self._applying):
            await applying.wait()
        self._states.delete(user_id)

    def evict(self, user_id: str) -> None:
        """Drop the user's held state and their buffered implicit events that the
        tombstones block (their offsets count as done)."""
        self._states.delete(user_id)
        for s in self._shards:
            for key in [k for k in s.buffer if k[0] == user_id]:
                entry = s.buffer[key]
                if not self._blocks_work(entry):
                    continue
                del s.buffer[key]
                s.count -= len(entry.offsets)
                tracker = self.trackers.get(entry.partition)
                if tracker is not None:
                    for offset in entry.offsets:
                        tracker.done(offset)

    def held_users(self) -> set[str]:
        """The users whose state or buffered events this processor holds."""
        held = set(self._states.keys())
        for s in self._shards:
            held.update(user_id for user_id, _ in s.buffer)
        return held

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
        return sum(1 for t in self._tasks if not t.done()) + self._state_writer.alive

    @property
    def workers_expected(self) -> int:
        return len(self._queues) + len(self._shards) + 1


def _size(work: list[Event] | _Pending) -> int:
    return len(work) if isinstance(work, list) else sum(len(e.offsets) for e in work.entries)


def event_log_writer(
    log_: EventLog, processor: Processor, max_events: int
) -> GroupCommit[Event, int | None]:
    """The group commit that makes events durable, then hands them on in log order.

    Its results are each event's offset, or None for an already logged ``event_id``.

    An append that fails is not retried (its callers answer 503 and clients send
    again), but it may have committed all the same: the connection can drop between
    ``COMMIT`` and its answer. Such events are in the log without having been handed
    on, and a client sending them again would be told they are duplicates. So after a
    failed append, the next round first reads the log past the last offset handed on
    (this writer is the log's only writer: anything there is from the failed append)
    and hands on what it finds.
    """
    unsure = False  # an append failed: the log may hold events not handed on

    async def append(events: list[Event]) -> Sequence[int | None]:
        nonlocal unsure
        if unsure:
            await reconcile()
        try:
            return await log_.append(events)
        except Exception:
            unsure = True
            raise

    async def reconcile() -> None:
        nonlocal unsure
        found = 0
        while batch := await log_.read(processor.tracker.last_begun, max_events):
            found += len(batch)
            await processor.dispatch(batch)
        if found:
            log.warning("%d events of a failed append were logged after all: applying them", found)
        unsure = False

    async def dispatch(events: list[Event], offsets: Sequence[int | None]) -> None:
        logged = []
        for event, offset in zip(events, offsets, strict=True):
            if offset is not None:
                event.offset = offset
                logged.append(event)
        await processor.dispatch(logged)

    return GroupCommit("event-log-writer", append, max_events, after=dispatch)
