"""The processor's apply step: a batch of logged events into the user table.

Everything here is synchronous: the processor loads what a batch needs (user
rows, item vectors) first, then hands it over, so no other task sees a batch
half applied. Explicit events apply at once (:meth:`Applier.explicit`); implicit
ones are buffered as columns (:meth:`Applier.buffer`) and applied summed per
(user, item) when the processor flushes them (:meth:`Applier.aggregate`, then
:meth:`Applier.implicit`). The numbers are :mod:`recloop.core.state`'s; what stays
per event in Python is only what is rare: attributed events (the optimizer's
counts), events of users in a running experiment (its metrics), poison events.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recloop.config import FeedbackSettings, Settings
from recloop.core.bandit import PerformanceCounts, attributed, bucket_start
from recloop.core.events import Event, Fields, SignalTable, TypeWeight
from recloop.core.preferences import LearningRate
from recloop.core.segments import SegmentRules, segment_of
from recloop.core.state import (
    Aggregates,
    Before,
    Bools,
    ExplicitRound,
    Floats,
    Ints,
    UserTable,
    aggregate,
    apply_explicit,
    apply_implicit,
)
from recloop.ports import AlgorithmCount, StateChanges

_ZERO = PerformanceCounts()
_FEW = 64
"""Events of a round up to which its bookkeeping loops in Python rather than set up numpy."""


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    """What the processor reads of the settings: the ``feedback`` section as it is, the
    learning rate and signal table built from it, and a few numbers of other sections.
    Every default is the settings' (:meth:`of`)."""

    feedback: FeedbackSettings
    dim: int
    """``vectors.dim``."""
    max_users: int
    """``cache.max_users``: users' rows held in memory."""
    segment_rules: SegmentRules
    algorithms: frozenset[str]
    """Algorithms whose attributed events are counted for the optimizer."""
    bucket_seconds: float
    """``bandit.bucket_minutes`` in seconds."""
    credit_clip: float
    """``exploration.credit_clip``: the largest weight of ``attribution.credit_weights``
    counted (a larger one counts as this)."""
    rate: LearningRate
    signals: SignalTable

    @classmethod
    def of(cls, settings: Settings) -> ProcessorConfig:
        fb = settings.feedback
        return cls(
            feedback=fb,
            dim=settings.vectors.dim,
            max_users=settings.cache.max_users,
            segment_rules=settings.segments.rules,
            algorithms=frozenset(settings.bandit.algorithms),
            bucket_seconds=settings.bandit.bucket_seconds,
            credit_clip=settings.exploration.credit_clip,
            rate=LearningRate(fb.base_alpha, fb.alpha_max),
            signals=SignalTable(
                {k: TypeWeight(v.strength, v.multiplier) for k, v in fb.types.items()},
                dwell_full_seconds=fb.dwell_full_seconds,
            ),
        )

    @property
    def implicit_flush_seconds(self) -> float:
        return self.feedback.implicit_flush_seconds

    @property
    def implicit_max_buffer(self) -> int:
        return self.feedback.implicit_max_buffer

    @property
    def apply_batch_max(self) -> int:
        """Most events one apply round takes; more wait for the next round."""
        return self.feedback.apply_batch_max

    @property
    def max_pending(self) -> int:
        """Events handed to the processor and not yet applied (or buffered) past which
        :meth:`~recloop.services.feedback.Processor.dispatch` waits: acceptance slows down
        instead of memory growing (``feedback.max_pending_events``)."""
        return self.feedback.max_pending_events

    @property
    def checkpoint_seconds(self) -> float:
        """Least time between the starts of two checkpoints."""
        return self.feedback.checkpoint_seconds

    @property
    def poison_attempts(self) -> int:
        """Failures of a read for a reason no retry fixes (the data, not the store) after
        which the events it concerns are dead-lettered."""
        return self.feedback.poison_attempts


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

    def reliabilities(self, user_ids: Sequence[str]) -> Floats:
        """Each user's reliability 0..100 (it scales the learning rate), or NaN if the
        user is suspect or blocked: their events are then held, not learnt from."""
        ...


