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

Nothing of this runs on the ingest path: the guard only wakes the service when
records change, and the service reads the log off the event loop's hot path: the
users flagged since its last read together, by one scan (the log has no per-user
index), at most every ``scan_every_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from recloop.core.contribution import attributed_counts
from recloop.core.segments import SegmentRules
from recloop.ports import AlgorithmCount, EventLog
from recloop.services.guard import GuardService
from recloop.services.optimizer import Optimizer
from recloop.services.tasks import stop_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetractionConfig:
    algorithms: frozenset[str]
    """The algorithms whose attributed events the processor counts."""
    bucket_seconds: float = 3600.0
    segment_rules: SegmentRules = field(default_factory=SegmentRules)
    scan_every_seconds: float = 10.0
    """At most one read of the log this often: the users flagged meanwhile are read
    together (the log has no per-user index, so each read is a scan)."""
    users_per_scan: int = 500
    """At most this many newly flagged users per read; the rest wait for the next."""


class Retraction:
    def __init__(
        self, log_: EventLog, guard: GuardService, optimizer: Optimizer, config: RetractionConfig
    ) -> None:
        self._log = log_
        self._guard = guard
        self._optimizer = optimizer
        self._config = config
        self._held: dict[str, list[AlgorithmCount]] = {}
        self._pending = False  # flagged users left for the next read
        self._left_out: frozenset[str] = frozenset()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
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
            # Paced: the users flagged meanwhile are read together, by one scan.
            await asyncio.sleep(self._config.scan_every_seconds)

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
        self._pending = len(new) > c.users_per_scan
        new = new[: c.users_per_scan]
        if new:
            # Their events up to the flag: the ones learnt from (the later ones are held).
            until = math.nextafter(max(since for _, since in new), math.inf)
            read = await self._log.read_users_events([u for u, _ in new], 0.0, until)
            for user_id, since in new:
                events = [e for e in read[user_id] if e.timestamp <= since]
                self._held[user_id] = [
                    AlgorithmCount(*row)
                    for row in attributed_counts(
                        events, c.algorithms, c.bucket_seconds, c.segment_rules
                    )
                ]
        if gone or new:
            self._optimizer.take_back(_all(self._held.values()))
            self._left_out = frozenset(self._held)
        return len(gone) + len(new)


def _all(held: Iterable[list[AlgorithmCount]]) -> list[AlgorithmCount]:
    return [row for rows in held for row in rows]
