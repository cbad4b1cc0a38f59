"""The in-process rate-limit path decides exactly as ``limits``' own limiter and storage."""

from __future__ import annotations

import random
import time

import pytest
from limits import parse, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from recloop.services.limits import RateLimits, _Limit, _LoopMemoryStorage


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """``time.time`` for limits' strategies and both storages (they all call it)."""
    fake = Clock(1_800_000_000.0)
    monkeypatch.setattr(time, "time", fake)
    return fake


@pytest.mark.parametrize("identity", ["u", "user/with/slashes", "ünï", "a b", ""])
def test_split_key_is_limits_own_key(identity: str) -> None:
    for item in parse_many("60/minute;1000/day;5 per 2 hours"):
        limit = _Limit.of(item, "explicit")
        assert f"{limit.prefix}{identity}{limit.suffix}" == item.key_for("explicit", identity)
        assert (limit.amount, limit.expiry) == (item.amount, item.get_expiry())


async def test_same_decisions_as_upstream_storage_and_limiter(clock: Clock) -> None:
    """Random asks over a few users and minutes: every admission (how many, which limit
    refused) equals what the upstream limiter on upstream's MemoryStorage decides."""
    spec = "7/minute;20/hour"
    ours = RateLimits({"explicit": spec})
    upstream = SlidingWindowCounterRateLimiter(MemoryStorage())
    items = parse_many(spec)
    rng = random.Random(7)
    refusals = 0
    for _ in range(2_000):
        clock.now += rng.choice([0.0, 0.5, 3.0, 17.0, 61.0])
        user, count = f"u{rng.randrange(4)}", rng.randint(1, 4)
        got = await ours.admit("explicit", user, count)
        want = _upstream_admit(upstream, items, user, count)
        assert (got.admitted, got.limit) == want
        refusals += got.limit is not None
    upstream.storage.timer.cancel()
    assert refusals > 100  # the sequence exercised refusals, not only admissions


def _upstream_admit(
    lim: SlidingWindowCounterRateLimiter, items: list, user: str, count: int
) -> tuple[int, str | None]:
    """The documented ``limits`` way: hit each limit in order; on a refusal admit what
    every remaining limit has room for."""
    for n, item in enumerate(items):
        if not lim.hit(item, "explicit", user, cost=count):
            stats = [lim.get_window_stats(i, "explicit", user) for i in items]
            remaining, tightest = min(
                ((stats[k].remaining, items[k]) for k in range(n, len(items))),
                key=lambda s: s[0],
            )
            allowed = max(0, min(remaining, count))
            if allowed:
                for later in items[n:]:
                    lim.hit(later, "explicit", user, cost=allowed)
            return allowed, str(tightest)
    return count, None


def test_expired_windows_are_dropped_as_the_clock_moves(clock: Clock) -> None:
    """Memory stays bounded by the active users: each window's key goes once it expires,
    without a sweep thread."""
    storage = _LoopMemoryStorage()
    lim = SlidingWindowCounterRateLimiter(storage)
    minute = parse("10/minute")
    for n in range(1_000):
        assert lim.hit(minute, "implicit", f"user-{n}")
    assert len(storage.storage) == len(storage.expirations) == 1_000
    clock.now += 2 * 60 + 1  # past the window's twice-the-period expiry
    assert lim.hit(minute, "implicit", "late-user")
    assert (
        set(storage.storage)
        == set(storage.expirations)
        == {key for key in storage.storage if "late-user" in key}
    )
    assert len(storage.storage) == 1
    assert not storage.timer.is_alive()


def test_clear_forgets_a_user(clock: Clock) -> None:
    storage = _LoopMemoryStorage()
    lim = SlidingWindowCounterRateLimiter(storage)
    minute = parse("2/minute")
    assert lim.hit(minute, "explicit", "u", cost=2)
    assert not lim.hit(minute, "explicit", "u")
    lim.clear(minute, "explicit", "u")
    assert lim.hit(minute, "explicit", "u", cost=2)
