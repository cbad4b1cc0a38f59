"""Rate limits counted in process, in arrays: :class:`MemoryRateLimiter`.

Each class (``explicit``, ``implicit``, ``key``) maps its identities to dense
slots; each of its limits keeps the slots' two latest window counters in numpy
arrays (:class:`recloop.core.ratelimit.WindowCounters`), and a request's asks
are decided together (:func:`recloop.core.ratelimit.admit`), with exactly the
decisions of ``limits``' sliding-window counter over its memory storage.

Memory stays bounded by the identities active within each class's longest
limit's two windows: once per shortest window the slots whose counters have
all expired go back to a free list (a vectorised pass, so O(1) per slot ever
used, amortised) and their identities are forgotten; the arrays grow by
doubling and never shrink. Confine an instance to one event loop (it has no
locks).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from limits import parse_many

from recloop.adapters.ratelimit.groups import gated
from recloop.core.ratelimit import Admission, Limit, WindowCounters, admit, admit_one

_ABSENT = itertools.repeat(-1)

SCALAR_MAX = 64
"""Up to this many asks, a request's asks are first decided one by one in Python numbers
(:func:`~recloop.core.ratelimit.admit_one`): below it, the arrays' fixed cost (some forty
numpy calls per limit) is more than the asks' own work."""


def limits_of(spec: str) -> list[Limit]:
    """A class's limits from ``limits``' notation (``"60/minute;1000/day"``)."""
    return [Limit(str(item), item.amount, item.get_expiry()) for item in parse_many(spec)]


class _Class:
    """One class's identities, slots and counters."""

    __slots__ = ("counters", "free", "names", "next_sweep", "slots", "sweep_every", "used")

    def __init__(self, limits: Sequence[Limit]) -> None:
        self.counters = [WindowCounters(limit) for limit in limits]
        self.slots: dict[str, int] = {}
        self.names = np.zeros(0, object)  # identity by slot; None when free
        self.free: list[int] = []
        self.used = np.zeros(0, np.bool_)  # by slot
        self.sweep_every = min((limit.expiry for limit in limits), default=60)
        self.next_sweep = 0.0

    def slots_of(self, identities: Sequence[str]) -> np.ndarray:
        """Each identity's slot, assigning free slots to the new ones."""
        n = len(identities)
        found = np.fromiter(map(self.slots.get, identities, _ABSENT), np.int64, n)
        missing = np.flatnonzero(found < 0)
        if len(missing):  # only the new identities' asks are looked up again
            named = [identities[i] for i in missing.tolist()]
            new = list(dict.fromkeys(named))
            if len(self.free) < len(new):
                self._grow(len(self.names) + len(new))
            taken = self.free[-len(new) :]
            del self.free[-len(new) :]
            self.slots.update(zip(new, taken, strict=True))
            self.names[taken] = new
            self.used[taken] = True
            found[missing] = np.fromiter(map(self.slots.__getitem__, named), np.int64, len(named))
        return found

    def slot_of(self, identity: str) -> int:
        """One identity's slot (:meth:`slots_of` of one, without its numpy calls)."""
        slot = self.slots.get(identity)
        if slot is None:
            if not self.free:
                self._grow(len(self.names) + 1)
            slot = self.free.pop()  # the lowest free slot, as slots_of takes
            self.slots[identity] = slot
            self.names[slot] = identity
            self.used[slot] = True
        return slot

    def _grow(self, needed: int) -> None:
        start = len(self.names)
        capacity = max(64, 2 * start, needed)
        for counters in self.counters:
            counters.grow(capacity)
        self.names = np.concatenate([self.names, np.full(capacity - start, None, object)])
        self.used = np.concatenate([self.used, np.zeros(capacity - start, np.bool_)])
        self.free[:0] = range(capacity - 1, start - 1, -1)  # the lowest slots are taken first

    def sweep(self, now: float) -> None:
        """Free the slots none of whose counters is still effective."""
        self.next_sweep = now + self.sweep_every
        if not self.slots:
            return
        live = np.zeros(len(self.names), np.bool_)
        for counters in self.counters:
            live |= counters.live(now)
        dead = np.flatnonzero(self.used & ~live)
        if not len(dead):
            return
        for counters in self.counters:
            counters.clear(dead)
        pop = self.slots.pop
        for identity in self.names[dead].tolist():
            pop(identity)
        self.names[dead] = None
        self.used[dead] = False
        self.free.extend(dead.tolist())

    def forget(self, identity: str) -> None:
        slot = self.slots.pop(identity, None)
        if slot is None:
            return
        for counters in self.counters:
            counters.clear(np.array([slot]))
        self.names[slot] = None
        self.used[slot] = False
        self.free.append(slot)


