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


def end_shares_by_masks(stats: ItemStats) -> list[np.ndarray]:
    """:meth:`ItemStats.end_shares` as it was written first (a mask over every item per
    bin): the oracle of the slices it takes now."""
    from recloop.core.spam import (
        _END_BINS,
        RATING_MAX,
        RATING_MIN,
        _end_bin,
        _median,
        _other_mean,
    )

    table = built_whole(stats)
    n, total, top, bottom = table[:, 0], table[:, 1], table[:, 3], table[:, 4]
    counted = n >= 5
    out = []
    for ends, value in ((top, RATING_MAX), (bottom, RATING_MIN)):
        bins = _end_bin(_other_mean(total, n, ends, value))
        hits = np.bincount(bins, weights=ends, minlength=_END_BINS)
        trials = np.bincount(bins, weights=n, minlength=_END_BINS)
        tau2 = np.zeros(_END_BINS)
        per_bin = np.bincount(bins[counted], minlength=_END_BINS).tolist()
        for b in range(_END_BINS):
            width = next(
                (w for w in range(_END_BINS - 1) if sum(per_bin[max(b - w, 0) : b + w + 1]) >= 10),
                _END_BINS - 1,
            )
            if sum(per_bin[max(b - width, 0) : b + width + 1]) >= 3:
                mine = (np.abs(bins - b) <= width) & counted
                share = ends[mine] / n[mine]
                centre = _median(share)
                noise = centre * (1 - centre) / n[mine]
                spread = _median((share - centre) ** 2) / 0.455
                tau2[b] = max(spread - _median(noise), 0.0)
        out.append(np.vstack([hits, trials, tau2]))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_the_end_shares_are_those_of_a_mask_per_bin(seed: int) -> None:
    rng = random.Random(seed)
    stats = ItemStats()
    items = rng.choice([4, 30, 300])
    skew = [rng.random() for _ in range(items)]  # items' own share of top ratings
    for _ in range(rng.choice([20, 400, 4000])):
        k = rng.randrange(items)
        value = 5.0 if rng.random() < skew[k] else float(rng.choice([1, 2, 3, 3.5, 4]))
        stats.add_rating(f"i{k}", value)
    for mine, oracle in zip(stats.end_shares(), end_shares_by_masks(stats), strict=True):
        assert mine.tobytes() == oracle.tobytes()
