"""Behaviour signals relative to the catalogue: re-viewing a small catalogue is normal."""

from __future__ import annotations

import math

import numpy as np
import pytest
from benchmarks.spam_small import evaluate

from recloop.core.spam import (
    CATALOGUE_CAP,
    TRUSTED,
    ItemStats,
    SpamConfig,
    UserActivity,
    excess_repeats,
    item_diversity,
    judge,
    signals,
)

T0 = 1_700_000_000.0


def regular_of(catalogue: int, seed: int = 1) -> UserActivity:
    """Three sessions a day for a month in a shop of ``catalogue`` items, favourites first."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(catalogue, 1.0))
    activity = UserActivity()
    for day in range(30):
        for session in range(3):
            t = T0 + day * 86_400.0 + (9 + 5 * session) * 3600.0 + float(rng.uniform(0, 1800))
            for _ in range(3):
                item = f"i{int(rng.choice(catalogue, p=weights))}"
                activity.observe("impression", item, None, t)
                t += float(rng.lognormal(math.log(6.0), 0.8))
                activity.observe("click", item, None, t)
                activity.observe("view", item, None, t + 0.4)
                dwell = float(rng.lognormal(math.log(30.0), 1.0))
                t += 0.4 + dwell
                activity.observe("dwell", item, dwell, t)
                t += float(rng.lognormal(math.log(20.0), 1.0))
    return activity


def catalogue_of(size: int) -> ItemStats:
    stats = ItemStats()
    stats.note_items(f"i{i}" for i in range(size))
    return stats


def test_a_heavy_user_of_a_small_catalogue_is_not_repetitive() -> None:
    user = regular_of(10)
    assert user.actions > 700
    small = signals(user, catalogue_of(10), SpamConfig(), now=user.last_at)
    assert not small["repeated_item"].fired
    assert not small["item_diversity"].fired
    assert judge(user, catalogue_of(10), SpamConfig(), now=user.last_at).status == TRUSTED
    # the same behaviour in a catalogue of a thousand items is a bot hammering ten
    large = signals(user, catalogue_of(1000), SpamConfig(), now=user.last_at)
    assert large["repeated_item"].fired
    assert large["item_diversity"].fired


def test_a_hammer_is_repetitive_in_a_small_catalogue_too() -> None:
    hammer = UserActivity()
    for k in range(300):
        hammer.observe("click", "i1" if k % 10 else "i2", None, T0 + 60.0 * k)
    found = signals(hammer, catalogue_of(20), SpamConfig(), now=hammer.last_at)
    assert found["repeated_item"].fired
    assert found["item_diversity"].fired


def test_excess_repeats_matches_uniform_choice() -> None:
    rng = np.random.default_rng(4)
    k, m = 12, 80
    draws = rng.integers(0, k, (2000, m))
    observed = np.mean([1 - len(set(row)) / m for row in draws.tolist()])
    expected = 1 - k * (1 - (1 - 1 / k) ** m) / m
    assert observed == pytest.approx(expected, abs=0.005)
    # a uniform chooser's repeats are what the catalogue forces: about 0 excess
    repeats = round(observed * m)
    assert excess_repeats(repeats, m, 1, k) < 0.05
    assert excess_repeats(repeats, m, 1, 0) == pytest.approx(repeats / m)
    assert math.isnan(excess_repeats(0, 0, 1, k))


def test_item_diversity_reaches_one_on_an_even_spread_over_the_catalogue() -> None:
    assert item_diversity([f"i{k % 10}" for k in range(200)], catalogue=10) == pytest.approx(1.0)
    assert item_diversity([f"i{k % 10}" for k in range(200)]) < 0.5
    assert math.isnan(item_diversity(["a", "a", "a"], catalogue=1))


def test_the_catalogue_count_is_bounded() -> None:
    stats = ItemStats()
    stats.note_items(f"i{k}" for k in range(CATALOGUE_CAP + 50))
    stats.note_items(["more"])
    assert stats.catalogue == CATALOGUE_CAP + 50  # one batch may pass the cap ...
    before = stats.catalogue
    stats.note_items(["later"])
    assert stats.catalogue == before  # ... then nothing more is added
    assert stats.copy().catalogue == before


def test_the_small_catalogue_world_has_no_false_positives() -> None:
    report = evaluate(seed=3, users=200, days=14.0, bots=5)
    assert 10 <= report.items <= 50
    assert report.heavy_min_actions > 150  # heavy users re-view a lot
    assert report.flagged <= 2  # FPR <= 1 %
    assert "repeated_item" not in report.fired
    assert all(flagged == n for n, flagged in report.bots.values())


def test_made_up_item_ids_of_one_bot_do_not_inflate_the_catalogue() -> None:
    """An item counts once two distinct users named it: a bot naming 5,000 made-up ids
    leaves the catalogue at the shop's 10 items, and the shop's heavy regular trusted."""
    stats = ItemStats()
    shoppers = [f"s{k}" for k in range(30)]
    for k in range(300):
        stats.note_items([f"i{k % 10}"], [shoppers[k % 30]])
    fake = [f"made-up-{k}" for k in range(5_000)]
    stats.note_items(fake, ["bot"] * len(fake))
    stats.note_items(fake[:100], ["bot"] * 100)  # the same bot again: still one user
    assert stats.catalogue == 10
    user = regular_of(10)
    found = signals(user, stats, SpamConfig(), now=user.last_at)
    assert not found["repeated_item"].fired and not found["item_diversity"].fired
    # Without the users (the former rule), the bot's ids made the regular repetitive.
    inflated = catalogue_of(10)
    inflated.note_items(fake)
    assert inflated.catalogue == 5_010
    assert signals(user, inflated, SpamConfig(), now=user.last_at)["repeated_item"].fired
    # A second user naming one of the ids makes it an item.
    stats.note_items([fake[0]], ["ann"])
    assert stats.catalogue == 11
