"""Everyone is judged in bounded time: the guard's sweep of users with unjudged evidence."""

from __future__ import annotations

import asyncio

import pytest

from recloop.adapters.memory.store import InMemoryStateStore
from recloop.config import CacheSettings, SpamSettings
from recloop.core.events import Event
from recloop.services.guard import GuardService

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def rating(user: str, item: str, value: float, at: float) -> Event:
    return Event(
        event_id=f"{user}-{item}-{at}", user_id=user, item_id=item, type="rating",
        timestamp=at, value=value,
    )  # fmt: skip


def genuine_ratings(users: int = 40, items: int = 30) -> list[Event]:
    """A population of moderate raters, 12 ratings each, an hour apart."""
    out = []
    for u in range(users):
        for k in range(12):
            item = (u * 7 + k * 3) % items
            value = float(2 + (u + item) % 3)  # 2..4
            out.append(rating(f"g{u}", f"i{item}", value, T0 - 86_400 + u * 60 + k * 3600))
    return out


def attacker(items: int = 30) -> list[Event]:
    """Love/hate with 11 ratings sent seconds apart: ten fillers at 5, the target at 1."""
    events = [rating("mallory", f"i{k}", 5.0, T0 + 2.0 * k) for k in range(1, 11)]
    return [*events, rating("mallory", "i0", 1.0, T0 + 22.0)]


async def test_an_attacker_with_eleven_ratings_who_stops_is_judged() -> None:
    clock = Clock()
    store = InMemoryStateStore()
    guard = GuardService(
        store,
        SpamSettings(judge_within_seconds=60.0),
        max_users=CacheSettings().max_users,
        clock=clock,
    )
    await guard.observe(genuine_ratings())
    await guard.observe(attacker())
    # 11 events: under the 20 that the count schedule waits for, so not judged yet
    assert guard.reliability("mallory") == guard.fresh_score
    assert await guard.sweep() == 0  # just arrived: not quiet yet
    clock.now += 30.0  # half of judge_within_seconds: quiet now
    assert await guard.sweep() >= 1
    assert guard.reliability("mallory") is None  # suspect or blocked: not learnt from
    stored = {r.user_id: r for r in await store.get_reliability()}
    assert stored["mallory"].status in {"suspect", "blocked"}
    assert guard.pending() == 0
    assert await guard.sweep() == 0  # nothing new: nobody judged twice


async def test_the_sweep_judges_everyone_with_new_evidence_and_only_them() -> None:
    clock = Clock()
    guard = GuardService(
        InMemoryStateStore(), SpamSettings(), max_users=CacheSettings().max_users, clock=clock
    )
    await guard.observe(genuine_ratings(users=10))
    assert guard.pending() == 10
    clock.now += 31.0
    assert await guard.sweep() == 10
    # a user who keeps sending is not quiet, and is judged once they stop
    await guard.observe([rating("g1", "i5", 4.0, T0 + 40.0)])
    clock.now += 10.0
    await guard.observe([rating("g1", "i6", 3.0, T0 + 50.0)])
    clock.now += 25.0
    assert await guard.sweep() == 0
    clock.now += 5.0
    assert await guard.sweep() == 1


async def test_the_sweep_runs_by_itself_and_stops() -> None:
    guard = GuardService(
        InMemoryStateStore(),
        SpamSettings(judge_within_seconds=0.08),
        max_users=CacheSettings().max_users,
    )
    await guard.start()
    try:
        await guard.observe(attacker())
        assert guard.pending() == 1
        for _ in range(100):  # at most 2 s; judged within 0.06 s of the events
            if not guard.pending():
                break
            await asyncio.sleep(0.02)
        assert guard.pending() == 0
        assert guard.reliability("mallory") != guard.fresh_score
    finally:
        await guard.stop()
    await guard.stop()  # twice is harmless


async def test_an_erased_user_leaves_the_sweep() -> None:
    clock = Clock()
    guard = GuardService(
        InMemoryStateStore(), SpamSettings(), max_users=CacheSettings().max_users, clock=clock
    )
    await guard.observe(attacker())
    guard.forget("mallory")
    clock.now += 60.0
    assert await guard.sweep() == 0
    assert guard.pending() == 0


async def test_each_user_swept_gets_the_score_and_status_judge_gives_them_alone() -> None:
    """The sweep grades its users from the table's columns, 500 at a time; a report judges
    one user the per-user way (``judge`` on their view). Nobody is judged before the sweep
    (no count schedule, no hard rules), so both see the same evidence, norms and groups:
    each user's score, and whether they are held, must agree."""
    from .test_spam_grade import population

    clock = Clock()
    settings = SpamSettings(
        judge_every_events=10**9,
        min_new_events=10**9,
        max_actions_per_second=1e9,
        max_explicit_per_second=1e9,
    )
    guard = GuardService(
        InMemoryStateStore(), settings, max_users=CacheSettings().max_users, clock=clock
    )
    events = population(3, users=700)
    await guard.observe(
        [
            Event(
                event_id=f"e{k}",
                user_id=e.user,
                item_id=e.item,
                type=e.type,
                timestamp=e.t,
                value=e.value,
                text=e.text,
            )
            for k, e in enumerate(events)
        ]
    )
    users = sorted({e.user for e in events})
    assert guard.pending() == len(users)
    clock.now += 31.0
    assert await guard.sweep() == len(users)
    swept = {u: guard.reliability(u) for u in users}
    statuses = set()
    for user in users:
        report = await guard.report(user)
        statuses.add(report["status"])
        assert (swept[user] is None) == (report["status"] != "trusted"), user
        if swept[user] is not None:
            assert swept[user] == pytest.approx(report["score"], abs=1e-9), user
    assert statuses == {"trusted", "suspect", "blocked"}
