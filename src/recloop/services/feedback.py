"""Feedback processing: durable acceptance, then learning from every event.

::

    ingest() ──▶ GroupCommit ── one log transaction per round ──▶ 202
                       │ (after commit, in offset order)
                       ▼
               Processor.dispatch ──▶ inbox
                       │  one apply task, a round at a time (services.apply):
                       │  guard evidence ─ load missing users and items ─ skip erased
                       │  explicit: applied at once, vectorised over the round
                       │  implicit: buffered as columns; summed per (user, item) and
                       │            applied on the flush timer, when full, at stop
                       ▼
               UserTable (core.state): users' state in arrays ── reads see it at once
                       │
                       ▼  checkpoint task, group-commit style (one in flight; under
                          load each covers every round applied meanwhile)
               dirty rows + optimizer counts + experiment changes + the log position
               they cover, in one transaction ── then the read cache, the optimizer

The embedded processor journals the dirty rows: a checkpoint appends them as one
record of the state journal and compacts its oldest records, writing in place only
the rows of users whose latest record those are (core.journal); a user changed in
many checkpoints meanwhile is written in place once. A worker writes its rows in
place at every checkpoint (the shared cache and the next owner of a partition read
them there).

Recovery: the journal's rows are loaded first (they are newer than the user table's);
the stored watermark (or, for a worker, each partition's position) says
where the log is replayed from; each user's row carries the last offset applied
from each stream, committed with it, so what a checkpoint already covers is
passed over. Every event is applied exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import numpy as np

from recloop.core.events import EXPLICIT_TYPES, Event
from recloop.core.ids import uuid7
from recloop.core.journal import JournalPlan
from recloop.core.offsets import Progress
from recloop.core.preferences import Preferences
from recloop.core.privacy import Tombstone, user_digest
from recloop.core.state import UserRows, UserTable
from recloop.ports import AlgorithmCount, Cache, EventLog, StateStore
from recloop.resilience import (
    Deterministic,
    RetryCounts,
    retry_forever,
    retry_unless_deterministic,
)
from recloop.services.apply import Applier, Gate, Observer, ProcessorConfig
from recloop.services.batching import GroupCommit
from recloop.services.refusals import Quarantine, commit_checkpoint
from recloop.services.tasks import stop_tasks
from recloop.services.vectors import ItemVectors

log = logging.getLogger(__name__)

__all__ = ["Gate", "Observer", "Processor", "ProcessorConfig", "event_log_writer"]


def preferences_key(user_id: str) -> str:
    return f"preferences:{user_id}"


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
        evidence: Callable[[Sequence[Event]], Awaitable[None]] | None = None,
    ) -> None:
        """``on_counts`` receives the optimizer counts of every committed checkpoint;
        ``retries`` counts the storage calls retried; ``evidence`` (the guard, in the
        embedded deployment) takes every event handed on, before it is applied."""
        self._retries = retries
        self._on_counts = on_counts
        self._evidence = evidence
        self._store = store
        self._cache = cache
        self._vectors = vectors
        self._config = config
        self._clock = clock
        self.table = UserTable(config.dim, config.max_users)
        fb = config.feedback
        self._journal = JournalPlan(fb.journal_rows, fb.journal_seconds, config.max_users // 2)
        self._applier = Applier(self.table, config, observer, gate)
        self._inbox: list[Event] = []
        self._inbox_users: set[str] = set()
        self._inbox_first: dict[int, int] = {}  # per partition, the lowest offset waiting
        self._applying_first: dict[int, int] = {}  # ... and in the round being applied
        self._work = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()  # nothing waiting nor being applied
        self._idle.set()
        self._flush_now = False
        self._flush_at = 0.0
        self._dirty = asyncio.Event()  # something for the next checkpoint
        self._saved = asyncio.Event()  # no checkpoint in flight
        self._saved.set()
        self._tasks: list[asyncio.Task[None]] = []
        self.trackers: dict[int, Progress] = {0: Progress()}
        self._applied: dict[int, int] = {}  # per partition: events done in the table
        """Per log partition: the embedded log has only partition 0; a worker, the
        partitions of the event topic it owns."""
        self._partitioned = False
        # Erased users (core.privacy): their events accepted before the erasure are skipped.
        self._tombstones: dict[str, Tombstone] = {}
        self._erasures = 0  # bumped with every change of the tombstones
        self._blocking: dict[str, Tombstone | None] = {}  # user_id -> tombstone, memoised
        self.dead_letters = 0
        self.dead_letters_unstored = 0
        """Poison events the store refused to keep even as dead letters (logged)."""
        self.crashes = 0
        """Apply rounds that failed in an unforeseen way (logged; their events
        dead-lettered): a bug, which never stops the stream."""
        self.passed_over = 0
        """Events handed on that were already in their user's state (replays)."""
        self.last_error: str | None = None
        self.failing = 0
        """Storage calls failing right now (being retried); 0 when all is well."""
        self.rounds = 0
        self.checkpoints = 0
        self.rows_journaled = 0
        """Rows appended to the state journal (one per user per checkpoint)."""
        self.rows_compacted = 0
        """Rows written into the store's user table by journal compactions."""
        self.quarantine = Quarantine()
        """Checkpoint rows the store refused for good (services.refusals)."""

    # -- lifecycle -----------------------------------------------------------

    async def start(self, log_: EventLog, replay_chunk: int = 5_000) -> int:
        """Start the tasks and hand on what the log holds past the stored watermark.

        Returns the number of events handed on (those already in their user's
        state are passed over when applied: :attr:`passed_over`). New events must not be
        dispatched before this returns, so that each user's events stay in order.
        """
        if self._journaling:
            await self._load_journal()
        watermark = await self._store.get_watermark()
        self.trackers = {0: Progress(watermark, watermark)}
        self._applied = {0: 0}
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
        self._partitioned = True
        self.trackers = {}
        self._start_tasks()

    def assign(self, positions: dict[int, int]) -> None:
        """Own these partitions from now on; ``positions[p]`` is the last applied offset."""
        for partition, offset in positions.items():
            self.trackers[partition] = Progress(offset, offset)
            self._applied[partition] = 0

    async def release(self) -> dict[int, int]:
        """Apply and commit everything dispatched, then forget every partition and user.

        For a rebalance: what another worker may now change must not linger
        here. Returns the committed positions of the released partitions.
        """
        await self.flush_implicit()
        positions = self.positions()
        self.trackers = {}
        self.table.clear()
        return positions

    async def checkpoint(self, compact: bool = False) -> None:
        """Commit now whatever moved since the last checkpoint (the partitions' positions
        included) and wait until it is committed; ``compact``: with the whole state
        journal written to the user table."""
        await self._checkpoint_now(compact)

    @property
    def _journaling(self) -> bool:
        return not self._partitioned and self._journal.max_rows > 0

    async def _load_journal(self) -> None:
        """Hold the users whose newest rows only the state journal has (at start)."""
        records = await self._retrying("load_journal", self._store.get_journal)
        latest: dict[str, int] = {}
        now = time.monotonic()
        for seq, rows in records:
            latest.update(dict.fromkeys(rows.user_ids, seq))
            self._journal.appended(seq, len(rows), now)
        if latest:
            rows = UserRows.latest([rows for _, rows in records], self._config.dim)
            seqs = np.fromiter((latest[u] for u in rows.user_ids), np.int64, len(rows))
            self.table.add(rows, seqs)
            log.info("loaded %d users' rows from %d state journal records", len(rows), len(records))

    def positions(self) -> dict[int, int]:
        """Each owned partition's watermark: every offset up to it is committed state."""
        return {p: t.watermark for p, t in self.trackers.items()}

    def _start_tasks(self) -> None:
        self._flush_at = time.monotonic() + self._config.implicit_flush_seconds
        self._tasks = [
            asyncio.create_task(self._apply_loop(), name="applier"),
            asyncio.create_task(self._checkpoint_loop(), name="checkpointer"),
        ]

    @property
    def tracker(self) -> Progress:
        """The embedded log's progress (its only partition, 0)."""
        return self.trackers[0]

    async def stop(self) -> None:
        """Apply everything dispatched (flushing the implicit buffer), commit, stop."""
        await self.flush_implicit()
        while not self._saved.is_set():  # never cancel a commit half way
            await self._saved.wait()
        await stop_tasks(*self._tasks)
        self._tasks = []
        # Whatever is left (a checkpoint cut short by the cancel): retried like the others;
        # and the journal compacted, so that the user table alone holds the state.
        await self._checkpoint_once(compact=True)

    async def flush_implicit(self) -> None:
        """Apply everything dispatched, the implicit buffer included, and commit it."""
        await self._drain()
        self._flush_now = True
        self._work.set()
        await self._drain()
        await self._checkpoint_now()

    async def _drain(self) -> None:
        while self._inbox or not self._idle.is_set() or self._flush_now:
            self._work.set()
            self._idle.clear()
            await self._idle.wait()

    # -- dispatch ------------------------------------------------------------

    async def dispatch(self, events: Sequence[Event]) -> None:
        """Hand logged events (in offset order per partition) on; waits while the
        processor holds :attr:`ProcessorConfig.max_pending` events not yet applied.

        Events already in their user's state (a replay, a redelivery) are passed over
        when their turn comes.
        """
        if not events:
            return
        while not self._room.is_set():
            await self._room.wait()
        trackers = self.trackers
        first = self._inbox_first
        for e in events:  # offsets increase per partition: only the first is checked
            t = trackers[e.partition]
            if e.partition not in first:
                first[e.partition] = e.offset
            if e.offset <= t.last_begun:
                raise ValueError(f"offset {e.offset} begun out of order (last {t.last_begun})")
            t.last_begun = e.offset
            t.handed += 1
        self._inbox.extend(events)
        self._inbox_users.update(e.user_id for e in events)
        self._idle.clear()
        self._work.set()
        if len(self._inbox) + self._applier.buffered >= self._config.max_pending:
            self._room.clear()

    async def dispatch_unapplied(self, events: Sequence[Event]) -> int:
        """:meth:`dispatch` for a log that may deliver again what is applied (a worker
        after a crash or a rebalance). Returns how many of ``events`` are already in their
        user's state (they are passed over in their turn)."""
        table = self.table
        slots = await self._resolve([e.user_id for e in events])
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
        t = self.trackers[partition]
        t.last_begun = max(t.last_begun, offset)
        t.handed += 1
        self._done(partition, 1)
        self._dirty.set()

    def _done(self, partition: int, n: int) -> None:
        """``n`` events of ``partition`` have their outcome in the table (or none to have)."""
        self._applied[partition] = self._applied.get(partition, 0) + n

    # -- the apply task --------------------------------------------------------

    async def _apply_loop(self) -> None:
        while True:
            if not self._inbox and not self._flush_now:
                self._idle.set()
                timeout = max(self._flush_at - time.monotonic(), 0.0)
                # asyncio.timeout, not wait_for: no task of its own per wait (a stream of
                # small rounds waits once per round)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._work.wait()
                self._work.clear()
            if self._inbox:
                limit = self._config.apply_batch_max
                events, self._inbox = self._inbox[:limit], self._inbox[limit:]
                self._inbox_users = {e.user_id for e in self._inbox} if self._inbox else set()
                self._applying_first = self._inbox_first
                self._inbox_first = _firsts(self._inbox) if self._inbox else {}
                try:
                    await self._apply_round(events)
                except Exception as exc:  # a bug: said, counted, and the stream moves on
                    self.crashes += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("an apply round failed; its events go to the dead letters")
                    for event in events:
                        await self._dead_letter(event, f"apply failed: {self.last_error}")
                        self._done(event.partition, 1)
                finally:
                    self._applying_first = {}
            buffered = self._applier.buffered
            if (
                self._flush_now
                or buffered >= self._config.implicit_max_buffer
                or (buffered and time.monotonic() >= self._flush_at)
            ):
                self._flush_at = time.monotonic() + self._config.implicit_flush_seconds
                await self._apply_flush()
                self._flush_now = False
            elif not buffered and time.monotonic() >= self._flush_at:
                self._flush_at = time.monotonic() + self._config.implicit_flush_seconds
            if len(self._inbox) + self._applier.buffered < self._config.max_pending:
                self._room.set()

    async def _apply_round(self, events: list[Event]) -> None:
        if self._evidence is not None:
            await self._evidence(events)
        try:
            is_explicit, explicit, items, has_item, slots = await self._load_round(events)
        except Deterministic:
            # Some event's user or item cannot be read (a value the store refuses):
            # find the events that fail, dead-letter them, apply the rest.
            events = await self._loadable(events)
            is_explicit, explicit, items, has_item, slots = await self._load_round(events)
        # Nothing below awaits (but dead letters): no other task sees a round half applied.
        self.rounds += 1
        table = self.table
        table.round = self.rounds
        now = self._clock()
        poison: list[Event] = []
        if explicit:
            x_slots = slots[is_explicit]
            if self._tombstones:
                keep = np.fromiter((not self.blocks(e) for e in explicit), bool, len(explicit))
                explicit = [e for e, k in zip(explicit, keep.tolist(), strict=True) if k]
                x_slots, items, has_item = x_slots[keep], items[keep], has_item[keep]
            offsets = np.fromiter((e.offset for e in explicit), np.int64, len(explicit))
            self.passed_over += int((offsets <= table.explicit_offset[x_slots]).sum())
            poison += self._applier.explicit(explicit, x_slots, items, has_item, now).poison
        implicit = [e for e, x in zip(events, is_explicit.tolist(), strict=True) if not x]
        if implicit:
            i_slots = slots[~is_explicit]
            offsets = np.fromiter((e.offset for e in implicit), np.int64, len(implicit))
            keep = offsets > table.implicit_offset[i_slots]
            self.passed_over += int(len(implicit) - keep.sum())
            if self._tombstones:
                keep &= np.fromiter((not self.blocks(e) for e in implicit), bool, len(implicit))
            if not keep.all():
                implicit = [e for e, k in zip(implicit, keep.tolist(), strict=True) if k]
                i_slots = i_slots[keep]
            outcome = self._applier.buffer(implicit, i_slots, self._erasures)
            poison += outcome.poison
        for event in poison:
            reason = (
                "no signal: a rating or dwell without a value, or a type without a weight "
                f"({event.type!r})"
            )
            await self._dead_letter(event, reason)
        # Done: every event of the round but those buffered (done when flushed).
        kept = Counter(e.partition for e in implicit)  # buffered, and poison (added back)
        for partition, n in Counter(e.partition for e in events).items():
            self._done(partition, n - kept.get(partition, 0))
        for e in poison:
            if e.type not in EXPLICIT_TYPES:
                self._done(e.partition, 1)
        self._dirty.set()

    async def _load_round(self, events: list[Event]) -> tuple[Any, list[Event], Any, Any, Any]:
        """What a round needs loaded: the users' slots and the explicit events' items."""
        is_explicit = np.fromiter((e.type in EXPLICIT_TYPES for e in events), bool, len(events))
        explicit = [e for e, x in zip(events, is_explicit.tolist(), strict=True) if x]
        items, has_item = await self._bounded(
            "load_items", self._vectors.rows, [e.item_id for e in explicit]
        )
        slots = await self._resolve([e.user_id for e in events])
        return is_explicit, explicit, items, has_item, slots

    async def _loadable(self, events: list[Event]) -> list[Event]:
        """``events`` but those whose user or item the store fails to read every time,
        which are dead-lettered (found by halving: a few reads per bad event)."""
        try:
            await self._bounded("load_states", self._store.get_users, [e.user_id for e in events])
            await self._bounded("load_items", self._vectors.items, [e.item_id for e in events])
            return events
        except Deterministic as exc:
            if len(events) == 1:
                await self._dead_letter(events[0], str(exc))
                self._done(events[0].partition, 1)
                return []
            half = len(events) // 2
            return await self._loadable(events[:half]) + await self._loadable(events[half:])

    async def _apply_flush(self) -> None:
        taken = self._applier.buffered_by_partition()
        flush = self._applier.aggregate(self._slots_or_new, self._blocked, self._erasures)
        if flush is not None:
            items, has_item = await self._retrying("load_items", self._vectors.rows, flush.item_ids)
            self.rounds += 1
            self.table.round = self.rounds
            self._applier.implicit(flush, items, has_item, self._clock())
        for partition, n in taken.items():
            self._done(partition, n)
        self._dirty.set()

    def _slots_or_new(self, user_ids: list[str]) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The users' slots, new rows for users not held (erased since they were buffered:
        they start again from nothing)."""
        slots, missing = self.table.slots(user_ids)
        if missing:
            self.table.add_new(missing)
            slots, _ = self.table.slots(user_ids)
        return slots

    async def _resolve(self, user_ids: list[str]) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The users' slots, loading those not held from the store (new rows for users it
        does not know)."""
        while True:
            slots, missing = self.table.slots(user_ids)
            if not missing:
                return slots
            await self._load(missing)

    async def _load(self, missing: list[str]) -> None:
        table = self.table
        stored = await self._bounded("load_states", self._store.get_users, missing)
        missing = [u for u in missing if u not in table]  # another task may have loaded some
        known = [stored[u] for u in missing if u in stored]
        new = [u for u in missing if u not in stored]
        if not known:
            table.add_new(new)  # the rows of users never seen, not built
        else:  # one add: its room made once
            table.add(UserRows.of(known, self._config.dim) + table.new_rows(new))
        for user_id in table.evicted():
            self._cache.delete(preferences_key(user_id))

    # -- checkpoints -----------------------------------------------------------

    async def _checkpoint_loop(self) -> None:
        while True:
            await self._dirty.wait()
            started = time.monotonic()
            self._dirty.clear()
            await self._checkpoint_once()
            # Paced: what the rounds change meanwhile waits for the next checkpoint.
            await asyncio.sleep(self._config.checkpoint_seconds - (time.monotonic() - started))

    async def _checkpoint_now(self, compact: bool = False) -> None:
        """Commit what is pending now; return once it is committed."""
        while not self._saved.is_set():
            await self._saved.wait()
        await self._checkpoint_once(compact)

    async def _checkpoint_once(self, compact: bool = False) -> None:
        while not self._saved.is_set():
            await self._saved.wait()
        table = self.table
        positions = self._applied_positions()
        done = dict(self._applied)
        changes = self._applier.take_changes()
        journal = self._journal
        if self._journaling:
            # compact: the whole journal and this checkpoint's rows written in place
            seq = 0 if compact else journal.last_seq + 1
            through = journal.through(time.monotonic(), table.journaled(), compact)
            changes.journal, changes.users = table.take_journaled(seq, through)
            changes.journal_seq, changes.journal_through = seq, through
            if compact:
                changes.users, changes.journal = changes.journal + changes.users, None
        else:
            changes.users = table.take_dirty()
        moved = positions != self.positions() or any(
            t.committed != done.get(p, t.committed) for p, t in self.trackers.items()
        )
        journaled = 0 if changes.journal is None else len(changes.journal)
        if not (len(changes.users) or changes.algorithm_counts or changes.user_metrics
                or changes.experiment_stats or changes.exposures or moved or journaled
                or changes.journal_through):  # fmt: skip
            table.saved()
            return
        if self._partitioned:
            changes.positions = positions
        else:
            changes.watermark = positions.get(0, self.tracker.watermark)
        # Each retry sends the same id: a retry of a commit that went through is a no-op.
        changes.commit_id = uuid7()
        self._saved.clear()
        try:
            await commit_checkpoint(changes, self._store.commit, self._bounded, self.quarantine)
        finally:
            self._saved.set()
        table.saved()
        if journaled:
            journal.appended(changes.journal_seq, journaled, time.monotonic())
        journal.compacted(changes.journal_through)
        if self._journaling:
            self.rows_journaled += journaled
            self.rows_compacted += len(changes.users)
        self.checkpoints += 1
        for partition, offset in positions.items():
            t = self.trackers.get(partition)
            if t is not None:
                t.watermark = max(t.watermark, offset)
                t.committed = max(t.committed, done.get(partition, 0))
        if self._partitioned:  # readers are other processes: the shared cache tells them
            for user_id in changes.users.user_ids:  # (a worker reads no preferences itself)
                self._cache.delete(preferences_key(user_id))
        if changes.algorithm_counts and self._on_counts is not None:
            self._on_counts(changes.algorithm_counts)

    def _applied_positions(self) -> dict[int, int]:
        """Per partition, the highest offset below which every offset handed on is in
        the table: the lowest one waiting, being applied or buffered, less one."""
        pending: dict[int, int] = {}
        for firsts in (self._inbox_first, self._applying_first, self._applier.first_buffered()):
            for partition, offset in firsts.items():
                pending[partition] = min(pending.get(partition, offset), offset)
        return {
            p: (pending[p] - 1 if p in pending else t.last_begun) for p, t in self.trackers.items()
        }

    # -- storage calls ---------------------------------------------------------

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

    async def _items_one_by_one(self, item_ids: list[str]) -> tuple[Any, Any]:
        rows = []
        for item_id in item_ids:
            try:
                rows.append(await self._bounded("load_items", self._vectors.rows, [item_id]))
            except Deterministic:
                rows.append((np.zeros((1, self._config.dim)), np.zeros(1, dtype=bool)))
        if not rows:
            return np.zeros((0, self._config.dim)), np.zeros(0, dtype=bool)
        return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])

    async def _bounded(self, operation: str, fn: Callable[..., Any], *args: Any) -> Any:
        """As :meth:`_retrying` while the store is unavailable; raises
        :class:`~recloop.resilience.Deterministic` once another error has happened
        ``poison_attempts`` times (the data fails, not the store)."""
        failing = False

        def failed(exc: BaseException) -> None:
            nonlocal failing
            self.last_error = f"{type(exc).__name__}: {exc}"
            if not failing:
                failing = True
                self.failing += 1

        try:
            return await retry_unless_deterministic(
                operation,
                fn,
                *args,
                attempts=self._config.poison_attempts,
                counts=self._retries,
                on_error=failed,
            )
        finally:
            if failing:
                self.failing -= 1

    async def _dead_letter(self, event: Event, reason: str) -> None:
        log.error(
            "event %s dead-lettered: %s",
            event.event_id,
            reason,
            extra={"request_id": event.request_id},
        )
        try:
            await self._bounded("dead_letter", self._store.add_dead_letter, event, reason)
        except Deterministic as exc:  # the store refuses even the dead letter: said loudly
            self.dead_letters_unstored += 1
            log.error("event %s could not be dead-lettered either: %s", event.event_id, exc)
            return
        self.dead_letters += 1

    # -- reads -------------------------------------------------------------------

    def holds(self, user_id: str) -> bool:
        """Whether events of ``user_id`` are held here: applied, buffered or waiting (so
        the log may hold events of theirs that the store's state does not show yet)."""
        return user_id in self.table or user_id in self._inbox_users

    def preferences(self, user_id: str) -> Preferences | None:
        """The user's state as applied so far (it may not be committed yet: the events
        are in the log, so a restart applies them again), or None if not held here."""
        return self.table.preferences(user_id)

    # -- erased users ------------------------------------------------------------

    def set_tombstones(self, tombstones: dict[str, Tombstone]) -> None:
        """Replace the tombstones (by :func:`~recloop.core.privacy.user_digest`): loaded
        before :meth:`start` replays the log, reloaded by workers as they refresh."""
        self._tombstones = dict(tombstones)
        self._erasures += 1
        self._blocking.clear()

    def blocks(self, event: Event) -> bool:
        """Whether ``event`` belongs to an erased user's history (accepted before the
        erasure): it is then neither applied nor kept."""
        if not self._tombstones:
            return False
        return self._blocked(event.user_id, event.offset, event.timestamp)

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
        ``tombstone`` are skipped; buffered ones are dropped; a checkpoint in flight is
        waited for, so that when this returns nothing more of the user's erased history
        will be committed. The user's held state is forgotten."""
        tombstones = dict(self._tombstones)
        tombstones[user_digest(user_id)] = tombstone
        self.set_tombstones(tombstones)
        while not self._saved.is_set():
            await self._saved.wait()
        self.evict(user_id)

    def evict(self, user_id: str) -> None:
        """Drop the user's held state and their buffered implicit events that the
        tombstones block (those left apply to a new state when flushed)."""
        self.table.drop(user_id)
        for partition, n in self._applier.drop(user_id, self._blocked).items():
            self._done(partition, n)
        self._dirty.set()

    def held_users(self) -> set[str]:
        """The users whose state or buffered events this processor holds."""
        return set(self.table.index) | self._applier.buffered_users()

    # -- introspection -----------------------------------------------------------

    @property
    def journal_rows(self) -> int:
        """Rows in the state journal's records not compacted yet (core.journal)."""
        return self._journal.rows

    @property
    def explicit_queue_depth(self) -> int:
        """Events handed on and not applied yet (explicit or not)."""
        return len(self._inbox)

    @property
    def implicit_buffered(self) -> int:
        return self._applier.buffered

    @property
    def workers_alive(self) -> int:
        return sum(1 for t in self._tasks if not t.done())

    @property
    def workers_expected(self) -> int:
        return 2


def _firsts(events: Sequence[Event]) -> dict[int, int]:
    first: dict[int, int] = {}
    for e in events:
        if e.partition not in first:
            first[e.partition] = e.offset
    return first


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
