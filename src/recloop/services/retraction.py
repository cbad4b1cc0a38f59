"""What flagged users taught the optimizer, taken back while they are flagged.

The guard flags users (suspect or blocked, by the detector or by hand). Most
shared state leaves them out by reading the flagged set itself: experiments'
results (``ExperimentService.counted_stats``), the items' shown and click counts
(``Tally.exclude``), the next model's training data (``learning.job.run_plan``).
The optimizer's counts are sums per segment, algorithm and hour that keep no user
apart, so this service finds each flagged user's attributed feedback again in
the event log (:func:`~recloop.core.contribution.attributed_counts`), once, when
the user is flagged, and hands the optimizer the sum of all of them to leave out
(:meth:`~recloop.services.optimizer.Optimizer.take_back`). A user who is unblocked
or cleared leaves that sum at the next refresh; the stored counts never changed.
A flagged user who is erased leaves it at once, and the erasure subtracts their
part from the stored counts for good (:meth:`Retraction.contribution`,
:meth:`Retraction.forget`): their events, from which it was found, are gone.

Nothing of this runs on the ingest path: the guard only wakes the service when
records change, and the service reads the log off the event loop's hot path: the
users flagged since its last read together, at most every ``every_seconds``. The
log has no per-user index; the read covers only the part of the log logged
since the earliest first event of the users read (their state's
``first_event_at``, less how far ahead of its logging an event's timestamp may
be), found by bisecting the log's offsets on their logging time
(:meth:`~recloop.ports.EventLog.offset_logged_before`): users flagged soon after
they appeared, as attackers are, cost a read of the log's tail.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from recloop.config import Settings
from recloop.core.contribution import attributed_counts
from recloop.core.preferences import Preferences
from recloop.core.segments import SegmentRules
from recloop.ports import AlgorithmCount, EventLog, UserStateStore
from recloop.services.guard import GuardService
from recloop.services.optimizer import Optimizer
from recloop.services.tasks import stop_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetractionConfig:
    """The numbers of other sections a retraction reads (:meth:`of`; no defaults here)."""

    algorithms: frozenset[str]
    """The algorithms whose attributed events the processor counts."""
    credit_clip: float
    """``exploration.credit_clip``: credit weights are clipped as the processor clips them."""
    bucket_seconds: float
    segment_rules: SegmentRules
    every_seconds: float
    """At most one read of the log this often (``spam.retraction_every_seconds``): the
    users flagged meanwhile are read together."""
    users_per_read: int
    """At most this many newly flagged users per read (``spam.retraction_users_per_read``);
    the rest wait for the next."""
    max_future_seconds: float
    """How far ahead of its logging an event's timestamp may be
    (``feedback.max_future_seconds``): a user's first event was logged no earlier than
    their ``first_event_at`` less this."""
    clock_slack_seconds: float
    """How far logging times may go back along the log (``spam.retraction_clock_slack_seconds``:
    a clock stepped back, writers committing concurrently, the distributed archive's
    workers' clocks): the read starts this much earlier than the users' first events."""

    @classmethod
    def of(cls, settings: Settings) -> RetractionConfig:
        spam = settings.spam
        return cls(
            algorithms=frozenset(settings.bandit.algorithms),
            credit_clip=settings.exploration.credit_clip,
            bucket_seconds=settings.bandit.bucket_seconds,
            segment_rules=settings.segments.rules,
            every_seconds=spam.retraction_every_seconds,
            users_per_read=spam.retraction_users_per_read,
            max_future_seconds=settings.feedback.max_future_seconds,
            clock_slack_seconds=spam.retraction_clock_slack_seconds,
        )


class Retraction:
    def __init__(
        self,
        log_: EventLog,
        guard: GuardService,
        optimizer: Optimizer,
        config: RetractionConfig,
        store: UserStateStore | None = None,
        live: Callable[[str], Preferences | None] | None = None,
    ) -> None:
        """``store`` and ``live`` (the processor's state as applied, embedded) tell the
        users' ``first_event_at``, which bounds the read of the log; without either (or
        for a user known to neither) the whole log is read."""
        self._log = log_
        self._guard = guard
        self._optimizer = optimizer
        self._config = config
        self._store = store
        self._live = live
        self._held: dict[str, list[AlgorithmCount]] = {}
        self._pending = False  # flagged users left for the next read
        self._left_out: frozenset[str] = frozenset()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_read_after = 0
        """The offset the last read of the log started above (0: all of it)."""
        guard.on_flags(self._wake.set)

    async def start(self) -> None:
        """Follow the guard's changes, beginning with the users flagged now (in the
        background: after a restart, every flagged user's events are read again)."""
        self._wake.set()
        self._task = asyncio.create_task(self._follow(), name="retraction")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_tasks(task)

    async def _follow(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if await self.refresh() and self._pending:
                    self._wake.set()  # more flagged users than one read takes
            except Exception as exc:  # the store is away: try again shortly
                log.warning("taking back flagged users' counts failed: %s", exc)
                self._wake.set()
                await asyncio.sleep(1.0)
            # Paced: the users flagged meanwhile are read together, by one read.
            await asyncio.sleep(self._config.every_seconds)

    def left_out(self) -> frozenset[str]:
        """The users whose counts the optimizer leaves out now."""
        return self._left_out

    async def refresh(self) -> int:
        """Bring the optimizer's left-out counts to the users flagged now; how many users
        changed (newly flagged, or no longer)."""
        flagged = self._guard.flagged_since()
        gone = [u for u in self._held if u not in flagged]
        for user_id in gone:
            del self._held[user_id]
        new = [(u, since) for u, since in flagged.items() if u not in self._held]
        c = self._config
        self._pending = len(new) > c.users_per_read
        new = new[: c.users_per_read]
        if new:
            found = await self._read(new)
            # Flags may have moved while the log was read (an erasure, an unblock): keep
            # the users flagged as they were.
            now = self._guard.flagged_since()
            for user_id, since in new:
                if now.get(user_id) == since:
                    self._held[user_id] = found[user_id]
        if gone or new:
            self._take_back()
        return len(gone) + len(new)

    async def contribution(self, user_id: str) -> list[AlgorithmCount]:
        """What the optimizer leaves out for ``user_id`` now: their counts taken back if
        they are flagged (read from the log now if the service has not yet), else none."""
        held = self._held.get(user_id)
        if held is not None:
            return list(held)
        since = self._guard.flagged_since().get(user_id)
        if since is None:
            return []
        return (await self._read([(user_id, since)]))[user_id]

    def forget(self, user_id: str, erased: Sequence[AlgorithmCount] = ()) -> None:
        """An erasure: stop leaving the user's counts out. ``erased``: the counts the
        erasure subtracted from the stored ones (their :meth:`contribution`, negated),
        subtracted from the optimizer's at the same moment, so its totals never count
        the user's part twice, nor at all."""
        if erased:
            self._optimizer.record(erased)
        if self._held.pop(user_id, None) is not None or erased:
            self._take_back()

    def _take_back(self) -> None:
        self._optimizer.take_back(_all(self._held.values()))
        self._left_out = frozenset(self._held)

    async def _read(self, users: Sequence[tuple[str, float]]) -> dict[str, list[AlgorithmCount]]:
        """Each user's attributed counts from their events up to their flag (the ones
        learnt from: the later ones are held), by one read of the log."""
        c = self._config
        ids = [u for u, _ in users]
        until = math.nextafter(max(since for _, since in users), math.inf)
        after = await self._after(ids)
        self.last_read_after = after
        read = await self._log.read_users_events(ids, 0.0, until, after)
        found: dict[str, list[AlgorithmCount]] = {}
        for user_id, since in users:
            events = [e for e in read[user_id] if e.timestamp <= since]
            found[user_id] = [
                AlgorithmCount(*row)
                for row in attributed_counts(
                    events, c.algorithms, c.bucket_seconds, c.segment_rules, c.credit_clip
                )
            ]
        return found

    async def _after(self, user_ids: Sequence[str]) -> int:
        """An offset below every logged event of ``user_ids`` (0: the whole log)."""
        firsts: dict[str, float | None] = {}
        if self._live is not None:
            for user_id in user_ids:
                held = self._live(user_id)
                if held is not None:
                    firsts[user_id] = held.first_event_at
        rest = [u for u in user_ids if u not in firsts]
        if rest and self._store is not None:
            stored = await self._store.get_users(rest)
            firsts.update((u, s.first_event_at) for u, s in stored.items())
        known = [firsts.get(u) for u in user_ids]
        if not known or any(t is None for t in known):
            return 0
        c = self._config
        earliest = min(t for t in known if t is not None)
        return await self._log.offset_logged_before(
            earliest - c.max_future_seconds - c.clock_slack_seconds
        )


def _all(held: Iterable[list[AlgorithmCount]]) -> list[AlgorithmCount]:
    return [row for rows in held for row in rows]
