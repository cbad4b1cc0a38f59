"""The guard keeps at most ``max_users`` users' evidence, making room by recency."""

from __future__ import annotations

import asyncio

import numpy as np

from recloop.adapters.memory.store import InMemoryStateStore
from recloop.config import CacheSettings, SpamSettings
from recloop.core.events import Event
from recloop.services import guard as guard_module
from recloop.services.guard import GuardService

T0 = 1_700_000_000.0


def click(user: str, item: str, at: float) -> Event:
    return Event(
        event_id=f"{user}-{item}-{at}", user_id=user, item_id=item, type="click", timestamp=at
    )


def test_the_least_recently_active_users_make_room() -> None:
    guard = GuardService(InMemoryStateStore(), SpamSettings(), max_users=3, clock=lambda: T0)

    async def scenario() -> None:
        await guard.observe([click("a", "i1", T0), click("b", "i1", T0), click("c", "i1", T0)])
        await guard.observe([click("a", "i2", T0 + 1)])  # a is the most recent now
        await guard.observe([click("d", "i1", T0 + 2)])  # b, the least recent, goes
        assert guard.held_users() == {"a", "c", "d"}
        assert guard.evidence("b") is None
        held = guard.evidence("a")
        assert held is not None and held.events == 2
        # b comes back with no evidence of before; c makes room this time
        await guard.observe([click("b", "i9", T0 + 3)])
        assert guard.held_users() == {"a", "d", "b"}
        back = guard.evidence("b")
        assert back is not None and (back.events, back.clicks) == (1, 1)
        guard.forget("a")
        assert guard.held_users() == {"d", "b"}
        await guard.observe([click("e", "i1", T0 + 4), click("a", "i1", T0 + 4)])
        assert guard.held_users() == {"b", "e", "a"}
        fresh = guard.evidence("a")
        assert fresh is not None and fresh.events == 1

    asyncio.run(scenario())


def test_reliabilities_are_reliability_for_a_batch() -> None:
    guard = GuardService(
        InMemoryStateStore(),
        SpamSettings(judge_every_events=3),
        max_users=CacheSettings().max_users,
        clock=lambda: T0,
    )

    async def scenario() -> None:
        await guard.observe([click("judged", f"i{k}", T0 + k * 30.0) for k in range(3)])
        await guard.observe([click("fresh", "i1", T0)])
        await guard.set_manual("held", blocked=True, reason=None)
        await guard.set_manual("cleared", blocked=False, reason=None)

    asyncio.run(scenario())
    users = ["judged", "fresh", "held", "cleared", "unknown", "judged"]
    one_by_one = [guard.reliability(u) for u in users]
    assert one_by_one[2] is None and one_by_one[3] == 100.0
    assert one_by_one[4] == one_by_one[1] == guard.fresh_score
    batch = guard.reliabilities(users).tolist()
    assert [None if b != b else b for b in batch] == one_by_one


def test_a_user_of_the_batch_is_never_the_one_to_make_room() -> None:
    guard = GuardService(InMemoryStateStore(), SpamSettings(), max_users=2, clock=lambda: T0)

    async def scenario() -> None:
        await guard.observe([click("x", "i1", T0)])
        await guard.observe([click("y", "i1", T0 + 1)])
        # x is the least recently active, but it is in this batch: y makes room for z
        await guard.observe([click("x", "i2", T0 + 2), click("z", "i1", T0 + 2)])
        assert guard.held_users() == {"x", "z"}
        held = guard.evidence("x")
        assert held is not None and held.events == 2

    asyncio.run(scenario())


def test_reliabilities_before_any_evidence() -> None:
    guard = GuardService(InMemoryStateStore(), SpamSettings(), max_users=10, clock=lambda: T0)
    assert guard.reliabilities(["x", "y"]).tolist() == [guard.fresh_score] * 2
    asyncio.run(guard.set_manual("x", blocked=True, reason=None))
    held, fresh = guard.reliabilities(["x", "y"]).tolist()
    assert held != held and fresh == guard.fresh_score  # NaN: held


def test_opening_a_few_users_one_by_one_is_opening_them_together() -> None:
    """New users' slots set one by one (up to ``_FEW``) hold what a vectorised opening
    sets: the same bookkeeping, the same evidence table's incarnations."""
    names = [f"u{k}" for k in range(11)]
    guards = [
        GuardService(InMemoryStateStore(), SpamSettings(), max_users=100, clock=lambda: T0)
        for _ in range(2)
    ]
    together, one_by_one = guards
    assert len(names) > guard_module._FEW
    together._open(names)
    for k in range(0, len(names), 3):  # rounds of up to 3 new users
        one_by_one._open(names[k : k + 3])
    for column in ("_since", "_judged_at", "_next_after", "_score", "_touched", "_pending_at"):
        a, b = getattr(together, column), getattr(one_by_one, column)
        assert np.array_equal(a[: len(names)], b[: len(names)], equal_nan=True), column
    assert together._names == one_by_one._names
    assert together._table.uid[: len(names)].tolist() == list(range(len(names)))
    assert one_by_one._table.uid[: len(names)].tolist() == list(range(len(names)))
