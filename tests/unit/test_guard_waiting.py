"""The processor's rounds let a few users due wait one round for their judgement
(``GuardService.observe(..., wait_for_more=True)``): never longer, never a hard rule's."""

from __future__ import annotations

import asyncio

from recloop.adapters.memory.store import InMemoryStateStore
from recloop.config import SpamSettings
from recloop.core.events import Event
from recloop.services import guard as guard_module
from recloop.services.guard import GuardService

T0 = 1_700_000_000.0


def clicks(user: str, n: int, start: float, every: float = 30.0) -> list[Event]:
    return [
        Event(f"{user}-{start}-{k}", user, f"i{k}", "click", start + k * every) for k in range(n)
    ]


def a_guard() -> GuardService:
    return GuardService(
        InMemoryStateStore(), SpamSettings(judge_every_events=3), max_users=10_000, clock=lambda: T0
    )


def test_a_few_users_due_are_judged_with_the_next_round() -> None:
    guard = a_guard()

    async def scenario() -> None:
        await guard.observe(clicks("a", 3, T0), wait_for_more=True)
        assert guard.pending() == 1  # a is due, and waits
        await guard.observe(clicks("b", 1, T0), wait_for_more=True)
        assert guard.pending() == 1  # a judged with this round; b not due
        await guard.observe(clicks("c", 3, T0), wait_for_more=True)
        assert guard.pending() == 2
        await guard.judge_waiting()  # the rounds paused
        assert guard.pending() == 1  # b only
        await guard.observe(clicks("d", 3, T0))  # without wait_for_more: judged at once
        assert guard.pending() == 1

    asyncio.run(scenario())


def test_a_hard_rule_is_judged_at_once() -> None:
    guard = a_guard()

    async def scenario() -> None:
        burst = clicks("bot", 40, T0, every=0.01)  # 40 events in 0.4 s
        await guard.observe(burst, wait_for_more=True)
        assert guard.pending() == 0
        assert guard.blocked("bot") is not None

    asyncio.run(scenario())


def test_enough_users_due_are_judged_at_once() -> None:
    guard = a_guard()
    users = [f"u{k}" for k in range(guard_module._JUDGE_AT_ONCE)]

    async def scenario() -> None:
        await guard.observe([e for u in users for e in clicks(u, 3, T0)], wait_for_more=True)
        assert guard.pending() == 0

    asyncio.run(scenario())


def test_a_user_forgotten_while_waiting_is_not_judged() -> None:
    guard = a_guard()

    async def scenario() -> None:
        await guard.observe(clicks("a", 3, T0), wait_for_more=True)
        guard.forget("a")
        await guard.observe(clicks("b", 1, T0), wait_for_more=True)  # b takes a's slot
        await guard.judge_waiting()
        assert guard.pending() == 1  # b's one event: not due, not judged

    asyncio.run(scenario())