def _admit_in_full(table: _Class, asks: Sequence[tuple[str, int]], now: float) -> int:
    """Admit and charge the asks in order while every limit has room for the whole ask;
    how many were (the first refused, if any, is charged nothing)."""
    counters = table.counters
    for n, (identity, count) in enumerate(asks):
        if not admit_one(counters, table.slot_of(identity), count, now):
            return n
    return len(asks)


class MemoryRateLimiter:
    """:class:`recloop.ports.RateLimiter` in process (``rate_limits.storage: memory://``)."""

    shared = False

    def __init__(
        self,
        classes: Mapping[str, str],
        clock: Callable[[], float] = time.time,
        scalar_max: int = SCALAR_MAX,
    ) -> None:
        """``classes``: each class's limits in ``limits``' notation; ``scalar_max``: the
        most asks a request may make for its asks to be tried one by one in Python numbers
        first (0: always over arrays, the oracle the scalar path is tested against)."""
        self._classes = {name: _Class(limits_of(spec)) for name, spec in classes.items()}
        self._clock = clock
        self._scalar_max = scalar_max

    async def admit_many(
        self, action: str, asks: Sequence[tuple[str, int]]
    ) -> dict[int, Admission]:
        return self.decide(action, asks)

    def decide(self, action: str, asks: Sequence[tuple[str, int]]) -> dict[int, Admission]:
        """:meth:`admit_many`, synchronously."""
        if not asks:
            return {}
        table = self._classes[action]
        now = self._clock()
        if now >= table.next_sweep:
            table.sweep(now)
        start = 0
        if len(asks) == 1 and self._scalar_max:  # a one-event request's ask
            identity, count = asks[0]
            if admit_one(table.counters, table.slot_of(identity), count, now):
                return {}
        elif len(asks) <= self._scalar_max:
            start = _admit_in_full(table, asks, now)
            if start == len(asks):
                return {}
        # From the first ask some limit refuses on: decided over arrays. Each ask before it
        # was admitted in full, as the arrays would have: an ask's decision depends only on
        # the earlier asks of its identity.
        rest = asks[start:] if start else asks
        identities, counts = zip(*rest, strict=True)
        slots = table.slots_of(identities)
        costs = np.array(counts, np.int64)
        admitted, refused_by, reset_at = admit(table.counters, slots, costs, now)
        short = np.flatnonzero(refused_by >= 0)
        if not len(short):
            return {}
        names = [counters.limit.name for counters in table.counters]
        return {
            start + n: Admission(int(admitted[n]), names[refused_by[n]], float(reset_at[n]))
            for n in short.tolist()
        }

    def stats(self, action: str, identity: str) -> list[tuple[str, int, float]]:
        """Each limit of ``action`` for ``identity``: its name, units left and reset time
        (``limits``' ``get_window_stats``)."""
        table = self._classes[action]
        slot = table.slots.get(identity)
        now = self._clock()
        if slot is None:
            return [(c.limit.name, c.limit.amount, now) for c in table.counters]
        stats = []
        for counters in table.counters:
            remaining, reset_at = counters.stats(np.array([slot]), now)
            stats.append((counters.limit.name, int(remaining[0]), float(reset_at[0])))
        return stats

    def slots_in_use(self, action: str) -> int:
        """How many identities of ``action`` hold a slot."""
        return len(self._classes[action].slots)

    async def admit_groups(
        self, groups: Sequence[tuple[str, Sequence[tuple[str, int]]]], gate: bool = False
    ) -> list[dict[int, Admission] | None]:
        """Each group decided here at once (no call per group to await), as
        :func:`~recloop.adapters.ratelimit.groups.admit_each` decides them (an empty
        group: nothing to decide)."""
        decided: list[dict[int, Admission] | None] = []
        for action, asks in groups:
            if gated(decided, gate):
                decided.append(None)
            else:
                decided.append(self.decide(action, asks) if asks else {})
        return decided

    async def forget(self, identity: str, actions: Sequence[str]) -> None:
        for action in actions:
            table = self._classes.get(action)
            if table is not None:
                table.forget(identity)

    async def close(self) -> None:
        return None
