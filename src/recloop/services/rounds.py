"""The apply task: the inbox's events applied to the users' table, a round at a time.

A round (at most ``apply_batch_max`` events, oldest first):

1. the guard's evidence takes the events (the embedded deployment's spam guard);
2. the users not held are loaded from the store (new rows for users it does not
   know) and the explicit events' items from the item vectors; an event whose user or
   item the store fails to read every time is dead-lettered (found by halving) and the
   rest applied;
3. events of erased users accepted before the erasure are skipped, and events already
   in their user's state (a replay, a redelivery) passed over;
4. explicit events are applied at once, vectorised over the round; implicit events are
   buffered as columns and applied on the flush timer (``implicit_flush_seconds``),
   when the buffer is full, or when asked (:meth:`ApplyTask.flush`);
5. an event with no signal (a rating without a value, a type without a weight) is
   dead-lettered.

Nothing in a round awaits between loading and applying (but dead letters): no other
task sees a round half applied. A round that fails in an unforeseen way (a bug) is
counted, logged, and its events dead-lettered: it never stops the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from recloop.core.events import EXPLICIT_TYPES, Event, Fields
from recloop.core.privacy import Erasures
from recloop.core.state import UserRows, UserTable
from recloop.ports import Cache, UserStateStore
from recloop.resilience import Deterministic
from recloop.services.apply import Applier, ProcessorConfig
from recloop.services.checkpoint import preferences_key
from recloop.services.inbox import Inbox
from recloop.services.storecalls import StoreCalls
from recloop.services.vectors import ItemVectors

log = logging.getLogger(__name__)

__all__ = ["ApplyTask"]

Slots = np.ndarray[Any, np.dtype[np.int64]]

_REST_SECONDS = 0.05
"""No events for this long after a round: the rounds have paused (the pause work runs).
A stream's events come closer together than this."""


