"""Feedback processing: durable acceptance, then learning from every event.

::

    ingest() ──▶ GroupCommit ── one log transaction per round ──▶ 202
                       │ (after commit, in offset order)
                       ▼
               Processor.dispatch ──▶ Inbox (services.inbox): waiting events, each
                       │              partition's progress, back-pressure
                       ▼
               ApplyTask (services.rounds): one round at a time: guard evidence ─
                       │  load missing users and items ─ skip erased ─ pass over replays
                       │  explicit: applied at once, vectorised over the round
                       │  implicit: buffered as columns; summed per (user, item) and
                       │            applied on the flush timer, when full, at stop
                       ▼     (services.apply: the vectorised rules)
               UserTable (core.state): users' state in arrays ── reads see it at once
                       │
                       ▼  Checkpointer (services.checkpoint), group-commit style (one in
                          flight; under load each covers every round applied meanwhile)
               dirty rows + optimizer counts + experiment changes + the log position
               they cover, in one transaction ── then the read cache, the optimizer

Every storage call of these parts goes through :class:`~recloop.services.storecalls.StoreCalls`
(retried while the store is unavailable; an event whose data fails every time is
dead-lettered, so no poison event blocks the stream), and every event is checked
against the erased users' tombstones (:class:`~recloop.core.privacy.Erasures`).

Recovery (:meth:`Processor.start`): the journal's rows are loaded first (they are newer
than the user table's); the stored watermark (or, for a worker, each partition's
position) says where the log is replayed from; each user's row carries the last offset
applied from each stream, committed with it, so what a checkpoint already covers is
passed over. Every event is applied exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import numpy as np

from recloop.core.events import EXPLICIT_TYPES, Event
from recloop.core.journal import JournalPlan
from recloop.core.offsets import Progress
from recloop.core.preferences import Preferences
from recloop.core.privacy import Erasures, Tombstone
from recloop.core.state import UserTable
from recloop.ports import AlgorithmCount, Cache, EventLog, StateStore
from recloop.resilience import RetryCounts
from recloop.services.apply import Applier, Gate, Observer, ProcessorConfig
from recloop.services.batching import GroupCommit
from recloop.services.checkpoint import Checkpointer, preferences_key
from recloop.services.inbox import Inbox
from recloop.services.rounds import ApplyTask
from recloop.services.storecalls import StoreCalls
from recloop.services.tasks import stop_tasks
from recloop.services.vectors import ItemVectors

log = logging.getLogger(__name__)

__all__ = [
    "Gate",
    "Observer",
    "Processor",
    "ProcessorConfig",
    "event_log_writer",
    "preferences_key",
]


class Processor:
    """Applies logged events to user state: the parts in the module docstring, started,
    fed and stopped together."""

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
        evidence: Callable[[Sequence[Event]], Awaitable[None]] | None = None,
        paused: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``on_counts`` receives the optimizer counts of every committed checkpoint;
        ``retries`` counts the storage calls retried; ``evidence`` (the guard, in the
        embedded deployment) takes every event handed on, before it is applied;
        ``paused`` runs whenever the apply rounds pause (``ApplyTask``)."""
        self._store = store
        self._config = config
        self.table = UserTable(config.dim, config.max_users)
        self._applier = Applier(self.table, config, observer, gate)
        self.calls = StoreCalls(store, config.poison_attempts, retries)
        self.erasures = Erasures(config.max_users)
        self.inbox = Inbox(config.max_pending)
        fb = config.feedback
        self.checkpointer = Checkpointer(
            self.table,
            self._applier,
            self.inbox,
            store,
            cache,
            self.calls,
            JournalPlan(fb.journal_rows, fb.journal_seconds, config.max_users // 2),
            config.dim,
            on_counts,
        )
        self.applying = ApplyTask(
            self.table,
            self._applier,
            self.inbox,
            store,
            cache,
            vectors,
            self.calls,
            self.erasures,
            config,
            self.checkpointer.dirty,
            clock,
            evidence,
            paused,
        )
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------

    async def start(self, log_: EventLog, replay_chunk: int = 5_000) -> int:
        """Start the tasks and hand on what the log holds past the stored watermark.

        Returns the number of events handed on (those already in their user's
        state are passed over when applied: ``applying.passed_over``). New events must
        not be dispatched before this returns, so that each user's events stay in order.
        """
        await self.checkpointer.load_journal()
        # The one writer of users' state from now on: a user the store does not hold now
        # and this table never let go of is new, without asking the store.
        self.table.know_stored(await self.calls.retrying("load_user_ids", self._store.get_user_ids))
        watermark = await self._store.get_watermark()
        self.inbox.start(watermark)
        self._start_tasks()
        replayed = 0
        after = watermark
        while batch := await log_.read(after, replay_chunk):
            after = batch[-1].offset
            await self.dispatch(batch)
            replayed += len(batch)
        if replayed:
            log.info(
                "replayed %d logged events past the stored watermark (those already in their "
                "user's state are passed over)",
                replayed,
            )
        return replayed

    def start_partitioned(self) -> None:
        """Start the tasks for a partitioned log (a worker's share of the event topic).

        No replay here: the log's consumer calls :meth:`assign` with the
        partitions it owns and fetches from their stored positions.
        """
        self.checkpointer.partitioned = self.erasures.partitioned = True
        self.inbox.trackers = {}
        self._start_tasks()

    def assign(self, positions: dict[int, int]) -> None:
        """Own these partitions from now on; ``positions[p]`` is the last applied offset."""
        self.inbox.own(positions)

    async def release(self) -> dict[int, int]:
        """Apply and commit everything dispatched, then forget every partition and user.

        For a rebalance: what another worker may now change must not linger
        here. Returns the committed positions of the released partitions.
        """
        await self.flush_implicit()
        positions = self.positions()
        self.inbox.trackers = {}
        self.table.clear()
        return positions

    async def checkpoint(self, compact: bool = False) -> None:
        """Commit now whatever moved since the last checkpoint (the partitions' positions
        included) and wait until it is committed; ``compact``: with the whole state
        journal written to the user table."""
        await self.checkpointer.now(compact)

    def positions(self) -> dict[int, int]:
        """Each owned partition's watermark: every offset up to it is committed state."""
        return self.inbox.positions()

    @property
    def trackers(self) -> dict[int, Progress]:
        """Each owned partition's progress."""
        return self.inbox.trackers

    @property
    def tracker(self) -> Progress:
        """The embedded log's progress (its only partition, 0)."""
        return self.inbox.trackers[0]

    def _start_tasks(self) -> None:
        self._tasks = [
            asyncio.create_task(self.applying.run(), name="applier"),
            asyncio.create_task(
                self.checkpointer.run(self._config.checkpoint_seconds), name="checkpointer"
            ),
        ]

    async def stop(self) -> None:
        """Apply everything dispatched (flushing the implicit buffer), commit, stop."""
        await self.flush_implicit()
        await self.checkpointer.settled()  # never cancel a commit half way
        await stop_tasks(*self._tasks)
        self._tasks = []
        # Whatever is left (a checkpoint cut short by the cancel): retried like the others;
        # and the journal compacted, so that the user table alone holds the state.
        await self.checkpointer.once(compact=True)

    async def flush_implicit(self) -> None:
        """Apply everything dispatched, the implicit buffer included, and commit it."""
        await self.applying.flush()
        await self.checkpointer.now()

    # -- dispatch ------------------------------------------------------------

    async def dispatch(self, events: Sequence[Event]) -> None:
        """Hand logged events (in offset order per partition) on; waits while the
        processor holds :attr:`ProcessorConfig.max_pending` events not yet applied.

        Events already in their user's state (a replay, a redelivery) are passed over
        when their turn comes.
        """
        if events:
            await self.inbox.put(events, self._applier.buffered)

    async def dispatch_unapplied(self, events: Sequence[Event]) -> int:
        """:meth:`dispatch` for a log that may deliver again what is applied (a worker
        after a crash or a rebalance). Returns how many of ``events`` are already in their
        user's state (they are passed over in their turn)."""
        table = self.table
        slots = await self.applying.resolve([e.user_id for e in events])
        n = len(events)
        explicit = np.fromiter((e.type in EXPLICIT_TYPES for e in events), bool, n)
        offsets = np.fromiter((e.offset for e in events), np.int64, n)
        stored = np.where(explicit, table.explicit_offset[slots], table.implicit_offset[slots])
        done = int(np.count_nonzero(offsets <= stored))
        await self.dispatch(events)
        return done

    def skip(self, partition: int, offset: int) -> None:
        """Pass over a message with nothing to apply (a duplicate, an undecodable one),
        in its turn, so the partition's watermark moves past it."""
        self.inbox.skip(partition, offset)
        self.checkpointer.dirty.set()

    # -- reads -------------------------------------------------------------------

    def holds(self, user_id: str) -> bool:
        """Whether events of ``user_id`` are held here: applied, buffered or waiting (so
        the log may hold events of theirs that the store's state does not show yet)."""
        return user_id in self.table or user_id in self.inbox.users

    def preferences(self, user_id: str) -> Preferences | None:
        """The user's state as applied so far (it may not be committed yet: the events
        are in the log, so a restart applies them again), or None if not held here."""
        return self.table.preferences(user_id)

    def never_stored(self, user_id: str) -> bool:
        """Whether the store certainly holds nothing of ``user_id``: not held here, and
        not stored when this processor started nor let go of since (False until
        :meth:`start`, and always for a worker: others write too)."""
        return user_id not in self.table and not self.table.may_store(user_id)

    # -- erased users ------------------------------------------------------------

    def set_tombstones(self, tombstones: dict[str, Tombstone]) -> None:
        """Replace the tombstones (by :func:`~recloop.core.privacy.user_digest`): loaded
        before :meth:`start` replays the log, reloaded by workers as they refresh."""
        self.erasures.replace(tombstones)

    async def forget(self, user_id: str, tombstone: Tombstone) -> None:
        """Erase ``user_id`` from this processor: from now on their events accepted before
        ``tombstone`` are skipped; buffered ones are dropped; a checkpoint in flight is
        waited for, so that when this returns nothing more of the user's erased history
        will be committed. The user's held state is forgotten."""
        self.erasures.add(user_id, tombstone)
        await self.checkpointer.settled()
        self.evict(user_id)

    def evict(self, user_id: str) -> None:
        """Drop the user's held state and their buffered implicit events that the
        tombstones block (those left apply to a new state when flushed)."""
        self.table.drop(user_id)
        for partition, n in self._applier.drop(user_id, self.erasures.blocked).items():
            self.inbox.done(partition, n)
        self.checkpointer.dirty.set()

    def held_users(self) -> set[str]:
        """The users whose state or buffered events this processor holds."""
        return set(self.table.index) | self._applier.buffered_users()

    # -- introspection -----------------------------------------------------------

    @property
    def explicit_queue_depth(self) -> int:
        """Events handed on and not applied yet (explicit or not)."""
        return len(self.inbox.events)

    @property
    def implicit_buffered(self) -> int:
        return self._applier.buffered

    @property
    def workers_alive(self) -> int:
        return sum(1 for t in self._tasks if not t.done())

    @property
    def workers_expected(self) -> int:
        return 2


def event_log_writer(
    log_: EventLog, processor: Processor, max_events: int, keep_text: bool = True
) -> GroupCommit[Event, int | None]:
    """The group commit that makes events durable, then hands them on in log order.

    Its results are each event's offset, or None for an already logged ``event_id``.
    ``keep_text`` False logs events without their review text; the processor (and the
    guard's evidence) still gets it.

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
        logged = events
        if not keep_text:
            logged = [e if e.text is None else _without_text(e) for e in events]
        try:
            return await log_.append(logged)
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


def _without_text(event: Event) -> Event:
    return msgspec.structs.replace(event, text=None)
