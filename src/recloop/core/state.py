"""Users' learnt state as columns behind dense slots, and the batch rules that move it.

Every user the processor holds has a *slot*: a row of :class:`UserTable`'s
arrays (the preference vector in a float64 matrix, the counters and the applied
offsets in integer arrays, times in float arrays with NaN for "none yet"). A batch of
events is applied in a few numpy calls per *step*: step ``k`` holds each user's
``k``-th event of the batch, so events of distinct users move together and a
user's events still apply in order (:func:`occurrence_rank`). The arithmetic is
that of :mod:`recloop.core.preferences`, operation for operation, so a batch gives
bit-identical vectors to applying its events one by one (a property test holds the
two together).

Rows changed since the last checkpoint are *dirty*; :meth:`UserTable.take_dirty`
copies them out as :class:`UserRows` (columns, one row per user) for the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from recloop.core.preferences import LearningRate, Preferences, UserState, ema_update

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

_COUNTERS = ("events_applied", "events_skipped", "interactions", "impressions", "events_held")
_TIMES = ("first_event_at", "last_event_at", "updated_at")
_OFFSETS = ("explicit_offset", "implicit_offset")
_COLUMNS = _COUNTERS + _TIMES + _OFFSETS


_EMPTY_COLUMNS: dict[int, tuple[Any, ...]] = {}
"""Per dimension, the columns of no rows (:meth:`UserRows.empty`)."""


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x


def _nan_if_none(x: float | None) -> float:
    return math.nan if x is None else x


@dataclass(slots=True)
class UserRows:
    """Users' states as columns: row ``i`` is user ``user_ids[i]``. What a checkpoint writes.

    Times are NaN where a :class:`UserState` has None.

    >>> rows = UserRows.of([UserState.new("u1", 2)])
    >>> len(rows), rows.state(0).user_id, rows.state(0).first_event_at is None
    (1, 'u1', True)
    """

    user_ids: list[str]
    vectors: Floats
    events_applied: Ints
    events_skipped: Ints
    interactions: Ints
    impressions: Ints
    events_held: Ints
    first_event_at: Floats
    last_event_at: Floats
    updated_at: Floats
    explicit_offset: Ints
    implicit_offset: Ints

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def empty(cls, dim: int = 0) -> UserRows:
        """No rows (vectors of ``dim``): :meth:`of` of none, its columns built once per
        ``dim`` and shared, the id list new. Every commit without users (an exposure, a
        round of counts) makes one, and nothing can be written into an array without
        elements.

        >>> a, b = UserRows.empty(2), UserRows.empty(2)
        >>> len(a), a.vectors.shape, a.user_ids is b.user_ids, a.vectors is b.vectors
        (0, (0, 2), False, True)
        """
        columns = _EMPTY_COLUMNS.get(dim)
        if columns is None:
            none = cls.of([], dim)
            names = [f.name for f in fields(cls) if f.name != "user_ids"]
            columns = _EMPTY_COLUMNS[dim] = tuple(getattr(none, n) for n in names)
        return cls([], *columns)

    @classmethod
    def of(cls, states: Sequence[UserState], dim: int | None = None) -> UserRows:
        """Rows of ``states`` (``dim`` is needed only when there are none)."""
        d = len(states[0].vector) if states else (dim or 0)

        columns: dict[str, npt.NDArray[Any]] = {}
        for name in _COUNTERS + _OFFSETS:
            columns[name] = np.array([getattr(s, name) for s in states], dtype=np.int64)
        for name in _TIMES:
            columns[name] = np.array([_nan_if_none(getattr(s, name)) for s in states])
        vectors = np.array([s.vector for s in states], dtype=np.float64).reshape(len(states), d)
        return cls([s.user_id for s in states], vectors, **columns)

    def state(self, i: int) -> UserState:
        """Row ``i`` as a :class:`UserState` (its vector a copy)."""
        return UserState(
            user_id=self.user_ids[i],
            vector=self.vectors[i].copy(),
            events_applied=int(self.events_applied[i]),
            events_skipped=int(self.events_skipped[i]),
            interactions=int(self.interactions[i]),
            impressions=int(self.impressions[i]),
            first_event_at=_none_if_nan(float(self.first_event_at[i])),
            last_event_at=_none_if_nan(float(self.last_event_at[i])),
            updated_at=_none_if_nan(float(self.updated_at[i])),
            explicit_offset=int(self.explicit_offset[i]),
            implicit_offset=int(self.implicit_offset[i]),
            events_held=int(self.events_held[i]),
        )

    def states(self) -> list[UserState]:
        return [self.state(i) for i in range(len(self))]

    def without(self, user_ids: Iterable[str]) -> UserRows:
        """These rows but those of ``user_ids``."""
        drop = set(user_ids)
        keep = np.array([u not in drop for u in self.user_ids], dtype=bool)
        return self.take(np.flatnonzero(keep))

    def take(self, index: Ints) -> UserRows:
        columns = {n: getattr(self, n)[index] for n in _COUNTERS + _TIMES + _OFFSETS}
        return UserRows([self.user_ids[i] for i in index.tolist()], self.vectors[index], **columns)

    def to_bytes(self) -> bytes:
        """The rows as one record (the state journal's): a length-prefixed JSON header
        (rows, dimension, user ids), then each column's little-endian bytes in a fixed order.

        >>> rows = UserRows.of([UserState.new("u1", 2), UserState.new("u2", 2)])
        >>> back = UserRows.from_bytes(rows.to_bytes())
        >>> back.user_ids, back.vectors.shape, back.explicit_offset.tolist()
        (['u1', 'u2'], (2, 2), [-1, -1])
        """
        dim = int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0
        header = orjson.dumps([len(self), dim, self.user_ids])
        parts = [len(header).to_bytes(4, "little"), header]
        parts.append(np.ascontiguousarray(self.vectors, dtype="<f8").tobytes())
        for name in _COLUMNS:
            kind = "<f8" if name in _TIMES else "<i8"
            parts.append(np.ascontiguousarray(getattr(self, name), dtype=kind).tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, record: bytes) -> UserRows:
        """The rows :meth:`to_bytes` wrote (writable copies)."""
        size = int.from_bytes(record[:4], "little")
        n, dim, user_ids = orjson.loads(record[4 : 4 + size])
        at = 4 + size
        vectors = np.frombuffer(record, dtype="<f8", count=n * dim, offset=at)
        at += 8 * n * dim
        columns: dict[str, npt.NDArray[Any]] = {}
        for name in _COLUMNS:
            kind = "<f8" if name in _TIMES else "<i8"
            columns[name] = np.frombuffer(record, dtype=kind, count=n, offset=at).astype(
                np.float64 if name in _TIMES else np.int64
            )
            at += 8 * n
        if at != len(record):
            raise ValueError(f"a state record of {len(record)} bytes holds {at}")
        return cls(list(user_ids), vectors.astype(np.float64).reshape(n, dim), **columns)

    @classmethod
    def latest(cls, parts: Sequence[UserRows], dim: int = 0) -> UserRows:
        """One row per user: of ``parts`` in order, the last row each user has.

        >>> a = UserRows.of([UserState.new("u1", 2), UserState.new("u2", 2)])
        >>> b = UserRows.of([UserState.new("u2", 2)])
        >>> b.events_applied[0] = 7
        >>> rows = UserRows.latest([a, b])
        >>> rows.user_ids, rows.events_applied.tolist()
        (['u1', 'u2'], [0, 7])
        """
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(dim)
        ids = [u for p in parts for u in p.user_ids]
        last = {u: i for i, u in enumerate(ids)}  # a later row of a user replaces its index
        index = np.fromiter(last.values(), dtype=np.int64, count=len(last))
        columns = {n: np.concatenate([getattr(p, n) for p in parts])[index] for n in _COLUMNS}
        vectors = np.concatenate([p.vectors for p in parts])[index]
        return cls(list(last), vectors, **columns)

    def __add__(self, other: UserRows) -> UserRows:
        """Both sets of rows; for a user in both, ``other``'s (the later) row wins."""
        if not len(self):
            return other
        if not len(other):
            return self
        first = self.without(other.user_ids)
        columns = {
            n: np.concatenate([getattr(first, n), getattr(other, n)])
            for n in _COUNTERS + _TIMES + _OFFSETS
        }
        vectors = np.concatenate([first.vectors, other.vectors])
        return UserRows(first.user_ids + other.user_ids, vectors, **columns)


def occurrence_rank(keys: npt.NDArray[np.int64]) -> Ints:
    """For each position, how many earlier positions hold the same key.

    Step ``k`` of a batch is every position of rank ``k``: at most one per key,
    and a key's positions in their order.

    >>> occurrence_rank(np.array([7, 3, 7, 7, 3, 9])).tolist()
    [0, 0, 1, 2, 1, 0]
    """
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    np.not_equal(ranked[1:], ranked[:-1], out=starts[1:])
    positions = np.arange(n, dtype=np.int64)
    group_start = np.maximum.accumulate(np.where(starts, positions, 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = positions - group_start
    return rank


def steps(rank: Ints) -> list[Ints]:
    """The positions of each step, in order: ``steps(rank)[k]`` are those of rank ``k``.

    >>> [s.tolist() for s in steps(np.array([0, 0, 1, 2, 1, 0]))]
    [[0, 1, 5], [2, 4], [3]]
    """
    if len(rank) == 0:
        return []
    order = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[order], np.arange(1, int(rank.max()) + 1))
    return np.split(order, bounds)


def learning_rates(rate: LearningRate, signals: Floats, reliability: Floats) -> Floats:
    """:class:`~recloop.core.preferences.LearningRate` over arrays, to the last bit.

    >>> learning_rates(LearningRate(0.1, 0.5), np.array([1.0, -2.0, 100.0]), np.full(3, 100.0))
    array([0.1, 0.2, 0.5])
    """
    alpha = rate.base_alpha * np.abs(signals) * reliability / 100.0
    return np.minimum(np.maximum(alpha, 0.0), rate.alpha_max)


def ema_rows(vectors: Floats, slots: Ints, items: Floats, signals: Floats, alphas: Floats) -> None:
    """:func:`~recloop.core.preferences.ema_update` of rows ``slots`` (distinct) in place.

    Rows whose alpha or signal is 0 stay as they are, as in the scalar rule.

    >>> v = np.zeros((2, 2)); ema_rows(v, np.array([1]), np.array([[1.0, 0.0]]),
    ...                                 np.array([-1.0]), np.array([0.5]))
    >>> v.tolist()
    [[0.0, 0.0], [-0.5, 0.0]]
    """
    moves = (alphas != 0.0) & (signals != 0.0)
    if not moves.all():
        slots, items, signals, alphas = slots[moves], items[moves], signals[moves], alphas[moves]
    if not len(slots):
        return
    a = alphas[:, None]
    s = np.where(signals > 0, 1.0, -1.0)[:, None]
    vectors[slots] = a * s * items + (1.0 - a) * vectors[slots]


class UserTable:
    """Users' learnt state in arrays; see the module docstring.

    ``capacity`` bounds the users held: past it, the least recently used rows
    that are clean (checkpointed) and not pinned are dropped, a tenth at a time, to be
    loaded again from the store when their user comes back.

    >>> t = UserTable(dim=2, capacity=10)
    >>> slots, missing = t.slots(["a", "b", "a"])
    >>> slots.tolist(), missing
    ([-1, -1, -1], ['a', 'b'])
    >>> t.add(UserRows.of([UserState.new("a", 2), UserState.new("b", 2)]))
    >>> t.slots(["a", "b", "a"])[0].tolist()
    [0, 1, 0]
    """

    def __init__(self, dim: int, capacity: int = 200_000) -> None:
        self.dim = dim
        self.capacity = max(1, capacity)
        self.index: dict[str, int] = {}
        self.ids: list[str | None] = []
        self._free: list[int] = []
        self.round = 0
        """Bumped by the processor once per apply round: rows touched record it (LRU)."""
        self.vectors: Floats = np.zeros((0, dim))
        for name in _COUNTERS + _OFFSETS:
            setattr(self, name, np.zeros(0, dtype=np.int64))
        for name in _TIMES:
            setattr(self, name, np.zeros(0, dtype=np.float64))
        self.dirty: Bools = np.zeros(0, dtype=bool)
        self.saving: Bools = np.zeros(0, dtype=bool)
        """Rows a checkpoint in flight is writing: not clean until :meth:`saved`."""
        self.pinned: Bools = np.zeros(0, dtype=bool)
        """Rows that must keep their slot (users with buffered events): never dropped
        to make room."""
        self.used: Ints = np.zeros(0, dtype=np.int64)
        self.generation: Ints = np.zeros(0, dtype=np.int64)
        """Bumped each time a slot is let go: a slot noted with its generation still
        holds the same user while the generation is unchanged."""
        self.journal_seq: Ints = np.zeros(0, dtype=np.int64)
        """The number of the state journal record holding the row's newest committed
        version, 0 if the store's user table holds it (core.journal): such rows are
        never dropped to make room, the store having no other copy a load would read."""
        self._evicted: list[str] = []
        self._stored: Ints | None = None
        """The hashes of the ids of the users the store held at :meth:`know_stored`,
        sorted (8 bytes a user: a million stored users cost 8 MB); None: unknown."""
        self._dropped: set[int] = set()
        """The hashes of the ids of the users dropped from the table since."""
        self._allocate(min(1024, self.capacity))

    def _allocate(self, size: int) -> None:
        """Grow every column to ``size`` rows (new rows free)."""
        old = len(self.ids)

        def grown(array: npt.NDArray[Any], fill: float) -> npt.NDArray[Any]:
            new = np.full((size, *array.shape[1:]), fill, dtype=array.dtype)
            new[:old] = array[:old]
            return new

        self.ids.extend([None] * (size - old))
        self.vectors = grown(self.vectors, 0.0)
        for name in _COUNTERS:
            setattr(self, name, grown(getattr(self, name), 0))
        for name in _TIMES:
            setattr(self, name, grown(getattr(self, name), math.nan))
        for name in _OFFSETS:
            setattr(self, name, grown(getattr(self, name), -1))
        self.dirty = grown(self.dirty, False)
        self.saving = grown(self.saving, False)
        self.pinned = grown(self.pinned, False)
        self.used = grown(self.used, 0)
        self.generation = grown(self.generation, 0)
        self.journal_seq = grown(self.journal_seq, 0)
        self._free.extend(range(size - 1, old - 1, -1))

    # Declared for the type checker; set by _allocate.
    events_applied: Ints
    events_skipped: Ints
    interactions: Ints
    impressions: Ints
    events_held: Ints
    first_event_at: Floats
    last_event_at: Floats
    updated_at: Floats
    explicit_offset: Ints
    implicit_offset: Ints

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self.index

    def slots(self, user_ids: Sequence[str]) -> tuple[Ints, list[str]]:
        """Each user's slot (-1 if not held) and the distinct users not held, in order."""
        n = len(user_ids)
        found = np.fromiter(map(self.index.get, user_ids, repeat(-1, n)), np.int64, n)
        if not n or found.min() >= 0:
            return found, []  # every user held (the usual case): no second pass
        absent = np.flatnonzero(found < 0).tolist()
        return found, list(dict.fromkeys([user_ids[i] for i in absent]))

    def know_stored(self, user_ids: Iterable[str]) -> None:
        """The store holds these users' state and no other user's, and only this table
        writes it from now on (the embedded server: its one writer). A user dropped from
        the table since may be stored too: :meth:`may_be_stored` answers for both.

        >>> t = UserTable(dim=2); t.know_stored(["a"]); t.add_new(["b"])
        >>> t.may_be_stored(["a", "b", "c"])
        ['a']
        >>> t.drop("b"); t.may_be_stored(["a", "b", "c"])
        ['a', 'b']
        """
        self._stored = np.unique(np.fromiter(map(hash, user_ids), np.int64))
        self._dropped = set()

    def may_be_stored(self, user_ids: list[str]) -> list[str]:
        """Of ``user_ids`` (users not held), those the store may hold: every one unless
        :meth:`know_stored` was told (a user never stored need not be looked up). By
        hash: two ids of one hash are both asked for, never both skipped."""
        stored = self._stored
        if stored is None:
            return user_ids
        hashes = list(map(hash, user_ids))
        if len(stored):
            wanted = np.array(hashes, np.int64)
            at = np.minimum(np.searchsorted(stored, wanted), len(stored) - 1)
            at_start = (stored[at] == wanted).tolist()
        else:
            at_start = [False] * len(hashes)
        dropped = self._dropped
        return [
            user_id
            for user_id, h, held in zip(user_ids, hashes, at_start, strict=True)
            if held or h in dropped
        ]

    def may_store(self, user_id: str) -> bool:
        """:meth:`may_be_stored` of one user, in Python numbers (a read asks about one
        user; the arrays' calls cost several times the answer).

        >>> t = UserTable(dim=2); t.may_store("a")
        True
        >>> t.know_stored(["a"]); t.add_new(["b"]); t.may_store("a"), t.may_store("c")
        (True, False)
        >>> t.drop("b"); t.may_store("b")
        True
        """
        stored = self._stored
        if stored is None:
            return True
        wanted = hash(user_id)
        if wanted in self._dropped:
            return True
        at = int(stored.searchsorted(wanted))
        return at < len(stored) and stored.item(at) == wanted

    def add(self, rows: UserRows, journal_seq: Ints | None = None) -> None:
        """Hold ``rows`` (users not held yet: loaded from the store, or new), clean;
        ``journal_seq``: the journal records holding them (rows read from the journal)."""
        slots = self._take_slots(rows.user_ids)
        if slots is None:
            return
        self.vectors[slots] = rows.vectors
        for name in _COUNTERS + _TIMES + _OFFSETS:
            getattr(self, name)[slots] = getattr(rows, name)
        self.dirty[slots] = False
        self.used[slots] = self.round
        self.journal_seq[slots] = 0 if journal_seq is None else journal_seq

    def add_new(self, user_ids: Sequence[str]) -> None:
        """``add(new_rows(user_ids))`` without building the rows: each column's start
        value written into the new slots.

        >>> t = UserTable(dim=2); t.add_new(["a"])
        >>> t.slots(["a"])[0].tolist(), t.vectors[0].tolist(), int(t.explicit_offset[0])
        ([0], [0.0, 0.0], -1)
        """
        slots = self._take_slots(user_ids)
        if slots is None:
            return
        self.vectors[slots] = 0.0
        for name in _COUNTERS:
            getattr(self, name)[slots] = 0
        for name in _TIMES:
            getattr(self, name)[slots] = math.nan
        for name in _OFFSETS:
            getattr(self, name)[slots] = -1
        self.dirty[slots] = False
        self.used[slots] = self.round
        self.journal_seq[slots] = 0

    def _take_slots(self, user_ids: Sequence[str]) -> Ints | None:
        """Free slots for ``user_ids`` (not held), indexed; None if there are none."""
        n = len(user_ids)
        if not n:
            return None
        if len(self._free) < n:
            self._make_room(n)
        slots = np.array([self._free.pop() for _ in range(n)], dtype=np.int64)
        for user_id, slot in zip(user_ids, slots.tolist(), strict=True):
            self.index[user_id] = slot
            self.ids[slot] = user_id
        return slots

    def new_rows(self, user_ids: Sequence[str]) -> UserRows:
        """Rows of users recloop has never seen."""
        n = len(user_ids)
        columns: dict[str, npt.NDArray[Any]] = {}
        for name in _COUNTERS:
            columns[name] = np.zeros(n, dtype=np.int64)
        for name in _TIMES:
            columns[name] = np.full(n, math.nan)
        for name in _OFFSETS:
            columns[name] = np.full(n, -1, dtype=np.int64)
        return UserRows(list(user_ids), np.zeros((n, self.dim)), **columns)

    def _make_room(self, n: int) -> None:
        held = len(self.index)
        if held + n <= self.capacity:
            self._allocate(min(self.capacity, max(2 * len(self.ids), held + n)))
            return
        # Full: drop the least recently used clean rows, a tenth of the capacity at once.
        live = np.fromiter(self.index.values(), dtype=np.int64, count=held)
        kept = self.dirty[live] | self.saving[live] | self.pinned[live]
        candidates = live[~(kept | (self.journal_seq[live] > 0))]
        want = min(len(candidates), max(n - len(self._free), self.capacity // 10))
        if want > 0:
            oldest = candidates[np.argpartition(self.used[candidates], want - 1)[:want]]
            for slot in oldest.tolist():
                self._evicted.append(self.ids[slot] or "")
                self.drop_slot(slot)
        if len(self._free) < n:  # every row dirty, pinned or journaled: hold more for now
            self._allocate(len(self.ids) + n - len(self._free))

    def drop_slot(self, slot: int) -> None:
        user_id = self.ids[slot]
        if user_id is None:
            return
        del self.index[user_id]
        if self._stored is not None:  # written by a checkpoint, or about to be
            self._dropped.add(hash(user_id))
        self.ids[slot] = None
        self.generation[slot] += 1
        self.dirty[slot] = self.saving[slot] = self.pinned[slot] = False
        self.journal_seq[slot] = 0
        self._free.append(slot)

    def evicted(self) -> list[str]:
        """The users dropped to make room since the last call."""
        dropped, self._evicted = self._evicted, []
        return dropped

    def drop(self, user_id: str) -> None:
        """Forget ``user_id``'s row (dirty or not)."""
        slot = self.index.get(user_id)
        if slot is not None:
            self.drop_slot(slot)

    def clear(self) -> None:
        for slot in list(self.index.values()):
            self.drop_slot(slot)

    def take_dirty(self) -> UserRows:
        """Copies of the rows changed since the last call, for a checkpoint: they count as
        clean once it is :meth:`saved`."""
        slots = np.flatnonzero(self.dirty)
        self.dirty[slots] = False
        self.saving[slots] = True
        return self.rows(slots)

    def take_journaled(self, seq: int, through: int) -> tuple[UserRows, UserRows]:
        """For a journaling checkpoint (:mod:`recloop.core.journal`): copies of the rows
        changed since the last take, which record ``seq`` holds from now on (``seq`` 0:
        they are written in place), and of the rows to compact, those whose latest
        record is numbered ``through`` or less and that did not change since. Both count
        as clean once :meth:`saved`.

        >>> t = UserTable(dim=2)
        >>> t.add(UserRows.of([UserState.new("a", 2), UserState.new("b", 2)]))
        >>> t.dirty[[0, 1]] = True
        >>> [r.user_ids for r in t.take_journaled(1, 0)]
        [['a', 'b'], []]
        >>> t.saved(); t.dirty[1] = True
        >>> [r.user_ids for r in t.take_journaled(2, 1)]  # b is in record 2 now
        [['b'], ['a']]
        >>> t.saved(); t.journal_seq[:2].tolist()
        [0, 2]
        """
        dirty = np.flatnonzero(self.dirty)
        latest = self.journal_seq
        compact = (
            np.flatnonzero((latest > 0) & (latest <= through) & ~self.dirty)
            if through > 0
            else np.zeros(0, dtype=np.int64)
        )
        self.dirty[dirty] = False
        self.saving[dirty] = True
        self.saving[compact] = True
        latest[dirty] = seq
        latest[compact] = 0  # kept in memory until saved: `saving`
        return self.rows(dirty), self.rows(compact)

    def journaled(self) -> int:
        """How many rows only the state journal holds (not the store's user table)."""
        return int(np.count_nonzero(self.journal_seq))

    def saved(self) -> None:
        """The checkpoint of the rows last taken is committed."""
        self.saving[:] = False

    def rows(self, slots: Ints) -> UserRows:
        ids = self.ids
        columns = {n: getattr(self, n)[slots] for n in _COUNTERS + _TIMES + _OFFSETS}
        return UserRows([ids[s] or "" for s in slots.tolist()], self.vectors[slots], **columns)

    def preferences(self, user_id: str) -> Preferences | None:
        """What readers see of a held user (its vector a copy), or None if not held or
        nothing of theirs is applied yet (a new row, their events buffered)."""
        slot = self.index.get(user_id)
        if slot is None:
            return None
        updated_at = self.updated_at.item(slot)  # ndarray.item: a Python number at once
        if math.isnan(updated_at):
            return None
        return Preferences(
            user_id,
            self.vectors[slot].copy(),
            self.events_applied.item(slot),
            self.events_skipped.item(slot),
            self.interactions.item(slot),
            self.impressions.item(slot),
            _none_if_nan(self.first_event_at.item(slot)),
            _none_if_nan(self.last_event_at.item(slot)),
            updated_at,
            self.events_held.item(slot),
        )

    def touch(self, slots: Ints, first_at: Floats, last_at: Floats, now: float) -> None:
        """``UserState._touch`` of distinct ``slots``."""
        self.first_event_at[slots] = np.fmin(self.first_event_at[slots], first_at)
        self.last_event_at[slots] = np.fmax(self.last_event_at[slots], last_at)
        self.updated_at[slots] = now
        self.dirty[slots] = True
        self.used[slots] = self.round


@dataclass(slots=True)
class Before:
    """What a batch's rules need of each event's user as it was just before the event:
    its interactions and last event time (NaN: none), e.g. for its segment."""

    interactions: Ints
    last_event_at: Floats


@dataclass(frozen=True, slots=True)
class ExplicitRound:
    """A round's explicit events, in order, as columns: event ``i`` is of user
    ``slots[i]`` on an item with vector ``items[i]`` (if ``has_item[i]``), with its
    signal, its user's reliability (NaN: held, kept but not learnt from), its log offset
    and its time."""

    slots: Ints
    items: Floats
    has_item: Bools
    signals: Floats
    reliability: Floats
    offsets: Ints
    timestamps: Floats


SMALL_ROUND = 8
"""Explicit events up to which :func:`apply_explicit` takes them one by one: below
it, the few numpy calls per event cost less than a step's fixed set-up."""


def apply_explicit(
    table: UserTable, events: ExplicitRound, rate: LearningRate, now: float
) -> tuple[Bools, Before]:
    """Apply explicit events in order: :func:`apply_explicit_each` for a few
    (:data:`SMALL_ROUND`), :func:`apply_explicit_steps` for more; the same state to the bit.
    """
    apply = apply_explicit_each if len(events.slots) <= SMALL_ROUND else apply_explicit_steps
    return apply(table, events, rate, now)


def apply_explicit_each(
    table: UserTable, events: ExplicitRound, rate: LearningRate, now: float
) -> tuple[Bools, Before]:
    """:func:`apply_explicit_steps` one event at a time, with the scalar rules
    (``LearningRate``, ``ema_update``): no set-up, a few numpy calls per event.

    >>> t = UserTable(dim=2); t.add(t.new_rows(["u"]))
    >>> applied, before = apply_explicit_each(t, ExplicitRound(
    ...     np.array([0, 0]), np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([True, True]),
    ...     np.array([1.0, 1.0]), np.array([100.0, 100.0]), np.array([1, 2]),
    ...     np.array([5.0, 6.0])), LearningRate(0.5, 0.5), now=7.0)
    >>> t.vectors[0].tolist(), applied.tolist(), before.interactions.tolist()
    ([0.25, 0.5], [True, True], [0, 1])
    """
    slots, items, has_item, signals = events.slots, events.items, events.has_item, events.signals
    reliability, offsets, timestamps = events.reliability, events.offsets, events.timestamps
    n = len(slots)
    interactions_before = [0] * n
    last_before = [math.nan] * n
    learnt = [False] * n
    stream, held, vectors = table.explicit_offset, table.events_held, table.vectors
    fresh = (offsets > stream[slots]).tolist()  # as the steps: against the round's start
    touched = []
    for i, (s, offset, has, signal, rel, ts) in enumerate(
        zip(slots.tolist(), offsets.tolist(), has_item.tolist(), signals.tolist(),
            reliability.tolist(), timestamps.tolist(), strict=True)
    ):  # fmt: skip
        if not fresh[i]:
            continue  # already in the state
        interactions_before[i] = int(table.interactions[s])
        last_before[i] = float(table.last_event_at[s])
        if math.isnan(rel):
            held[s] += 1
        else:
            learnt[i] = True
            if has:
                table.events_applied[s] += 1
                vectors[s] = ema_update(vectors[s], items[i], signal, rate(signal, rel))
            else:
                table.events_skipped[s] += 1
            table.interactions[s] += 1
        stream[s] = offset
        _touch_one(table, s, ts)
        touched.append(s)
    if touched:
        table.updated_at[touched] = now
        table.dirty[touched] = True
        table.used[touched] = table.round
    before = Before(np.array(interactions_before, dtype=np.int64), np.array(last_before))
    return np.array(learnt, dtype=bool), before


def _touch_one(table: UserTable, slot: int, timestamp: float) -> None:
    """The event-time part of :meth:`UserTable.touch` (``np.fmin`` / ``np.fmax``) for one
    event of one slot."""
    if math.isnan(timestamp):
        return  # as fmin and fmax: a NaN never replaces a time
    first = table.first_event_at[slot]
    if not first <= timestamp:  # NaN: none yet
        table.first_event_at[slot] = timestamp
    last = table.last_event_at[slot]
    if not last >= timestamp:
        table.last_event_at[slot] = timestamp


def apply_explicit_steps(
    table: UserTable, events: ExplicitRound, rate: LearningRate, now: float
) -> tuple[Bools, Before]:
    """Apply explicit events in order (``UserState.apply_explicit`` / ``hold_explicit``).

    ``events`` as :class:`ExplicitRound` says. Events at or below their user's
    ``explicit_offset`` are already in the state and skipped. Returns which events were
    applied (fresh, learnt from) and each event's :class:`Before`.

    >>> t = UserTable(dim=2); t.add(t.new_rows(["u"]))
    >>> applied, before = apply_explicit_steps(t, ExplicitRound(
    ...     np.array([0, 0]), np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([True, True]),
    ...     np.array([1.0, 1.0]), np.array([100.0, 100.0]), np.array([1, 2]),
    ...     np.array([5.0, 6.0])), LearningRate(0.5, 0.5), now=7.0)
    >>> t.vectors[0].tolist(), applied.tolist(), before.interactions.tolist()
    ([0.25, 0.5], [True, True], [0, 1])
    """
    slots, items, has_item, signals = events.slots, events.items, events.has_item, events.signals
    reliability, offsets, timestamps = events.reliability, events.offsets, events.timestamps
    n = len(slots)
    before = Before(np.zeros(n, dtype=np.int64), np.full(n, math.nan))
    fresh = offsets > table.explicit_offset[slots]
    learnt = fresh & ~np.isnan(reliability)
    index = np.flatnonzero(fresh)
    for step in steps(occurrence_rank(slots[index])):
        e = index[step]
        s = slots[e]
        before.interactions[e] = table.interactions[s]
        before.last_event_at[e] = table.last_event_at[s]
        ok = learnt[e]
        table.events_held[s[~ok]] += 1
        le, ls = e[ok], s[ok]
        has = has_item[le]
        table.events_applied[ls] += has
        table.events_skipped[ls] += ~has
        table.interactions[ls] += 1
        moved = le[has]
        alphas = learning_rates(rate, signals[moved], reliability[moved])
        ema_rows(table.vectors, ls[has], items[moved], signals[moved], alphas)
        table.explicit_offset[s] = offsets[e]
        table.touch(s, timestamps[e], timestamps[e], now)
    return learnt, before


@dataclass(slots=True)
class Aggregates:
    """Implicit events summed per (user, item) (``ImplicitAggregate`` as columns), groups
    in the order of their first event; ``group[i]`` is event ``i``'s group."""

    users: Ints
    items: Ints
    signal: Floats
    interactions: Ints
    impressions: Ints
    max_offset: Ints
    first_at: Floats
    last_at: Floats
    group: Ints

    def __len__(self) -> int:
        return len(self.users)


def aggregate(
    users: Ints,
    items: Ints,
    signals: Floats,
    is_impression: Bools,
    offsets: Ints,
    timestamps: Floats,
) -> Aggregates:
    """Sum implicit events per (user, item), in event order (as ``ImplicitAggregate.add``).

    >>> a = aggregate(np.array([1, 2, 1]), np.array([5, 5, 5]), np.array([0.5, 1.0, 0.25]),
    ...               np.array([False, False, True]), np.array([10, 11, 12]),
    ...               np.array([3.0, 4.0, 5.0]))
    >>> a.users.tolist(), a.signal.tolist(), a.impressions.tolist(), a.max_offset.tolist()
    ([1, 2], [0.5, 1.0], [1, 0], [12, 11])
    """
    n = len(users)
    if n == 0:
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
        return Aggregates(empty_i, empty_i, empty_f, empty_i, empty_i, empty_i, empty_f,
                          empty_f, empty_i)  # fmt: skip
    # (user, item) as one 64-bit key: a 1-D unique is several times cheaper than one of
    # rows (``axis=0``), in the same order (slots and item codes are below 2**32)
    keys = (users.astype(np.int64) << 32) | items.astype(np.int64)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first, kind="stable")  # groups by their first event
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    group = rank[inverse]
    m = len(order)
    interaction = ~is_impression
    # bincount adds in event order: the same sums, to the bit, as one event at a time.
    signal = np.bincount(group, weights=np.where(interaction, signals, 0.0), minlength=m)
    max_offset = np.full(m, -1, dtype=np.int64)
    np.maximum.at(max_offset, group, offsets)
    first_at = np.full(m, math.inf)
    np.minimum.at(first_at, group, timestamps)
    last_at = np.full(m, -math.inf)
    np.maximum.at(last_at, group, timestamps)
    return Aggregates(
        users=users[first[order]],
        items=items[first[order]],
        signal=signal.astype(np.float64),
        interactions=np.bincount(group, weights=interaction, minlength=m).astype(np.int64),
        impressions=np.bincount(group, weights=is_impression, minlength=m).astype(np.int64),
        max_offset=max_offset,
        first_at=first_at,
        last_at=last_at,
        group=group,
    )


def apply_implicit(
    table: UserTable,
    agg: Aggregates,
    items: Floats,
    has_item: Bools,
    reliability: Floats,
    rate: LearningRate,
    now: float,
) -> Before:
    """Apply each (user, item) aggregate as one step (``UserState.apply_implicit`` /
    ``hold_implicit``), a user's aggregates in order; ``items``, ``has_item`` and
    ``reliability`` (NaN: held) are per aggregate. Returns each aggregate's
    :class:`Before`.

    >>> t = UserTable(dim=2); t.add(t.new_rows(["u"]))
    >>> a = aggregate(np.array([0, 0]), np.array([1, 1]), np.array([1.0, 1.0]),
    ...               np.array([False, False]), np.array([3, 4]), np.array([1.0, 2.0]))
    >>> _ = apply_implicit(t, a, np.array([[1.0, 0.0]]), np.array([True]), np.array([100.0]),
    ...                    LearningRate(0.1, 0.5), now=3.0)
    >>> t.vectors[0].tolist(), int(t.interactions[0]), int(t.implicit_offset[0])
    ([0.2, 0.0], 2, 4)
    """
    m = len(agg)
    before = Before(np.zeros(m, dtype=np.int64), np.full(m, math.nan))
    for g in steps(occurrence_rank(agg.users)):
        s = agg.users[g]
        before.interactions[g] = table.interactions[s]
        before.last_event_at[g] = table.last_event_at[s]
        ok = ~np.isnan(reliability[g])
        hs, hg = s[~ok], g[~ok]
        table.events_held[hs] += agg.interactions[hg] + agg.impressions[hg]
        ls, lg = s[ok], g[ok]
        counted = agg.interactions[lg]
        has = has_item[lg]
        table.events_applied[ls] += np.where(has, counted, 0)
        table.events_skipped[ls] += np.where(has, 0, counted)
        table.interactions[ls] += counted
        table.impressions[ls] += agg.impressions[lg]
        moves = has & (counted > 0)
        mg = lg[moves]
        alphas = learning_rates(rate, agg.signal[mg], reliability[mg])
        ema_rows(table.vectors, ls[moves], items[mg], agg.signal[mg], alphas)
        table.implicit_offset[s] = np.maximum(table.implicit_offset[s], agg.max_offset[g])
        table.touch(s, agg.first_at[g], agg.last_at[g], now)
    return before
