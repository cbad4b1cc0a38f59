"""The in-process limiter over arrays decides exactly as ``limits``' own limiter and storage.

The oracle is ``limits``' ``SlidingWindowCounterRateLimiter`` over its
``MemoryStorage``, driven the documented way (hit each limit in order; on a
refusal, admit what every remaining limit has room for). Both read the same
fake clock, so admitted counts, refusing limits and reset times must be equal
to the bit.
"""

from __future__ import annotations

import random
import time
from unittest.mock import ANY

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from recloop.adapters.ratelimit.groups import admit_each
from recloop.adapters.ratelimit.memory import SCALAR_MAX, MemoryRateLimiter
from recloop.core.ratelimit import Admission, Limit, WindowCounters, admit
from recloop.services.limits import RateLimits


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """``time.time`` for limits' strategy and storage, and the clock of ours."""
    fake = Clock(1_800_000_000.0)
    monkeypatch.setattr(time, "time", fake)
    return fake


class Upstream:
    """``limits``' own limiter over its own memory storage, asked as recloop asks."""

    def __init__(self, classes: dict[str, str]) -> None:
        self.storage = MemoryStorage()
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        self.items = {name: parse_many(spec) for name, spec in classes.items()}

    def admit(self, action: str, identity: str, count: int) -> Admission:
        items: list[RateLimitItem] = self.items[action]
        lim = self.limiter
        for n, item in enumerate(items):
            if not lim.hit(item, action, identity, cost=count):
                stats = [lim.get_window_stats(i, action, identity) for i in items]
                tightest = min(range(n, len(items)), key=lambda k: stats[k].remaining)
                allowed = max(0, min(stats[tightest].remaining, count))
                if allowed:
                    for later in items[n:]:
                        lim.hit(later, action, identity, cost=allowed)
                return Admission(allowed, str(items[tightest]), stats[tightest].reset_time)
        return Admission(count)

    def admit_many(self, action: str, asks: list[tuple[str, int]]) -> dict[int, Admission]:
        decided = {n: self.admit(action, *ask) for n, ask in enumerate(asks)}
        return {n: a for n, a in decided.items() if a.limit is not None}

    def close(self) -> None:
        self.storage.timer.cancel()


CLASSES = {
    "explicit": "7/minute;20/hour",
    "implicit": "3 per 10 seconds;5/minute;12/hour",
    "key": "40 per 2 seconds",
}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_same_decisions_as_limits_memory_storage(clock: Clock, seed: int) -> None:
    """A few thousand random asks in batches: many users, counts above 1 and above the
    limits, several asks of one user in a batch, the clock crossing window boundaries
    (and sometimes idle past every counter's expiry)."""
    ours = MemoryRateLimiter(CLASSES, clock=clock)
    upstream = Upstream(CLASSES)
    rng = random.Random(seed)
    users = [f"user-{n}" for n in range(40)] + ["ünï/code", "a b", ""]
    asks_seen = partial = refused = 0
    try:
        for _ in range(700):
            clock.now += rng.choice([0.0, 0.0, 0.25, 0.5, 1.0, 1.7, 3.0, 9.9, 17.0, 61.0])
            if rng.random() < 0.01:
                clock.now += rng.choice([2 * 3600.0, 7200.5])
            action = rng.choice(list(CLASSES))
            asks = [
                (rng.choice(users[: rng.choice([3, 12, len(users)])]), rng.choice(_COUNTS))
                for _ in range(rng.randint(1, 9))
            ]
            got = await ours.admit_many(action, asks)
            want = upstream.admit_many(action, asks)
            assert got == want, (action, asks, clock.now)
            asks_seen += len(asks)
            partial += sum(1 for a in got.values() if a.admitted)
            refused += len(got)
    finally:
        upstream.close()
    assert asks_seen > 2_000
    assert refused > 300 and partial > 100  # refusals and part admissions were exercised


_COUNTS = [1, 1, 1, 2, 3, 4, 6, 9, 25, 50]


