"""The retraction reads only the part of the log where the flagged users can be (#17).

Service level, on the in-memory adapters: a long history of other users, then a
new user who clicks what an algorithm recommended and is blocked. The read starts
above the history (the offset logged before the user's first event), and what it
takes back is what a read of the whole log finds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore
from recloop.config import BanditSettings, CacheSettings, Settings, SpamSettings
from recloop.core.contribution import attributed_counts
from recloop.core.events import Event
from recloop.core.preferences import Preferences
from recloop.core.segments import SEGMENTS
from recloop.services.guard import GuardService
from recloop.services.optimizer import Optimizer
from recloop.services.retraction import Retraction, RetractionConfig

ALGORITHMS = frozenset({"pop"})


def clicks(user: str, first: int, n: int, at: float, gap: float = 1.0) -> list[Event]:
    return [
        Event(
            f"{user}-{k}",
            user,
            f"i{k % 5}",
            "click",
            at + gap * k,
            attribution={"algorithm": "pop"},
        )
        for k in range(first, first + n)
    ]


async def test_a_new_users_events_are_read_above_the_history() -> None:
    log = InMemoryEventLog()
    store = InMemoryStateStore()
    history = [e for u in range(50) for e in clicks(f"old{u}", 0, 20, time.time() - 3600)]
    await log.append(history)
    before = await log.last_offset()
    await asyncio.sleep(0.01)
    first_at = time.time()
    mine = clicks("new", 0, 30, first_at, gap=0.001)
    await log.append(mine)
    await log.append(clicks("old1", 20, 5, time.time()))
    await asyncio.sleep(0.05)  # the flag comes after the user's events

    def live(user_id: str) -> Preferences | None:
        if user_id != "new":
            return None
        return Preferences("new", np.zeros(4), 30, 0, 30, 0, first_at, first_at + 0.029, None)

    guard = GuardService(store, SpamSettings(), max_users=CacheSettings().max_users)
    bandit = BanditSettings(
        algorithms=sorted(ALGORITHMS),
        default_weights={s: dict.fromkeys(ALGORITHMS, 1.0) for s in SEGMENTS},
    )
    optimizer = Optimizer(store, bandit)
    config = replace(
        RetractionConfig.of(Settings(bandit=bandit)),
        max_future_seconds=0.0,
        clock_slack_seconds=0.0,
    )
    retraction = Retraction(log, guard, optimizer, config, store, live)
    await guard.set_manual("new", True, "test")
    assert await retraction.refresh() == 1
    assert retraction.last_read_after == before  # none of the history was read
    assert retraction.left_out() == frozenset({"new"})
    whole = attributed_counts(mine, ALGORITHMS, config.bucket_seconds)
    assert sorted(map(tuple, whole)) == sorted(
        (r.segment, r.algorithm, r.bucket_start, r.counts)
        for r in await retraction.contribution("new")
    )
    assert sum(r.counts.clicks for r in await retraction.contribution("new")) == 30

    # A user known to no state: the whole log is read.
    await guard.set_manual("old2", True, "test")
    assert await retraction.refresh() == 1
    assert retraction.last_read_after == 0
    assert retraction.left_out() == frozenset({"new", "old2"})
