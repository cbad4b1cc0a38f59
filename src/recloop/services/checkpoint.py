"""Checkpoints: what the apply rounds changed, committed with the log position it covers.

One checkpoint is in flight at a time, paced by ``checkpoint_seconds``; under load each
covers every round applied meanwhile. A checkpoint commits in one transaction the dirty
users' rows, the optimizer's counts, the experiments' changes and, per log partition,
the highest offset below which every event handed on is in the table
(:meth:`~recloop.services.inbox.Inbox.applied_positions`). Rows the store refuses for
good are quarantined (:mod:`recloop.services.refusals`); each retry of a commit sends
the same commit id, so a retry of a commit that went through is a no-op.

The embedded processor journals the dirty rows: a checkpoint appends them as one record
of the state journal and compacts its oldest records, writing in place only the rows of
users whose latest record those are (:mod:`recloop.core.journal`). A worker (a
partitioned log) writes its rows in place at every checkpoint, and tells the shared
cache which users' preferences changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np

from recloop.core.ids import uuid7
from recloop.core.journal import JournalPlan
from recloop.core.state import UserRows, UserTable
from recloop.ports import AlgorithmCount, Cache, UserStateStore
from recloop.services.apply import Applier
from recloop.services.inbox import Inbox
from recloop.services.refusals import Quarantine, commit_checkpoint
from recloop.services.storecalls import StoreCalls

log = logging.getLogger(__name__)

__all__ = ["Checkpointer", "preferences_key"]


def preferences_key(user_id: str) -> str:
    """The shared cache's key of a user's preferences."""
    return f"preferences:{user_id}"


class Checkpointer:
    """See the module docstring."""

    def __init__(
        self,
        table: UserTable,
        applier: Applier,
        inbox: Inbox,
        store: UserStateStore,
        cache: Cache,
        calls: StoreCalls,
        journal: JournalPlan,
        dim: int,
        on_counts: Callable[[list[AlgorithmCount]], None] | None = None,
    ) -> None:
        """``on_counts`` receives the optimizer counts of every committed checkpoint."""
        self._table = table
        self._applier = applier
        self._inbox = inbox
        self._store = store
        self._cache = cache
        self._calls = calls
        self.journal = journal
        self._dim = dim
        self._on_counts = on_counts
        self.partitioned = False
        """A worker's share of a partitioned log: rows in place, positions per partition."""
        self.dirty = asyncio.Event()  # something for the next checkpoint
        self._saved = asyncio.Event()  # no checkpoint in flight
        self._saved.set()
        self.count = 0
        self.rows_journaled = 0
        """Rows appended to the state journal (one per user per checkpoint)."""
        self.rows_compacted = 0
        """Rows written into the store's user table by journal compactions."""
        self.quarantine = Quarantine()
        """Checkpoint rows the store refused for good (services.refusals)."""

    @property
    def journaling(self) -> bool:
        return not self.partitioned and self.journal.max_rows > 0

    async def load_journal(self) -> None:
        """Hold the users whose newest rows only the state journal has (at start)."""
        if not self.journaling:
            return
        records = await self._calls.retrying("load_journal", self._store.get_journal)
        latest: dict[str, int] = {}
        now = time.monotonic()
        for seq, rows in records:
            latest.update(dict.fromkeys(rows.user_ids, seq))
            self.journal.appended(seq, len(rows), now)
        if latest:
            rows = UserRows.latest([rows for _, rows in records], self._dim)
            seqs = np.fromiter((latest[u] for u in rows.user_ids), np.int64, len(rows))
            self._table.add(rows, seqs)
            log.info("loaded %d users' rows from %d state journal records", len(rows), len(records))

    async def run(self, pace_seconds: float) -> None:
        """The checkpoint task: one checkpoint whenever something is dirty, at most one
        per ``pace_seconds`` (what the rounds change meanwhile waits for the next)."""
        while True:
            await self.dirty.wait()
            started = time.monotonic()
            self.dirty.clear()
            await self.once()
            await asyncio.sleep(pace_seconds - (time.monotonic() - started))

    async def settled(self) -> None:
        """Return when no checkpoint is in flight."""
        while not self._saved.is_set():
            await self._saved.wait()

    async def now(self, compact: bool = False) -> None:
        """Commit what is pending now; return once it is committed."""
        await self.settled()
        await self.once(compact)

    async def once(self, compact: bool = False) -> None:
        """One checkpoint of whatever moved (``compact``: with the whole state journal
        written to the user table)."""
        await self.settled()
        table, inbox = self._table, self._inbox
        positions = inbox.applied_positions(self._applier.first_buffered())
        done = inbox.applied()
        changes = self._applier.take_changes()
        journal = self.journal
        if self.journaling:
            # compact: the whole journal and this checkpoint's rows written in place
            seq = 0 if compact else journal.last_seq + 1
            through = journal.through(time.monotonic(), table.journaled(), compact)
            changes.journal, changes.users = table.take_journaled(seq, through)
            changes.journal_seq, changes.journal_through = seq, through
            if compact:
                changes.users, changes.journal = changes.journal + changes.users, None
        else:
            changes.users = table.take_dirty()
        moved = inbox.moved(positions, done)
        journaled = 0 if changes.journal is None else len(changes.journal)
        if not (len(changes.users) or changes.algorithm_counts or changes.user_metrics
                or changes.experiment_stats or changes.exposures or moved or journaled
                or changes.journal_through):  # fmt: skip
            table.saved()
            return
        if self.partitioned:
            changes.positions = positions
        else:
            changes.watermark = positions.get(0, inbox.trackers[0].watermark)
        # Each retry sends the same id: a retry of a commit that went through is a no-op.
        changes.commit_id = uuid7()
        self._saved.clear()
        try:
            await commit_checkpoint(
                changes, self._store.commit, self._calls.bounded, self.quarantine
            )
        finally:
            self._saved.set()
        table.saved()
        if journaled:
            journal.appended(changes.journal_seq, journaled, time.monotonic())
        journal.compacted(changes.journal_through)
        if self.journaling:
            self.rows_journaled += journaled
            self.rows_compacted += len(changes.users)
        self.count += 1
        inbox.committed(positions, done)
        if self.partitioned:  # readers are other processes: the shared cache tells them
            for user_id in changes.users.user_ids:  # (a worker reads no preferences itself)
                self._cache.delete(preferences_key(user_id))
        if changes.algorithm_counts and self._on_counts is not None:
            self._on_counts(changes.algorithm_counts)
