"""Sliding-window rate limits over arrays: ``limits``' sliding-window counter, batched.

A limit allows ``amount`` units per ``expiry`` seconds. Time is cut into windows
of ``expiry`` seconds (window ``int(now / expiry)``); each identity has one counter
per window. The count a new ask is checked against is the current window's count
plus the previous window's, weighted by the part of the previous window still
inside the sliding period::

    weighted = previous * previous_ttl / expiry + current
    previous_ttl = (1 - ((now - expiry) / expiry) % 1) * expiry     (0 if previous == 0)

and an ask of ``cost`` units is admitted when ``floor(weighted) + cost <= amount``.
This is exactly ``limits``' ``SlidingWindowCounterRateLimiter`` over its
``MemoryStorage`` (``acquire_sliding_window_entry``, ``get_sliding_window`` and
``get_window_stats``), the same float operations in the same order, so the
decisions are bit-for-bit the library's: a differential test keeps the library
as the oracle. A counter lives ``2 * expiry`` seconds from its first unit, as
the library's keys do.

:class:`WindowCounters` holds one limit's counters for every identity in dense
slots (the caller maps identities to slots): each slot keeps two windows, the
newest it was charged in and the one before. :func:`admit` decides a batch of
asks over a class's limits the way recloop's rate limits always have:

- each limit is hit in order with the ask's whole cost; the first that refuses
  stops the ask (the limits before it stay charged: ``limits`` has no atomic
  hit of several limits);
- a refused ask is then admitted in part: as many units as every limit from the
  refusing one on still has room for (the tightest of them names the refusal
  and its reset time), charged to each of those limits.

Asks of the same slot in one batch are decided in order (in rounds: the first
ask of each slot, then the second...), asks of distinct slots together.

The clock is assumed not to step back by a whole window: a slot keeps two
windows, and if the clock goes back to a window it no longer holds, that
window counts as empty (``limits`` keeps every key until it expires).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from recloop.core.runs import run_sizes, run_starts

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Admission:
    """How many of the asked units were admitted; if not all, which limit stopped them
    and when it next has room (``reset_at``, epoch seconds)."""

    admitted: int
    limit: str | None = None
    reset_at: float | None = None


@dataclass(frozen=True, slots=True)
class Limit:
    """``amount`` units per ``expiry`` seconds; ``name`` is how refusals name it
    (``limits``' ``str(item)``, e.g. ``"60 per 1 minute"``)."""

    name: str
    amount: int
    expiry: int


_COLUMNS = ("_a_id", "_a_count", "_a_expires", "_b_id", "_b_count", "_b_expires")


class WindowCounters:
    """One limit's sliding-window counters, one slot per identity.

    Each slot holds two windows (id, count, expiry time): ``a`` and ``b``, in no
    fixed order. A window's count is effective while its expiry time is in the
    future, as a ``limits`` memory key is.

    Examples
    --------
    >>> counters = WindowCounters(Limit("3 per 1 minute", 3, 60), capacity=2)
    >>> slots = np.array([0, 1])
    >>> counters.acquire(slots, np.array([2, 4]), now=600.0).tolist()  # 4 > 3: refused
    [True, False]
    >>> counters.acquire(slots[:1], np.array([2]), now=610.0).tolist()  # 2 + 2 > 3
    [False]
    >>> remaining, reset_at = counters.stats(slots, now=610.0)
    >>> remaining.tolist(), reset_at.tolist()
    ([1, 3], [660.0, 610.0])
    >>> counters.acquire(slots[:1], np.array([2]), now=690.0).tolist()  # 2 * 30/60 + 0 + 2
    [True]
    """

    __slots__ = (
        "_a_count", "_a_expires", "_a_id", "_b_count", "_b_expires", "_b_id", "_cells", "limit",
    )  # fmt: skip

    def __init__(self, limit: Limit, capacity: int = 0) -> None:
        self.limit = limit
        self._a_id: Ints = np.full(capacity, -1, np.int64)
        self._a_count: Ints = np.zeros(capacity, np.int64)
        self._a_expires: Floats = np.zeros(capacity, np.float64)
        self._b_id: Ints = np.full(capacity, -1, np.int64)
        self._b_count: Ints = np.zeros(capacity, np.int64)
        self._b_expires: Floats = np.zeros(capacity, np.float64)
        self._cells: tuple[Any, ...] | None = None

    @property
    def capacity(self) -> int:
        """How many slots the arrays hold."""
        return len(self._a_id)

    def grow(self, capacity: int) -> None:
        """Make room for ``capacity`` slots (the new ones empty); never shrinks."""
        extra = capacity - self.capacity
        if extra <= 0:
            return
        self._a_id = np.concatenate([self._a_id, np.full(extra, -1, np.int64)])
        self._a_count = np.concatenate([self._a_count, np.zeros(extra, np.int64)])
        self._a_expires = np.concatenate([self._a_expires, np.zeros(extra, np.float64)])
        self._b_id = np.concatenate([self._b_id, np.full(extra, -1, np.int64)])
        self._b_count = np.concatenate([self._b_count, np.zeros(extra, np.int64)])
        self._b_expires = np.concatenate([self._b_expires, np.zeros(extra, np.float64)])
        self._cells = None

    def cells(self) -> tuple[Any, ...]:
        """The six columns as memoryviews (a ids, counts, expiry times, then b's), for
        the one-slot paths: an element of a memoryview is read and written as a Python
        number, several times cheaper than ``ndarray.item`` and ``ndarray.__setitem__``.
        Made again once :meth:`grow` replaced the arrays."""
        if self._cells is None:
            self._cells = tuple(memoryview(getattr(self, name)) for name in _COLUMNS)
        return self._cells

    def clear(self, slots: Ints) -> None:
        """Forget the slots' counters (a freed or erased identity)."""
        self._a_id[slots] = -1
        self._a_count[slots] = 0
        self._b_id[slots] = -1
        self._b_count[slots] = 0

    def live(self, now: float) -> Bools:
        """Per slot: whether any of its counts is still effective at ``now`` (an idle
        slot stays empty from then on, while the clock moves forward)."""
        return ((self._a_count > 0) & (self._a_expires > now)) | (
            (self._b_count > 0) & (self._b_expires > now)
        )

    def window(self, slots: Ints, now: float) -> tuple[Ints, Floats, Ints, float]:
        """``MemoryStorage.get_sliding_window``: per slot the previous window's count,
        its weight in seconds (its remaining time; 0 if empty), the current window's
        count, and (one for all) the current window's remaining time plus ``expiry``.

        >>> counters = WindowCounters(Limit("10 per 1 minute", 10, 60), capacity=1)
        >>> _ = counters.acquire(np.array([0]), np.array([4]), now=50.0)
        >>> previous, previous_ttl, current, current_ttl = counters.window(np.array([0]), 75.0)
        >>> previous.tolist(), previous_ttl.tolist(), current.tolist(), current_ttl
        ([4], [45.0], [0], 105.0)
        """
        expiry = self.limit.expiry
        # MemoryStorage.get of each window's key: its count while it has not expired
        a_id, b_id = self._a_id[slots], self._b_id[slots]
        a_count = np.where(self._a_expires[slots] > now, self._a_count[slots], 0)
        b_count = np.where(self._b_expires[slots] > now, self._b_count[slots], 0)
        window = int((now - expiry) / expiry)
        previous: Ints = np.where(a_id == window, a_count, 0) + np.where(b_id == window, b_count, 0)
        window = int(now / expiry)
        current: Ints = np.where(a_id == window, a_count, 0) + np.where(b_id == window, b_count, 0)
        weight = (1 - (((now - expiry) / expiry) % 1)) * expiry
        previous_ttl: Floats = np.where(previous == 0, 0.0, weight)
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous, previous_ttl, current, current_ttl

    def acquire(self, slots: Ints, costs: Ints, now: float) -> Bools:
        """``MemoryStorage.acquire_sliding_window_entry`` for each (distinct) slot:
        admit ``cost`` units if the weighted count has room, and charge them.

        >>> counters = WindowCounters(Limit("2 per 1 second", 2, 1), capacity=3)
        >>> counters.acquire(np.array([0, 1, 2]), np.array([1, 2, 3]), now=5.0).tolist()
        [True, True, False]
        """
        if len(slots) == 1:  # one ask (a one-event request): the same arithmetic in scalars
            return np.array([self._acquire_one(int(slots[0]), int(costs[0]), now)])
        limit = self.limit
        expiry, amount = limit.expiry, limit.amount
        previous, previous_ttl, current, _ = self.window(slots, now)
        base = previous * previous_ttl / expiry
        ok = (costs <= amount) & (np.floor(base + current) + costs <= amount)
        # limits increments, then re-checks with the new count (a concurrent hit may have
        # won) and reverts: in process only float rounding can make the re-check fail.
        ok &= np.floor(base + (current + costs)) <= amount
        if not ok.any():
            return ok
        self._charge(slots[ok], costs[ok], now)
        return ok

    def _acquire_one(self, slot: int, cost: int, now: float) -> bool:
        """:meth:`acquire` of one slot with Python numbers: the same operations in the
        same order as the array path (IEEE doubles either way), without its fixed cost
        of some forty numpy calls."""
        plan = self.room_plan(slot, cost, now)
        if plan >= 0:
            self.charge_planned(slot, cost, now, plan)
        return plan >= 0

    def room_plan(self, slot: int, cost: int, now: float) -> int:
        """Whether :meth:`acquire` would admit ``cost`` units for ``slot`` now, and how
        to charge them: -1 if there is no room; else ``2 * held + side``, the count the
        window to charge holds (0 for a window not held yet, or expired) and which of the
        slot's two windows that is (0: ``a``, 1: ``b``), so that :meth:`charge_planned`
        reads nothing again. Nothing is charged."""
        limit = self.limit
        expiry, amount = limit.expiry, limit.amount
        if cost > amount:
            return -1
        window = int(now / expiry)
        before = int((now - expiry) / expiry)
        cells = self._cells or self.cells()
        a_ids, a_counts, a_expires, b_ids, b_counts, b_expires = cells
        a_id, b_id = a_ids[slot], b_ids[slot]
        # Only the windows held matter (a memoryview's element: a Python number).
        a_count = a_counts[slot] if a_id in (window, before) and a_expires[slot] > now else 0
        b_count = b_counts[slot] if b_id in (window, before) and b_expires[slot] > now else 0
        previous = (a_count if a_id == before else 0) + (b_count if b_id == before else 0)
        current = (a_count if a_id == window else 0) + (b_count if b_id == window else 0)
        if previous == 0:
            base = 0.0
        else:
            weight = (1 - (((now - expiry) / expiry) % 1)) * expiry
            base = previous * weight / expiry
        if (
            math.floor(base + current) + cost > amount
            or math.floor(base + (current + cost)) > amount
        ):
            return -1
        # :meth:`_charge`'s choice: the window held, else the older of the two replaced
        if a_id == window:
            return 2 * a_count
        if b_id == window:
            return 2 * b_count + 1
        return 0 if a_id < b_id else 1

    def charge_planned(self, slot: int, cost: int, now: float, plan: int) -> None:
        """Charge ``cost`` units to ``slot`` as :meth:`room_plan` planned at ``now``."""
        expiry = self.limit.expiry
        side = 3 * (plan & 1)
        ids, counts, expires = (self._cells or self.cells())[side : side + 3]
        held = plan >> 1
        ids[slot] = int(now / expiry)
        counts[slot] = held + cost
        if held == 0:
            expires[slot] = now + 2 * expiry

    def _charge(self, slots: Ints, costs: Ints, now: float) -> None:
        """Add ``costs`` to the slots' current window (``MemoryStorage.incr``: a count
        that was empty restarts its expiry at ``now + 2 * expiry``)."""
        expiry = self.limit.expiry
        window = int(now / expiry)
        a_id, b_id = self._a_id[slots], self._b_id[slots]
        in_a = a_id == window
        in_b = ~in_a & (b_id == window)
        # A window not held yet replaces the older of the two held: with the clock moving
        # forward, later asks consult this window and its predecessor only, and the
        # predecessor, if held, is the newer of the two.
        new = ~in_a & ~in_b
        into_a = in_a | (new & (a_id < b_id))
        into_b = ~into_a
        a_slots, b_slots = slots[into_a], slots[into_b]
        a_cost, b_cost = costs[into_a], costs[into_b]
        a_fresh, b_fresh = new[into_a], new[into_b]  # a new window starts empty
        self._add(self._a_id, self._a_count, self._a_expires, a_slots, a_cost, a_fresh, window, now)
        self._add(self._b_id, self._b_count, self._b_expires, b_slots, b_cost, b_fresh, window, now)

    def _add(
        self,
        ids: Ints,
        counts: Ints,
        expires: Floats,
        slots: Ints,
        costs: Ints,
        fresh: Bools,
        window: int,
        now: float,
    ) -> None:
        if not len(slots):
            return
        effective = np.where(fresh | (expires[slots] <= now), 0, counts[slots])
        ids[slots] = window
        counts[slots] = effective + costs
        expires[slots] = np.where(effective == 0, now + 2 * self.limit.expiry, expires[slots])

    def stats(self, slots: Ints, now: float) -> tuple[Ints, Floats]:
        """``SlidingWindowCounterRateLimiter.get_window_stats``: per slot the units
        left (``amount - floor(weighted)``, at least 0) and when the weighted count
        next drops (``now`` if both windows are empty).

        >>> counters = WindowCounters(Limit("4 per 1 minute", 4, 60), capacity=1)
        >>> _ = counters.acquire(np.array([0]), np.array([3]), now=30.0)
        >>> remaining, reset_at = counters.stats(np.array([0]), now=70.0)  # 3 * 50/60
        >>> remaining.tolist(), reset_at.tolist()
        ([2], [80.0])
        """
        expiry = self.limit.expiry
        previous, previous_ttl, current, current_ttl = self.window(slots, now)
        weighted = previous * previous_ttl / expiry + current
        remaining: Ints = np.maximum(0, self.limit.amount - np.floor(weighted)).astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            previous_reset = np.where(
                previous > 0, np.remainder(previous_ttl, expiry / previous), math.inf
            )
        current_reset = np.where(current > 0, current_ttl % expiry, math.inf)
        reset_at: Floats = np.where(
            (previous > 0) | (current > 0), now + np.minimum(previous_reset, current_reset), now
        )
        return remaining, reset_at


def admit(
    counters: Sequence[WindowCounters], slots: Ints, costs: Ints, now: float
) -> tuple[Ints, Ints, Floats]:
    """Decide each ask ``(slot, cost)`` over a class's limits, in order.

    Returns per ask the units admitted, the index of the limit that refused it (the
    tightest from the first refusing one on; -1 if admitted in full) and that
    limit's reset time (NaN if admitted in full). See the module docstring for the
    rules; the counters are charged.

    Examples
    --------
    >>> minute, day = Limit("3 per 1 minute", 3, 60), Limit("5 per 1 day", 5, 86400)
    >>> counters = [WindowCounters(minute, 2), WindowCounters(day, 2)]
    >>> day_start = 20_000 * 86400.0
    >>> admitted, refused_by, reset_at = admit(
    ...     counters, np.array([0, 1, 0]), np.array([2, 1, 4]), now=day_start + 10
    ... )
    >>> admitted.tolist(), refused_by.tolist(), reset_at.tolist()[2]  # 2 + 1 fill the minute
    ([2, 1, 1], [-1, -1, 0], 1728000060.0)
    >>> later = day_start + 600  # the minute has room for 3; the day for 5 - 3
    >>> admitted, refused_by, _ = admit(counters, np.array([0]), np.array([4]), now=later)
    >>> admitted.tolist(), refused_by.tolist()
    ([2], [1])
    """
    n = len(slots)
    admitted = costs.copy()
    refused_by: Ints = np.full(n, -1, np.int64)
    reset_at: Floats = np.full(n, np.nan)
    if n == 0:
        return admitted, refused_by, reset_at
    if n == 1 and admit_one(counters, int(slots[0]), int(costs[0]), now):
        return admitted, refused_by, reset_at
    capacity = max((c.capacity for c in counters), default=0)
    for asks in _rounds(slots, max(capacity, int(slots.max()) + 1)):
        _admit_round(counters, slots, costs, asks, now, admitted, refused_by, reset_at)
    return admitted, refused_by, reset_at


def admit_one(counters: Sequence[WindowCounters], slot: int, cost: int, now: float) -> bool:
    """One ask that every limit admits, decided and charged in Python numbers (without
    :func:`admit`'s fixed cost in numpy calls); False, and nothing charged, otherwise."""
    if len(counters) == 1:  # one limit (the usual key and implicit classes)
        return counters[0]._acquire_one(slot, cost, now)
    plans = []
    for c in counters:
        plan = c.room_plan(slot, cost, now)
        if plan < 0:
            return False
        plans.append(plan)
    for c, plan in zip(counters, plans, strict=True):
        c.charge_planned(slot, cost, now, plan)
    return True


def _rounds(slots: Ints, capacity: int) -> list[Ints]:
    """The asks' indices in rounds of distinct slots: each slot's first ask, its second..."""
    everything = np.arange(len(slots))
    if len(slots) < 2:
        return [everything]
    last = np.empty(capacity, np.int64)  # each slot's last ask (O(asks): never filled)
    last[slots] = everything
    if (last[slots] == everything).all():
        return [everything]  # the common case: no slot asked twice
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    starts = np.flatnonzero(run_starts(ordered))
    sizes = run_sizes(starts, len(slots))
    rank = np.empty(len(slots), np.int64)
    rank[order] = everything - np.repeat(starts, sizes)
    return [np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1)]