@pytest.mark.parametrize("seed", [4, 5])
async def test_small_requests_decided_one_by_one_as_over_arrays(clock: Clock, seed: int) -> None:
    """Requests of up to ``SCALAR_MAX`` asks are first decided in Python numbers, ask by
    ask, and fall back to the arrays from the first ask a limit refuses: the same
    decisions as the arrays alone (``scalar_max=0``) and as ``limits``, batches of 1 to
    70 asks (either side of the threshold), mostly admitted in full, sometimes refused
    part-way through."""
    classes = {"implicit": "20 per 10 seconds;50/minute;300/hour", "key": "500 per 2 seconds"}
    ours = MemoryRateLimiter(classes, clock=clock)
    arrays = MemoryRateLimiter(classes, clock=clock, scalar_max=0)
    upstream = Upstream(classes)
    rng = random.Random(seed)
    users = [f"user-{n}" for n in range(rng.choice([5, 15, 40]))]
    whole = fallback = 0
    try:
        for _ in range(600):
            clock.now += rng.choice([0.0, 0.0, 0.1, 0.5, 1.3, 4.0, 11.0, 61.0])
            action = rng.choice(list(classes))
            size = rng.choice([1, 2, 3, 8, 16, 63, 64, 65, 70])
            asks = [(rng.choice(users), rng.choice([1, 1, 1, 2, 5])) for _ in range(size)]
            got = await ours.admit_many(action, asks)
            assert got == await arrays.admit_many(action, asks), (action, asks, clock.now)
            assert got == upstream.admit_many(action, asks), (action, asks, clock.now)
            if size > 1 and size <= SCALAR_MAX:
                whole += not got
                fallback += bool(got) and min(got) > 0  # refused after a first admitted ask
    finally:
        upstream.close()
    assert whole > 50 and fallback > 10  # both ways through the scalar path were taken


async def test_rate_limits_in_process_decide_like_limits(clock: Clock) -> None:
    """Through the service (what ingest calls), one ask at a time."""
    limits = RateLimits(MemoryRateLimiter({"explicit": "7/minute;20/hour"}, clock=clock))
    upstream = Upstream({"explicit": "7/minute;20/hour"})
    rng = random.Random(7)
    try:
        for _ in range(1_000):
            clock.now += rng.choice([0.0, 0.5, 3.0, 17.0, 61.0])
            user, count = f"u{rng.randrange(4)}", rng.randint(1, 9)
            assert await limits.admit("explicit", user, count) == upstream.admit(
                "explicit", user, count
            )
    finally:
        upstream.close()


async def test_idle_identities_give_their_slots_back(clock: Clock) -> None:
    """Memory is bounded by the identities active in the last two windows of the
    longest limit: the others' slots are swept (once per shortest window) and reused."""
    ours = MemoryRateLimiter({"implicit": "10/minute;100/hour"}, clock=clock)
    await ours.admit_many("implicit", [(f"user-{n}", 1) for n in range(1_000)])
    assert ours.slots_in_use("implicit") == 1_000
    clock.now += 3600  # the hour's counters are still effective
    await ours.admit_many("implicit", [("late", 1)])
    assert ours.slots_in_use("implicit") == 1_001
    clock.now += 2 * 3600 + 1  # past every counter's expiry (twice the period)
    await ours.admit_many("implicit", [("later", 1)])
    assert ours.slots_in_use("implicit") == 1
    capacity = len(ours._classes["implicit"].names)
    await ours.admit_many("implicit", [(f"next-{n}", 1) for n in range(1_000)])
    assert len(ours._classes["implicit"].names) == capacity  # freed slots were reused
    assert ours.stats("implicit", "user-3") == [
        ("10 per 1 minute", 10, clock.now),
        ("100 per 1 hour", 100, clock.now),
    ]


async def test_forget_clears_an_identity(clock: Clock) -> None:
    ours = MemoryRateLimiter({"explicit": "2/minute"}, clock=clock)
    assert await ours.admit_many("explicit", [("u", 2)]) == {}
    assert (await ours.admit_many("explicit", [("u", 1)]))[0].admitted == 0
    await ours.forget("u", ["explicit", "implicit"])
    assert await ours.admit_many("explicit", [("u", 2)]) == {}


def test_asks_of_one_slot_in_a_batch_are_decided_in_order() -> None:
    counters = [WindowCounters(Limit("5 per 1 minute", 5, 60), 4)]
    now = 1_800_000_000.0
    admitted, refused_by, _ = admit(
        counters, np.array([2, 2, 3, 2, 2]), np.array([2, 2, 1, 2, 2]), now
    )
    assert admitted.tolist() == [2, 2, 1, 1, 0]
    assert refused_by.tolist() == [-1, -1, -1, 0, 0]


