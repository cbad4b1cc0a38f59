"""Which records of the state journal a checkpoint compacts.

A journaling checkpoint appends the users' rows it changed as one record, numbered
in order, instead of writing each row in place (an in-place write of a row costs a
random page of the user table and its WAL copy; a record is one sequential write).
A user's *latest* record holds their newest committed row. Compacting records up to
number ``through`` writes the rows of every user whose latest record is among them to
the user table and deletes those records, in the checkpoint's own transaction; a user
who changed again since has a later record and is written later, once, however many
times their row was journaled meanwhile.

:class:`JournalPlan` keeps the records' sizes and ages and picks ``through``: the
oldest records while the journal holds more than ``max_rows`` rows, any record older
than ``max_seconds``, and at least the oldest one while the users whose rows only the
journal holds are more than ``max_users`` (they stay in memory until compacted).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class JournalPlan:
    """The journal's records not compacted yet (oldest first) and the compaction rule.

    >>> plan = JournalPlan(max_rows=100, max_seconds=60.0, max_users=1_000)
    >>> for at in (0.0, 1.0, 2.0):
    ...     plan.appended(plan.last_seq + 1, 40, at)
    >>> plan.rows, plan.through(now=2.0, journaled_users=100)
    (120, 1)
    >>> plan.compacted(1)
    >>> plan.rows, plan.through(now=2.0, journaled_users=100)
    (80, 0)
    >>> plan.through(now=61.5, journaled_users=100)  # record 2 is 60.5 s old
    2
    >>> plan.through(now=2.0, journaled_users=1_001)  # too many users pinned
    2
    >>> plan.through(now=2.0, journaled_users=0, everything=True)
    3
    """

    max_rows: int
    max_seconds: float
    max_users: int
    records: deque[tuple[int, int, float]] = field(default_factory=deque)
    """(number, rows, appended at) of each record not compacted yet, oldest first."""
    rows: int = 0
    last_seq: int = 0
    """The highest record number appended (the next record is numbered one more)."""

    def appended(self, seq: int, rows: int, at: float) -> None:
        self.records.append((seq, rows, at))
        self.rows += rows
        self.last_seq = max(self.last_seq, seq)

    def through(self, now: float, journaled_users: int, everything: bool = False) -> int:
        """The highest record number the next checkpoint compacts (0: none)."""
        if everything:
            return self.records[-1][0] if self.records else 0
        through, rows = 0, self.rows
        for i, (seq, n, at) in enumerate(self.records):
            crowded = i == 0 and journaled_users > self.max_users
            if rows > self.max_rows or now - at > self.max_seconds or crowded:
                through, rows = seq, rows - n
            else:
                break
        return through

    def compacted(self, through: int) -> None:
        """Records numbered ``through`` or less are gone."""
        while self.records and self.records[0][0] <= through:
            self.rows -= self.records.popleft()[1]