@dataclass(slots=True)
class _Chunk:
    """Implicit events buffered by one apply round, as columns."""

    user_ids: list[str]
    slots: Ints
    """The users' slots when buffered (pinned since: only an erasure lets one go)."""
    generations: Ints
    """The slots' :attr:`~recloop.core.state.UserTable.generation` then."""
    item_ids: list[str]
    signals: Floats
    impression: Bools
    offsets: Ints
    timestamps: Floats
    partitions: Ints
    extras: list[tuple[int, Event, bool]]
    """(index in the chunk, event, watched) of events that need a look of their own:
    attributed to a counted algorithm, or of a user a running experiment watches."""
    version: int
    """The erasures known when it was buffered (see :meth:`Applier.aggregate`)."""

    def take(self, keep: Bools) -> _Chunk:
        index = np.flatnonzero(keep)
        renumber = np.cumsum(keep) - 1
        return _Chunk(
            [self.user_ids[i] for i in index.tolist()],
            self.slots[index],
            self.generations[index],
            [self.item_ids[i] for i in index.tolist()],
            self.signals[index],
            self.impression[index],
            self.offsets[index],
            self.timestamps[index],
            self.partitions[index],
            [(int(renumber[i]), e, w) for i, e, w in self.extras if keep[i]],
            self.version,
        )


@dataclass(slots=True)
class Flush:
    """The implicit buffer, summed per (user, item), ready to apply."""

    groups: Aggregates
    item_ids: list[str]
    """Each group's item."""
    extras: list[tuple[int, Event, bool]]
    """(group, event, watched), in event order."""


@dataclass(slots=True)
class Outcome:
    """What one call applied, beyond the table: poison events to dead-letter."""

    poison: list[Event] = field(default_factory=list)


