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

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from limits import parse_many

from recloop.core.ratelimit import Admission, Limit, WindowCounters, admit


def limits_of(spec: str) -> list[Limit]:
    """A class's limits from ``limits``' notation (``"60/minute;1000/day"``)."""
    return [Limit(str(item), item.amount, item.get_expiry()) for item in parse_many(spec)]


class _Class:
    """One class's identities, slots and counters."""

    __slots__ = ("counters", "free", "names", "next_sweep", "slots", "sweep_every")

    def __init__(self, limits: Sequence[Limit]) -> None:
        self.counters = [WindowCounters(limit) for limit in limits]
        self.slots: dict[str, int] = {}
        self.names: list[str | None] = []  # by slot; None when free
        self.free: list[int] = []
        self.sweep_every = min((limit.expiry for limit in limits), default=60)
        self.next_sweep = 0.0

    def slots_of(self, identities: Sequence[str]) -> np.ndarray:
        get = self.slots.get
        found = [get(identity, -1) for identity in identities]
        if -1 in found:
            for n, slot in enumerate(found):
                if slot == -1:
                    found[n] = self._assign(identities[n])
        return np.array(found, np.int64)

    def _assign(self, identity: str) -> int:
        slot = self.slots.get(identity)  # asked twice in one batch
        if slot is not None:
            return slot
        if not self.free:
            start = len(self.names)
            capacity = max(64, 2 * start)
            for counters in self.counters:
                counters.grow(capacity)
            self.names.extend([None] * (capacity - start))
            self.free.extend(range(capacity - 1, start - 1, -1))
        slot = self.free.pop()
        self.slots[identity] = slot
        self.names[slot] = identity
        return slot

    def sweep(self, now: float) -> None:
        """Free the slots none of whose counters is still effective."""
        self.next_sweep = now + self.sweep_every
        if not self.slots:
            return
        live = np.zeros(len(self.names), np.bool_)
        for counters in self.counters:
            live |= counters.live(now)
        used = np.fromiter((name is not None for name in self.names), np.bool_, len(self.names))
        dead = np.flatnonzero(used & ~live)
        if not len(dead):
            return
        for counters in self.counters:
            counters.clear(dead)
        names, slots = self.names, self.slots
        for slot in dead.tolist():
            del slots[names[slot]]  # type: ignore[arg-type]
            names[slot] = None
        self.free.extend(dead.tolist())

    def forget(self, identity: str) -> None:
        slot = self.slots.pop(identity, None)
        if slot is None:
            return
        for counters in self.counters:
            counters.clear(np.array([slot]))
        self.names[slot] = None
        self.free.append(slot)


class MemoryRateLimiter:
    """:class:`recloop.ports.RateLimiter` in process (``rate_limits.storage: memory://``)."""

    shared = False

    def __init__(self, classes: Mapping[str, str], clock: Callable[[], float] = time.time) -> None:
        """``classes``: each class's limits in ``limits``' notation."""
        self._classes = {name: _Class(limits_of(spec)) for name, spec in classes.items()}
        self._clock = clock

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
        identities = [identity for identity, _ in asks]
        slots = table.slots_of(identities)
        costs = np.fromiter((count for _, count in asks), np.int64, len(asks))
        admitted, refused_by, reset_at = admit(table.counters, slots, costs, now)
        short = np.flatnonzero(refused_by >= 0)
        if not len(short):
            return {}
        names = [counters.limit.name for counters in table.counters]
        return {
            n: Admission(int(admitted[n]), names[refused_by[n]], float(reset_at[n]))
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

    async def forget(self, identity: str, actions: Sequence[str]) -> None:
        for action in actions:
            table = self._classes.get(action)
            if table is not None:
                table.forget(identity)

    async def close(self) -> None:
        return None
