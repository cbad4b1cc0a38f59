"""A user's evidence keeps exactly the latest actions it promises, in little memory."""

from __future__ import annotations

import itertools
import tracemalloc

from recloop.core.spam import SpamConfig, UserActivity


def test_the_latest_actions_are_kept_past_the_limit() -> None:
    config = SpamConfig(recent_actions=16)
    activity = UserActivity(config)
    for n in range(1_000):
        kind = "click" if n % 3 else "view"
        activity.observe(kind, f"i{n}", None, 1_000.0 + n * 2.0 + (n % 7) * 0.01)
    assert activity.recent_items() == [hash(f"i{n}") for n in range(984, 1_000)]
    rate, kept = activity.recent_rate()
    assert kept == 16
    assert rate == 15 / (
        (1_000.0 + 999 * 2.0 + 999 % 7 * 0.01) - (1_000.0 + 984 * 2.0 + 984 % 7 * 0.01)
    )
    # both types hold 16: the tie goes to the alphabetically last, views
    intervals = activity.intervals()
    views = [1_000.0 + n * 2.0 + (n % 7) * 0.01 for n in range(1_000) if n % 3 == 0][-16:]
    assert intervals.tolist() == [b - a for a, b in itertools.pairwise(views)]


def test_a_user_with_one_event_takes_little_memory() -> None:
    config = SpamConfig()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    users = []
    for u in range(2_000):
        activity = UserActivity(config)
        activity.observe("like", f"i{u}", None, 1_000.0)
        users.append(activity)
    per_user = (tracemalloc.get_traced_memory()[0] - before) / len(users)
    tracemalloc.stop()
    assert per_user < 2_000, per_user  # bytes; deques made it about 3,600