class ApplyTask:
    """See the module docstring."""

    def __init__(
        self,
        table: UserTable,
        applier: Applier,
        inbox: Inbox,
        store: UserStateStore,
        cache: Cache,
        vectors: ItemVectors,
        calls: StoreCalls,
        erasures: Erasures,
        config: ProcessorConfig,
        dirty: asyncio.Event,
        clock: Callable[[], float] = time.time,
        evidence: Callable[[Sequence[Event]], Awaitable[None]] | None = None,
        paused: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``dirty`` is set whenever a round leaves something for the next checkpoint;
        ``evidence`` (the guard, in the embedded deployment) takes every round's events
        before they are applied; ``paused`` runs when the rounds pause (no events for
        :data:`_REST_SECONDS` after a round) or :meth:`drain` waits, before the task is idle
        (the guard judges the users it kept waiting for the next round)."""
        self._table = table
        self._applier = applier
        self._inbox = inbox
        self._store = store
        self._cache = cache
        self._vectors = vectors
        self._calls = calls
        self._erasures = erasures
        self._config = config
        self._dirty = dirty
        self._clock = clock
        self._evidence = evidence
        self._paused = paused
        self._draining = 0  # callers of drain() waiting: idle is wanted now
        self._flush_now = False
        self._flush_at = time.monotonic() + config.implicit_flush_seconds
        self.rounds = 0
        self.crashes = 0
        """Apply rounds that failed in an unforeseen way (logged; their events
        dead-lettered): a bug, which never stops the stream."""
        self.passed_over = 0
        """Events handed on that were already in their user's state (replays)."""

    async def run(self) -> None:
        """The apply task: rounds while the inbox holds events; the implicit buffer
        flushed on its timer, when full, or when :meth:`flush` asks."""
        inbox, applier, config = self._inbox, self._applier, self._config
        self._flush_at = time.monotonic() + config.implicit_flush_seconds
        rested = True  # the last wait ended with nothing to apply: the rounds have paused
        while True:
            if not inbox.events and not self._flush_now:
                # Between two rounds of a stream the inbox is empty for a moment: the
                # pause work waits for a wait that brings nothing, or for a drain, and
                # only then is the task idle.
                if rested or self._draining or self._paused is None:
                    await self._pause_work()
                    inbox.idle.set()
                timeout = max(self._flush_at - time.monotonic(), 0.0)
                if not rested:  # a quiet moment after a round is a pause
                    timeout = min(timeout, _REST_SECONDS)
                # asyncio.timeout, not wait_for: no task of its own per wait (a stream of
                # small rounds waits once per round)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await inbox.work.wait()
                inbox.work.clear()
                rested = not inbox.events
            if inbox.events:
                rested = False
                events = inbox.take(config.apply_batch_max)
                try:
                    await self._round(events)
                except Exception as exc:  # a bug: said, counted, and the stream moves on
                    self.crashes += 1
                    self._calls.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("an apply round failed; its events go to the dead letters")
                    for event in events:
                        await self._calls.dead_letter(
                            event, f"apply failed: {self._calls.last_error}"
                        )
                        inbox.done(event.partition, 1)
                finally:
                    inbox.taken()
            buffered = applier.buffered
            if (
                self._flush_now
                or buffered >= config.implicit_max_buffer
                or (buffered and time.monotonic() >= self._flush_at)
            ):
                self._flush_at = time.monotonic() + config.implicit_flush_seconds
                await self._flush()
                self._flush_now = False
            elif not buffered and time.monotonic() >= self._flush_at:
                self._flush_at = time.monotonic() + config.implicit_flush_seconds
            inbox.make_room(applier.buffered)

    async def _pause_work(self) -> None:
        if self._paused is None:
            return
        try:
            await self._paused()
        except Exception as exc:  # the store is down: what it judged is held in memory
            log.warning("the apply task's pause work failed: %s", exc)

    async def drain(self) -> None:
        """Return once nothing is waiting nor being applied (nor a flush asked for)."""
        inbox = self._inbox
        self._draining += 1
        try:
            while inbox.events or not inbox.idle.is_set() or self._flush_now:
                inbox.work.set()
                inbox.idle.clear()
                await inbox.idle.wait()
        finally:
            self._draining -= 1

    async def flush(self) -> None:
        """Apply everything handed on, the implicit buffer included."""
        await self.drain()
        self._flush_now = True
        self._inbox.work.set()
        await self.drain()

    async def _round(self, events: list[Event]) -> None:
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
        table, erasures = self._table, self._erasures
        table.round = self.rounds
        now = self._clock()
        poison: list[Event] = []
        if explicit:
            x_slots = slots[is_explicit]
            if erasures:
                keep = ~np.array(erasures.blocks(explicit), np.bool_)
                explicit = [e for e, k in zip(explicit, keep.tolist(), strict=True) if k]
                x_slots, items, has_item = x_slots[keep], items[keep], has_item[keep]
            offsets = np.fromiter(map(Fields.offset, explicit), np.int64, len(explicit))
            self.passed_over += int((offsets <= table.explicit_offset[x_slots]).sum())
            poison += self._applier.explicit(explicit, x_slots, items, has_item, now).poison
        implicit = [e for e, x in zip(events, is_explicit.tolist(), strict=True) if not x]
        if implicit:
            i_slots = slots[~is_explicit]
            offsets = np.fromiter(map(Fields.offset, implicit), np.int64, len(implicit))
            keep = offsets > table.implicit_offset[i_slots]
            self.passed_over += int(len(implicit) - keep.sum())
            if erasures:
                keep &= ~np.array(erasures.blocks(implicit), np.bool_)
            if not keep.all():
                implicit = [e for e, k in zip(implicit, keep.tolist(), strict=True) if k]
                i_slots = i_slots[keep]
            poison += self._applier.buffer(implicit, i_slots, erasures.version).poison
        for event in poison:
            reason = (
                "no signal: a rating or dwell without a value, or a type without a weight "
                f"({event.type!r})"
            )
            await self._calls.dead_letter(event, reason)
        # Done: every event of the round but those buffered (done when flushed).
        inbox = self._inbox
        kept = Counter(map(Fields.partition, implicit))  # buffered, and poison (added back)
        for partition, n in Counter(map(Fields.partition, events)).items():
            inbox.done(partition, n - kept.get(partition, 0))
        for e in poison:
            if e.type not in EXPLICIT_TYPES:
                inbox.done(e.partition, 1)
        self._dirty.set()

    async def _load_round(self, events: list[Event]) -> tuple[Any, list[Event], Any, Any, Any]:
        """What a round needs loaded: the users' slots and the explicit events' items."""
        is_explicit = np.fromiter((e.type in EXPLICIT_TYPES for e in events), bool, len(events))
        explicit = [e for e, x in zip(events, is_explicit.tolist(), strict=True) if x]
        items, has_item = await self._calls.bounded(
            "load_items", self._vectors.rows, list(map(Fields.item_id, explicit))
        )
        slots = await self.resolve(list(map(Fields.user_id, events)))
        return is_explicit, explicit, items, has_item, slots

    async def _loadable(self, events: list[Event]) -> list[Event]:
        """``events`` but those whose user or item the store fails to read every time,
        which are dead-lettered (found by halving: a few reads per bad event)."""
        calls = self._calls
        try:
            await calls.bounded("load_states", self._store.get_users, [e.user_id for e in events])
            await calls.bounded("load_items", self._vectors.items, [e.item_id for e in events])
            return events
        except Deterministic as exc:
            if len(events) == 1:
                await calls.dead_letter(events[0], str(exc))
                self._inbox.done(events[0].partition, 1)
                return []
            half = len(events) // 2
            return await self._loadable(events[:half]) + await self._loadable(events[half:])

    async def _flush(self) -> None:
        """Apply the implicit buffer, summed per (user, item)."""
        applier, erasures = self._applier, self._erasures
        taken = applier.buffered_by_partition()
        flush = applier.aggregate(self._slots_or_new, erasures.blocked, erasures.version)
        if flush is not None:
            items, has_item = await self._calls.retrying(
                "load_items", self._vectors.rows, flush.item_ids
            )
            self.rounds += 1
            self._table.round = self.rounds
            applier.implicit(flush, items, has_item, self._clock())
        for partition, n in taken.items():
            self._inbox.done(partition, n)
        self._dirty.set()

    def _slots_or_new(self, user_ids: list[str]) -> Slots:
        """The users' slots, new rows for users not held (erased since they were buffered:
        they start again from nothing)."""
        slots, missing = self._table.slots(user_ids)
        if missing:
            self._table.add_new(missing)
            slots, _ = self._table.slots(user_ids)
        return slots

    async def resolve(self, user_ids: list[str]) -> Slots:
        """The users' slots, loading those not held from the store (new rows for users it
        does not know)."""
        while True:
            slots, missing = self._table.slots(user_ids)
            if not missing:
                return slots
            await self._load(missing)

    async def _load(self, missing: list[str]) -> None:
        table = self._table
        asked = table.may_be_stored(missing)
        stored = (
            await self._calls.bounded("load_states", self._store.get_users, asked) if asked else {}
        )
        missing = [u for u in missing if u not in table]  # another task may have loaded some
        known = [stored[u] for u in missing if u in stored]
        new = [u for u in missing if u not in stored]
        if not known:
            table.add_new(new)  # the rows of users never seen, not built
        else:  # one add: its room made once
            table.add(UserRows.of(known, self._config.dim) + table.new_rows(new))
        for user_id in table.evicted():
            self._cache.delete(preferences_key(user_id))
