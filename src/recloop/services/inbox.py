"""The events handed on to the processor and not applied yet, and each log partition's
progress.

Logged events arrive in offset order per partition (:meth:`Inbox.put`); the apply task
takes them a round at a time (:meth:`Inbox.take`) and says when each event has its
outcome in the users' table (:meth:`Inbox.done`: applied, passed over, dead-lettered,
or flushed from the implicit buffer). A checkpoint covers, per partition, every offset
below the lowest one still waiting, being applied or buffered
(:meth:`Inbox.applied_positions`): that is the position it commits.

The embedded log has only partition 0; a worker owns some partitions of the event topic
(:meth:`Inbox.own`). ``put`` waits while ``max_pending`` events are held and not
applied (back-pressure on the log's writer or the consumer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from recloop.core.events import Event
from recloop.core.offsets import Progress

__all__ = ["Inbox"]


class Inbox:
    """See the module docstring."""

    def __init__(self, max_pending: int) -> None:
        self.events: list[Event] = []
        self.users: set[str] = set()
        self._first: dict[int, int] = {}  # per partition, the lowest offset waiting
        self._applying_first: dict[int, int] = {}  # ... and in the round being applied
        self.trackers: dict[int, Progress] = {0: Progress()}
        self._applied: dict[int, int] = {}  # per partition: events done in the table
        self._max_pending = max_pending
        self.work = asyncio.Event()  # something to apply
        self.idle = asyncio.Event()  # nothing waiting nor being applied
        self.idle.set()
        self._room = asyncio.Event()
        self._room.set()

    def start(self, watermark: int) -> None:
        """The embedded log: partition 0, applied up to ``watermark``."""
        self.trackers = {0: Progress(watermark, watermark)}
        self._applied = {0: 0}

    def own(self, positions: dict[int, int]) -> None:
        """Own these partitions from now on; ``positions[p]`` is the last applied offset."""
        for partition, offset in positions.items():
            self.trackers[partition] = Progress(offset, offset)
            self._applied[partition] = 0

    async def put(self, events: Sequence[Event], buffered: int) -> None:
        """Hold ``events`` (in offset order per partition) for the apply task; waits while
        there is no room (``buffered``: the implicit events held by the applier)."""
        while not self._room.is_set():
            await self._room.wait()
        trackers = self.trackers
        first = self._first
        for e in events:  # offsets increase per partition: only the first is checked
            t = trackers[e.partition]
            if e.partition not in first:
                first[e.partition] = e.offset
            if e.offset <= t.last_begun:
                raise ValueError(f"offset {e.offset} begun out of order (last {t.last_begun})")
            t.last_begun = e.offset
            t.handed += 1
        self.events.extend(events)
        self.users.update(e.user_id for e in events)
        self.idle.clear()
        self.work.set()
        self.make_room(buffered)

    def make_room(self, buffered: int) -> None:
        """Open or close :meth:`put` by what is held: waiting plus ``buffered``."""
        if len(self.events) + buffered >= self._max_pending:
            self._room.clear()
        else:
            self._room.set()

    def take(self, limit: int) -> list[Event]:
        """The next round: up to ``limit`` events, oldest first; :meth:`taken` after it."""
        events, self.events = self.events[:limit], self.events[limit:]
        self.users = {e.user_id for e in self.events} if self.events else set()
        self._applying_first = self._first
        self._first = _firsts(self.events) if self.events else {}
        return events

    def taken(self) -> None:
        """The round from :meth:`take` is applied (or dead-lettered)."""
        self._applying_first = {}

    def skip(self, partition: int, offset: int) -> None:
        """Pass over a message with nothing to apply (a duplicate, an undecodable one),
        in its turn, so the partition's watermark moves past it."""
        t = self.trackers[partition]
        t.last_begun = max(t.last_begun, offset)
        t.handed += 1
        self.done(partition, 1)

    def done(self, partition: int, n: int) -> None:
        """``n`` events of ``partition`` have their outcome in the table (or none to have)."""
        self._applied[partition] = self._applied.get(partition, 0) + n

    def applied(self) -> dict[int, int]:
        """Per partition, how many events handed on have their outcome in the table."""
        return dict(self._applied)

    def positions(self) -> dict[int, int]:
        """Each owned partition's watermark: every offset up to it is committed state."""
        return {p: t.watermark for p, t in self.trackers.items()}

    def applied_positions(self, buffered_first: dict[int, int]) -> dict[int, int]:
        """Per partition, the highest offset below which every offset handed on is in
        the table: the lowest one waiting, being applied or buffered (``buffered_first``:
        the applier's), less one."""
        pending: dict[int, int] = {}
        for firsts in (self._first, self._applying_first, buffered_first):
            for partition, offset in firsts.items():
                pending[partition] = min(pending.get(partition, offset), offset)
        return {
            p: (pending[p] - 1 if p in pending else t.last_begun) for p, t in self.trackers.items()
        }

    def committed(self, positions: dict[int, int], done: dict[int, int]) -> None:
        """A checkpoint covering ``positions`` (with ``done`` events applied) is committed."""
        for partition, offset in positions.items():
            t = self.trackers.get(partition)
            if t is not None:
                t.watermark = max(t.watermark, offset)
                t.committed = max(t.committed, done.get(partition, 0))

    def moved(self, positions: dict[int, int], done: dict[int, int]) -> bool:
        """Whether a checkpoint of ``positions`` and ``done`` would move any partition."""
        return positions != self.positions() or any(
            t.committed != done.get(p, t.committed) for p, t in self.trackers.items()
        )


def _firsts(events: Sequence[Event]) -> dict[int, int]:
    first: dict[int, int] = {}
    for e in events:
        if e.partition not in first:
            first[e.partition] = e.offset
    return first