class Applier:
    """Applies batches to ``table``; collects what the next checkpoint commits besides
    the user rows (:meth:`take_changes`)."""

    def __init__(
        self,
        table: UserTable,
        config: ProcessorConfig,
        observer: Observer | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.table = table
        self._config = config
        self._observer = observer
        self._gate = gate
        self._chunks: list[_Chunk] = []
        self.buffered = 0
        """Implicit events buffered, not yet applied."""
        self._first: dict[int, int] = {}  # per partition, the lowest offset buffered
        self._count_by_partition: dict[int, int] = {}
        self._counts: dict[tuple[str, str, float], PerformanceCounts] = {}
        self._observed = StateChanges()

    # -- what a checkpoint takes ---------------------------------------------------

    def take_changes(self) -> StateChanges:
        """The optimizer counts and experiment changes applied since the last call."""
        changes = self._observed
        changes.algorithm_counts = [
            AlgorithmCount(seg, alg, b, c) for (seg, alg, b), c in self._counts.items()
        ]
        self._observed, self._counts = StateChanges(), {}
        return changes

    def drop(self, user_id: str, blocked: Callable[[str, int, float], bool]) -> dict[int, int]:
        """Drop ``user_id``'s buffered events that ``blocked`` refuses; how many, per
        partition."""
        dropped: dict[int, int] = {}
        chunks = []
        for c in self._chunks:
            if user_id not in c.user_ids:
                chunks.append(c)
                continue
            gone = ~_unblocked(c, lambda u, o, t: u == user_id and blocked(u, o, t))
            for p in c.partitions[gone].tolist():
                dropped[p] = dropped.get(p, 0) + 1
            self.buffered -= int(gone.sum())
            if not gone.all():
                chunks.append(c.take(~gone))
        self._chunks = chunks
        self._first, self._count_by_partition = {}, {}
        for c in chunks:
            for p, o in zip(c.partitions.tolist(), c.offsets.tolist(), strict=True):
                self._first[p] = min(self._first.get(p, o), o)
                self._count_by_partition[p] = self._count_by_partition.get(p, 0) + 1
        return dropped

    def buffered_by_partition(self) -> dict[int, int]:
        """Buffered events per partition."""
        return dict(self._count_by_partition)

    def buffered_users(self) -> set[str]:
        return {u for c in self._chunks for u in c.user_ids}

    def first_buffered(self) -> dict[int, int]:
        """The lowest buffered offset of each partition."""
        return self._first

    # -- explicit --------------------------------------------------------------------

    def explicit(
        self,
        events: Sequence[Event],
        slots: Ints,
        items: Floats,
        has_item: Bools,
        now: float,
    ) -> Outcome:
        """Apply explicit ``events`` (slots and item rows resolved) in order."""
        c = self._config
        outcome = Outcome()
        signals = c.signals.signals(list(map(Fields.type, events)), _values(events))
        poison = np.isnan(signals)
        if poison.any():
            outcome.poison = [events[i] for i in np.flatnonzero(poison).tolist()]
            keep = np.flatnonzero(~poison)
            events = [events[i] for i in keep.tolist()]
            slots, items, has_item, signals = (
                slots[keep],
                items[keep],
                has_item[keep],
                signals[keep],
            )
        if not events:
            return outcome
        reliability = self._reliability(list(map(Fields.user_id, events)))
        offsets = np.fromiter(map(Fields.offset, events), np.int64, len(events))
        timestamps = np.fromiter(map(Fields.timestamp, events), np.float64, len(events))
        explicit = ExplicitRound(slots, items, has_item, signals, reliability, offsets, timestamps)
        learnt, before = apply_explicit(self.table, explicit, c.rate, now)
        observer = self._observer
        watched: dict[str, bool] = {}
        if observer is not None:
            watched = {u: observer.watches(u) for u in {e.user_id for e in events}}
        look = [i for i, e in enumerate(events) if e.attribution or watched.get(e.user_id)]
        for i in look:
            if not learnt[i]:
                continue
            e = events[i]
            if observer is not None and watched[e.user_id]:
                self._observed += observer.observe(e.user_id, e.type, e.value, e.timestamp)
            for algorithm, counts in attributed(e.attribution, e.type, e.value, c.credit_clip):
                if algorithm in c.algorithms:
                    self._count(before, i, e.timestamp, algorithm, e.timestamp, counts)
        return outcome

    # -- implicit --------------------------------------------------------------------

    def buffer(self, events: Sequence[Event], slots: Ints, version: int = 0) -> Outcome:
        """Buffer implicit ``events`` (already in no user's state; ``slots`` their users')
        until the flush; ``version`` numbers the erasures known now."""
        c = self._config
        outcome = Outcome()
        signals = c.signals.signals(list(map(Fields.type, events)), _values(events))
        poison = np.isnan(signals)
        if poison.any():
            outcome.poison = [events[i] for i in np.flatnonzero(poison).tolist()]
            keep = np.flatnonzero(~poison)
            events = [events[i] for i in keep.tolist()]
            slots, signals = slots[keep], signals[keep]
        n = len(events)
        if not n:
            return outcome
        observer = self._observer
        watched: dict[str, bool] = {}
        if observer is not None:
            watched = {u: observer.watches(u) for u in {e.user_id for e in events}}
        extras = [
            (i, e, watched.get(e.user_id, False))
            for i, e in enumerate(events)
            if e.attribution or watched.get(e.user_id, False)
        ]
        self.table.pinned[slots] = True
        chunk = _Chunk(
            user_ids=list(map(Fields.user_id, events)),
            slots=slots,
            generations=self.table.generation[slots],
            item_ids=list(map(Fields.item_id, events)),
            signals=signals,
            impression=np.fromiter((e.type == "impression" for e in events), bool, n),
            offsets=np.fromiter(map(Fields.offset, events), np.int64, n),
            timestamps=np.fromiter(map(Fields.timestamp, events), np.float64, n),
            partitions=np.fromiter(map(Fields.partition, events), np.int64, n),
            extras=extras,
            version=version,
        )
        self._chunks.append(chunk)
        self.buffered += n
        self._note_buffered(chunk, events)
        return outcome

    def _note_buffered(self, chunk: _Chunk, events: Sequence[Event]) -> None:
        """Count a new chunk's events per partition; note each partition's first."""
        if len(events) <= _FEW:
            note_partitions_each(
                [e.partition for e in events], [e.offset for e in events],
                self._first, self._count_by_partition,
            )  # fmt: skip
        else:
            note_partitions(chunk.partitions, chunk.offsets, self._first, self._count_by_partition)

    def aggregate(
        self,
        slots_of: Callable[[list[str]], Ints],
        blocked: Callable[[str, int, float], bool],
        version: int,
    ) -> Flush | None:
        """Take the buffer, summed per (user, item); None if it is empty.

        ``slots_of`` gives the users' slots now (rows may have moved since the events
        were buffered); events of chunks buffered before the erasures numbered
        ``version`` are checked with ``blocked(user_id, offset, timestamp)`` again.
        """
        chunks, self._chunks, self.buffered = self._chunks, [], 0
        self._first, self._count_by_partition = {}, {}
        chunks = [c if c.version == version else c.take(_unblocked(c, blocked)) for c in chunks]
        chunks = [c for c in chunks if c.user_ids]
        if not chunks:
            return None
        item_ids = [i for c in chunks for i in c.item_ids]
        codes: dict[str, int] = {}
        keys = np.fromiter(
            (codes.setdefault(i, len(codes)) for i in item_ids), np.int64, len(item_ids)
        )
        groups = aggregate(
            self._slots_now(chunks, slots_of),
            keys,
            np.concatenate([c.signals for c in chunks]),
            np.concatenate([c.impression for c in chunks]),
            np.concatenate([c.offsets for c in chunks]),
            np.concatenate([c.timestamps for c in chunks]),
        )
        names = list(codes)
        extras: list[tuple[int, Event, bool]] = []
        start = 0
        for c in chunks:
            extras.extend((int(groups.group[start + i]), e, w) for i, e, w in c.extras)
            start += len(c.item_ids)
        extras.sort(key=lambda x: x[0])  # stable: a group's events stay in order
        return Flush(
            groups,
            [names[k] for k in groups.items.tolist()],
            extras,
        )

    def _slots_now(self, chunks: list[_Chunk], slots_of: Callable[[list[str]], Ints]) -> Ints:
        """The buffered events' users' slots now: those noted at buffering, but where a
        slot was let go since (the user erased), ``slots_of`` the user again."""
        slots = np.concatenate([c.slots for c in chunks])
        noted = np.concatenate([c.generations for c in chunks])
        moved = np.flatnonzero(self.table.generation[slots] != noted)
        if len(moved):
            user_ids = [u for c in chunks for u in c.user_ids]
            slots[moved] = slots_of([user_ids[i] for i in moved.tolist()])
        return slots

    def implicit(self, flush: Flush, items: Floats, has_item: Bools, now: float) -> None:
        """Apply a flush (each group's item row resolved). Its users are pinned to their
        slots until this is done (nothing is buffered meanwhile: the caller applies)."""
        c = self._config
        g = flush.groups
        table = self.table
        ids = table.ids
        reliability = self._reliability([ids[s] or "" for s in g.users.tolist()])
        before = apply_implicit(table, g, items, has_item, reliability, c.rate, now)
        observer = self._observer
        for group, e, watched in flush.extras:
            if math.isnan(reliability[group]):
                continue  # held
            for algorithm, counts in attributed(e.attribution, e.type, e.value, c.credit_clip):
                if algorithm in c.algorithms:
                    at = float(g.first_at[group])
                    self._count(before, group, at, algorithm, e.timestamp, counts)
            if watched and observer is not None:
                self._observed += observer.observe(e.user_id, e.type, e.value, e.timestamp)
        table.pinned[:] = False

    # -- shared ----------------------------------------------------------------------

    def _reliability(self, user_ids: Sequence[str]) -> Floats:
        """Each user's reliability, NaN for a user whose events are held."""
        gate = self._gate
        if gate is None:
            return np.full(len(user_ids), 100.0)
        return gate.reliabilities(user_ids)

    def _count(
        self,
        before: Before,
        i: int,
        at: float,
        algorithm: str,
        timestamp: float,
        counts: PerformanceCounts,
    ) -> None:
        """Add an attributed event's counts under its user's segment before it (at ``at``)."""
        # one user: the scalar rule (segment_codes's oracle), not arrays of one
        last = float(before.last_event_at[i])
        segment = segment_of(
            int(before.interactions[i]),
            None if math.isnan(last) else last,
            at,
            self._config.segment_rules,
        )
        key = (segment, algorithm, bucket_start(timestamp, self._config.bucket_seconds))
        self._counts[key] = self._counts.get(key, _ZERO) + counts


def note_partitions(
    partitions: Ints, offsets: Ints, first: dict[int, int], counts: dict[int, int]
) -> None:
    """Add the events' count per partition to ``counts``; note in ``first`` the offset of
    each partition's first event, unless it has one (offsets grow per partition: the first
    is the lowest)."""
    for partition, count in zip(*np.unique(partitions, return_counts=True), strict=True):
        p = int(partition)
        counts[p] = counts.get(p, 0) + int(count)
        if p not in first:
            first[p] = int(offsets[partitions == p][0])


def note_partitions_each(
    partitions: list[int], offsets: list[int], first: dict[int, int], counts: dict[int, int]
) -> None:
    """:func:`note_partitions` one event at a time: for a few, no numpy set-up."""
    for p, offset in zip(partitions, offsets, strict=True):
        if p not in first:
            first[p] = offset
        counts[p] = counts.get(p, 0) + 1


def _unblocked(chunk: _Chunk, blocked: Callable[[str, int, float], bool]) -> Bools:
    return np.fromiter(
        (
            not blocked(u, o, t)
            for u, o, t in zip(
                chunk.user_ids, chunk.offsets.tolist(), chunk.timestamps.tolist(), strict=True
            )
        ),
        bool,
        len(chunk.user_ids),
    )


def _values(events: Sequence[Event]) -> Floats:
    nan = math.nan
    return np.fromiter(
        (nan if e.value is None else e.value for e in events), np.float64, len(events)
    )


__all__ = [
    "Applier",
    "Flush",
    "Gate",
    "Observer",
    "Outcome",
    "ProcessorConfig",
]