async def test_groups_are_decided_in_order_and_gated_on_the_first(clock: Clock) -> None:
    """A request: the API key's ask first; with ``gate``, the users' asks are decided
    (and charged) only if the key's is admitted in full."""
    ours = MemoryRateLimiter({"key": "10/minute", "explicit": "3/minute"}, clock=clock)
    clock.now += 15  # the current window ends in 45 s
    request = [("key", [("k", 6)]), ("explicit", [("u", 2), ("v", 5)])]
    assert await ours.admit_groups(request, gate=True) == [
        {},
        {1: Admission(3, "3 per 1 minute", clock.now)},  # v had nothing counted yet
    ]
    key, users = await ours.admit_groups(request, gate=True)
    assert key == {0: Admission(4, "10 per 1 minute", clock.now + 45)}
    assert users is None  # not decided: u and v were not charged
    assert ours.stats("explicit", "u")[0][1] == 1 and ours.stats("explicit", "v")[0][1] == 0
    key, users = await ours.admit_groups(request, gate=False)
    assert key == {0: Admission(0, "10 per 1 minute", clock.now + 45)}
    assert users == {0: Admission(1, "3 per 1 minute", clock.now + 45), 1: ANY}


async def test_groups_decided_as_admit_each_decides_them(clock: Clock) -> None:
    """The in-process ``admit_groups`` (its loop inline) against the rule every limiter
    shares, :func:`~recloop.adapters.ratelimit.groups.admit_each` over a twin limiter:
    random requests of the three classes, empty groups among them, gated or not."""
    classes = {
        "key": "12 per 5 seconds",
        "explicit": "3 per 5 seconds;5/minute",
        "implicit": "4/minute",
    }
    ours = MemoryRateLimiter(classes, clock=clock)
    twin = MemoryRateLimiter(classes, clock=clock)
    rng = random.Random(11)
    users = [f"u{n}" for n in range(6)]
    gated = 0
    for _ in range(800):
        clock.now += rng.choice([0.0, 0.0, 0.3, 1.1, 4.0, 30.0])
        groups = [("key", [("k", rng.choice([1, 1, 2, 5]))])] + [
            (
                action,
                [
                    (rng.choice(users), rng.choice([1, 1, 2]))
                    for _ in range(rng.choice([0, 0, 1, 1, 2, 4]))
                ],
            )
            for action in ("explicit", "implicit")
        ]
        gate = rng.random() < 0.8
        got = await ours.admit_groups(groups, gate)
        assert got == await admit_each(twin.admit_many, groups, gate), (groups, gate, clock.now)
        gated += got[-1] is None
    assert gated > 50  # the gate closed on some requests


@settings(max_examples=300, deadline=None)
@given(
    limit=st.sampled_from(
        [
            Limit("3 per 1 second", 3, 1),
            Limit("5 per 10 seconds", 5, 10),
            Limit("7 per 1 minute", 7, 60),
        ]
    ),
    steps=st.lists(
        st.tuples(
            st.integers(0, 2),  # slot
            st.integers(1, 9),  # cost
            st.sampled_from([0.0, 0.0, 0.2, 0.5, 1.0, 3.0, 9.5, 10.0, 31.0, 130.0]),  # clock step
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_one_slot_acquired_as_over_arrays(
    limit: Limit, steps: list[tuple[int, int, float]]
) -> None:
    """The one-slot path (``room_plan`` then ``charge_planned``, on memoryviews) against
    the array path it replaces for a one-event request: the same decisions and, after
    each ask, the same two windows (id, count, expiry time) in every slot."""
    one, arrays = WindowCounters(limit, 4), WindowCounters(limit, 4)
    now = 1_800_000_000.0
    for slot, cost, step in steps:
        now += step
        got = one.acquire(np.array([slot]), np.array([cost]), now).tolist()
        # the array path: two asks (the spare slot 3 asks nothing), so no scalar shortcut
        want = arrays.acquire(np.array([slot, 3]), np.array([cost, 0]), now).tolist()[:1]
        assert got == want, (slot, cost, now)
        for name in ("_a_id", "_a_count", "_a_expires", "_b_id", "_b_count", "_b_expires"):
            assert getattr(one, name)[:3].tolist() == getattr(arrays, name)[:3].tolist(), name
