"""Population-level detection: norms of what is usual, and groups of new, similar profiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from benchmarks.spam_textbook import TextbookSizes, TextbookWorld

from recloop.adapters.memory.store import InMemoryStateStore
from recloop.config import CacheSettings, SpamSettings
from recloop.core.events import Event
from recloop.core.spam import SpamConfig
from recloop.core.spam_groups import GroupRule, Profile, find_groups
from recloop.core.spam_norms import ProfileNorms
from recloop.services.guard import GuardService

DAY = 86_400.0


def crowd(users: int = 300, seed: int = 0) -> dict[str, Profile]:
    """Genuine raters arriving over 60 days, 15 to 45 ratings over 200 items."""
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(users):
        n = int(rng.integers(15, 46))
        items = rng.choice(200, size=n, replace=False)
        values = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], size=n, p=[0.05, 0.1, 0.25, 0.3, 0.3])
        out[f"g{u}"] = Profile(
            dict(zip((f"i{i}" for i in items), values.tolist(), strict=True)),
            float(rng.uniform(0, 60)) * DAY,
        )
    return out


def attackers(count: int, size: int, at: float, seed: int = 1) -> dict[str, Profile]:
    rng = np.random.default_rng(seed)
    out = {}
    for a in range(count):
        fillers = rng.choice(np.arange(1, 200), size=size - 1, replace=False)
        ratings = {f"i{i}": float(rng.integers(2, 5)) for i in fillers}
        ratings["t"] = 5.0
        out[f"a{a}"] = Profile(ratings, at + 30.0 * a)
    return out


def test_a_group_of_new_similar_profiles_on_one_item_is_found() -> None:
    profiles = crowd()
    for u in list(profiles)[:12]:  # a little-known item, most of its raters unimpressed
        p = profiles[u]
        profiles[u] = Profile({**p.ratings, "t": 5.0 if u == "g0" else 2.0}, p.first_at)
    profiles.update(attackers(8, 12, 61 * DAY))
    found = find_groups(profiles, GroupRule())
    assert set(found) == {f"a{k}" for k in range(8)}
    reading = found["a0"]
    assert (reading.item_id, reading.top, reading.size) == ("t", True, 8)
    assert reading.p_value < 1e-9 and reading.purity > 0.95


def test_a_popular_item_that_attackers_also_rate_is_no_group() -> None:
    # the item's genuine raters at the top outnumber the attackers: no group on it
    profiles = crowd()
    attack = attackers(8, 12, 61 * DAY)
    for a, p in attack.items():
        attack[a] = Profile(
            {**{k: v for k, v in p.ratings.items() if k != "t"}, "i0": 5.0}, p.first_at
        )
    profiles.update(attack)
    assert find_groups(profiles, GroupRule()) == {}


def test_ordinary_raters_of_a_popular_item_are_no_group() -> None:
    assert find_groups(crowd(), GroupRule()) == {}


def test_a_launch_day_is_no_group() -> None:
    # 150 genuine users arrive within an hour and rate like everyone else
    launch = crowd(users=150, seed=3)
    for k, (u, p) in enumerate(list(launch.items())):
        launch[u] = Profile(p.ratings, 10 * DAY + 20.0 * k)
    profiles = {**crowd(), **{f"l{u}": p for u, p in launch.items()}}
    assert find_groups(profiles, GroupRule()) == {}


def test_too_few_attackers_are_no_group() -> None:
    profiles = {**crowd(), **attackers(4, 12, 61 * DAY)}
    assert find_groups(profiles, GroupRule()) == {}


def test_norms_gate_what_the_population_makes_usual() -> None:
    rng = np.random.default_rng(0)
    pairs = zip(rng.normal(0.5, 0.1, 300), rng.normal(0.5, 0.1, 300), strict=True)
    rows = [{"extremity": float(x), "agreement": float(y)} for x, y in pairs]
    norms = ProfileNorms.fit(rows, [20] * 300)
    assert norms.gate("extremity", 0.6, 20) == 0.0  # ordinary here
    assert norms.gate("extremity", 1.0, 20) == 1.0
    assert 0.0 < norms.gate("extremity", 0.5 + 0.1 * 3.0, 20) < 1.0
    assert norms.gate("agreement", 0.0, 20) == 1.0  # its unusual side is the low one
    assert norms.gate("agreement", 1.0, 20) == 0.0
    assert norms.gate("extremity", math.nan, 20) == 1.0


def as_events(world_events: list[tuple]) -> list[Event]:
    return [
        Event(event_id=f"e{k}", user_id=u, item_id=i, type=t, timestamp=ts, value=v)
        for k, (ts, u, t, i, v, _) in enumerate(sorted(world_events, key=lambda e: e[0]))
    ]


@pytest.mark.parametrize("model", ["random", "average"])
async def test_the_guard_flags_a_small_profile_attack_through_its_sweep(model: str) -> None:
    world = TextbookWorld(TextbookSizes(users=300), seed=5, config=SpamConfig())
    world.build()
    attack, bad = world.attackers(model, 0.05, 0.03, "bot", 1)  # 15 profiles of 10 ratings
    assert all(9 <= len([e for e in attack if e[1] == u]) <= 11 for u in bad)
    now = [0.0]
    guard = GuardService(
        InMemoryStateStore(),
        SpamSettings(),
        max_users=CacheSettings().max_users,
        clock=lambda: now[0],
    )
    events = as_events(world.genuine + attack)
    for start in range(0, len(events), 500):
        await guard.observe(events[start : start + 500])
        now[0] += 1.0
    now[0] += 60.0
    await guard.sweep()  # norms, groups, and everyone still unjudged
    now[0] += 60.0
    await guard.sweep()  # judged again against the norms of the first sweep
    assert all(guard.reliability(u) is None for u in bad)  # suspect or blocked
    alarms = [u for u in world.genuine_ids if guard.reliability(u) is None]
    assert len(alarms) <= 3  # FPR <= 1 %


def test_a_group_is_pure_against_the_items_ordinary_raters_not_all_of_them() -> None:
    """Nine attackers arriving over four days are nine of the ten raters at the top of
    their target; only a week's box holds them, and it holds an eighth of the crowd's
    ratings. Chance puts an eighth of the item's *ordinary* raters in the box (one rater:
    0.125), not an eighth of all ten (1.25): the group is nearly pure. Its tail is above
    1e-9 but below the family's level over the boxes that could be tested."""
    profiles = crowd()
    for u in list(profiles)[:12]:
        p = profiles[u]
        profiles[u] = Profile({**p.ratings, "t": 5.0 if u == "g0" else 2.0}, p.first_at)
    attack = attackers(9, 30, 0.0)
    profiles.update({a: Profile(p.ratings, (30.0 + 0.5 * k) * DAY) for k, (a, p) in
                     enumerate(attack.items())})  # fmt: skip
    found = find_groups(profiles, GroupRule())
    assert set(found) == {f"a{k}" for k in range(9)}
    reading = found["a0"]
    assert reading.share > 0.1 and (reading.size - reading.expected) / reading.size < 0.9
    assert reading.purity > 0.95
    assert reading.p_value > 1e-9
    assert find_groups(profiles, GroupRule(family_alpha=0.0)) == {}  # 1e-9 alone: none


def test_raters_of_a_second_item_the_attackers_rate_share_no_group_with_them() -> None:
    """A segment attack rates its target and a few popular items of its genre at the top.
    Three genuine raters who rated one of those items at the top, arrived when the
    attackers did and rate as many items, are in its box; the attackers, members of the
    target's group too, explain the box, and the three alone are no group."""
    profiles = crowd()
    for u in list(profiles)[:12]:
        p = profiles[u]
        profiles[u] = Profile({**p.ratings, "t": 2.0}, p.first_at)
    attack = attackers(8, 12, 61 * DAY)
    for a, p in attack.items():
        attack[a] = Profile({**p.ratings, "s": 5.0}, p.first_at)
    profiles.update(attack)
    genuine = [u for u in list(profiles)[12:] if "s" not in profiles[u].ratings][:3]
    for k, u in enumerate(genuine):
        p = profiles[u]
        ratings = dict(list(p.ratings.items())[:11])
        profiles[u] = Profile({**ratings, "s": 5.0}, 61 * DAY + 50.0 * k)
    found = find_groups(profiles, GroupRule())
    assert set(found) == {f"a{k}" for k in range(8)}
