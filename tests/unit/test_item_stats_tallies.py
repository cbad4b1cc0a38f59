"""``ItemStats``' tallies array is kept up to date from the items changed (not rebuilt
whole at each read): after any sequence of ratings added, removed, replaced, statistics
merged and copied, it equals the array built from scratch (the former way, the oracle),
row for row in the items' order, and so do the population tables read from it."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from recloop.core.spam import ItemStats


def built_whole(stats: ItemStats) -> np.ndarray:
    """The tallies as :meth:`ItemStats._tallies` used to build them, from every item."""
    rows = stats._items.values()
    flat = np.fromiter(itertools.chain.from_iterable(rows), np.float64, 5 * len(rows))
    return flat.reshape(-1, 5)


def fresh_copy(stats: ItemStats) -> ItemStats:
    """The same statistics in an ItemStats that never read its tallies before."""
    clone = ItemStats()
    clone.merge(stats)
    return clone


@pytest.mark.parametrize("seed", range(12))
def test_the_tallies_read_equal_those_built_whole(seed: int) -> None:
    rng = random.Random(seed)
    stats = ItemStats()
    held: list[tuple[str, float]] = []  # (item, value) of the ratings counted
    items = [f"i{k}" for k in range(rng.choice([3, 40, 400]))]
    reads = 0
    for _ in range(1500):
        op = rng.random()
        if op < 0.55 or not held:
            item, value = rng.choice(items), float(rng.randint(1, 5))
            stats.add_rating(item, value)
            held.append((item, value))
        elif op < 0.75:
            item, value = held.pop(rng.randrange(len(held)))
            stats.remove_rating(item, value)  # may drop the item: its last rating
        elif op < 0.85:
            k = rng.randrange(len(held))
            item, old = held[k]
            new = float(rng.randint(1, 5))
            stats.replace_rating(item, old, new)
            held[k] = (item, new)
        elif op < 0.88:
            other = ItemStats()
            for _ in range(rng.randint(0, 5)):
                item, value = rng.choice(items), float(rng.randint(1, 5))
                other.add_rating(item, value)
                held.append((item, value))
            stats.merge(other)
        elif op < 0.9:
            stats = stats.copy()
        else:
            reads += 1
            got = stats._tallies()
            assert got.tobytes() == built_whole(stats).tobytes()
            # the population tables computed from the kept rows (their caches dropped:
            # they are refreshed only as ratings grow) are those of a fresh read
            stats._ranks = stats._ends = None
            fresh = fresh_copy(stats)
            ranks, again = stats.log_ranks(), fresh.log_ranks()
            assert ranks.table == again.table and ranks.unranked == again.unranked
            assert ranks.floor.tobytes() == again.floor.tobytes()
            for mine, theirs in zip(stats.end_shares(), fresh.end_shares(), strict=True):
                assert mine.tobytes() == theirs.tobytes()
    assert reads > 50