def _admit_round(
    counters: Sequence[WindowCounters],
    slots: Ints,
    costs: Ints,
    asks: Ints,
    now: float,
    admitted: Ints,
    refused_by: Ints,
    reset_at: Floats,
) -> None:
    """Asks of distinct slots: hit each limit in order; then the refused asks' parts."""
    first_refusal = np.full(len(asks), len(counters), np.int64)  # by position in ``asks``
    pending = np.arange(len(asks))
    for j, limit in enumerate(counters):
        if not len(pending):
            break
        ok = limit.acquire(slots[asks[pending]], costs[asks[pending]], now)
        first_refusal[pending[~ok]] = j
        pending = pending[ok]
    refused = np.flatnonzero(first_refusal < len(counters))
    if not len(refused):
        return
    at = first_refusal[refused]
    refused_asks = asks[refused]
    refused_slots, refused_costs = slots[refused_asks], costs[refused_asks]
    remaining = np.empty((len(counters), len(refused)), np.int64)
    resets = np.empty((len(counters), len(refused)), np.float64)
    for j, limit in enumerate(counters):
        remaining[j], resets[j] = limit.stats(refused_slots, now)
    # Only the limits from the refusing one on count; the first of the tightest wins.
    considered = np.arange(len(counters))[:, None] >= at[None, :]
    tightest = np.argmin(np.where(considered, remaining, np.iinfo(np.int64).max), axis=0)
    columns = np.arange(len(refused))
    allowed = np.maximum(0, np.minimum(remaining[tightest, columns], refused_costs))
    for j, limit in enumerate(counters):
        charge = (at <= j) & (allowed > 0)
        if charge.any():
            limit.acquire(refused_slots[charge], allowed[charge], now)
    admitted[refused_asks] = allowed
    refused_by[refused_asks] = tightest
    reset_at[refused_asks] = resets[tightest, columns]
