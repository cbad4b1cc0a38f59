"""The population statistics' faster paths against the simple versions they replaced.

``ItemStats.end_shares`` finds each bin's neighbourhood from per-bin counts,
``ItemStats.note_items`` pairs only the items not seen yet, and
``ItemStats.note_profile_lengths`` sums a batch of profile-length changes at once;
each is held here to the straightforward code it replaced (kept below as the
oracle), on random populations, for identical results.
"""

from __future__ import annotations

import numpy as np
import pytest

from recloop.core.events import RATING_MAX, RATING_MIN
from recloop.core.spam import CATALOGUE_CAP, ItemStats, _end_bin, _other_mean

_BINS = 8


def end_shares_reference(stats: ItemStats) -> tuple[np.ndarray, np.ndarray]:
    """``end_shares`` as it was: each bin's width found by widening one step at a time."""
    table = np.array([stats.tallies([i])[0] for i in stats._items], np.float64).reshape(-1, 5)
    n, total, top, bottom = table[:, 0], table[:, 1], table[:, 3], table[:, 4]
    out = []
    for ends, value in ((top, RATING_MAX), (bottom, RATING_MIN)):
        bins = _end_bin(_other_mean(total, n, ends, value))
        hits = np.bincount(bins, weights=ends, minlength=_BINS)
        trials = np.bincount(bins, weights=n, minlength=_BINS)
        tau2 = np.zeros(_BINS)
        for b in range(_BINS):
            for width in range(_BINS):
                mine = (np.abs(bins - b) <= width) & (n >= 5)
                if mine.sum() >= 10 or width == _BINS - 1:
                    break
            if mine.sum() >= 3:
                share = ends[mine] / n[mine]
                centre = float(np.median(share))
                noise = centre * (1 - centre) / n[mine]
                spread = float(np.median((share - centre) ** 2)) / 0.455
                tau2[b] = max(spread - float(np.median(noise)), 0.0)
        out.append(np.vstack([hits, trials, tau2]))
    return out[0], out[1]


@pytest.mark.parametrize("seed", range(40))
def test_end_shares_match_the_one_step_widening(seed: int) -> None:
    rng = np.random.default_rng(seed)
    stats = ItemStats()
    items = int(rng.choice([1, 3, 12, 40, 300]))
    # skewed item popularity and per-item rating habits, so that bins fill unevenly
    popularity = rng.dirichlet(np.full(items, float(rng.choice([0.2, 1.0, 5.0]))))
    habit = rng.uniform(RATING_MIN, RATING_MAX, items)
    for _ in range(int(rng.integers(1, 4_000))):
        i = int(rng.choice(items, p=popularity))
        value = float(np.clip(np.round(rng.normal(habit[i], 1.2) * 2) / 2, RATING_MIN, RATING_MAX))
        stats.add_rating(f"i{i}", value)
    top, bottom = stats.end_shares()
    expected_top, expected_bottom = end_shares_reference(stats)
    assert np.array_equal(top, expected_top)
    assert np.array_equal(bottom, expected_bottom)


def note_items_reference(stats: ItemStats, items: list[str], users: list[str]) -> None:
    """``note_items`` with users, as it was: every distinct pair of the batch considered."""
    seen, once = stats._seen, stats._named_once
    if len(seen) >= CATALOGUE_CAP or seen.issuperset(items):
        return
    pairs = dict.fromkeys(zip(items, users, strict=True))
    for item, user in [p for p in pairs if p[0] not in seen]:
        first = once.setdefault(item, hash(user))
        if first != hash(user):
            seen.add(item)
            del once[item]
    if len(once) > 4 * CATALOGUE_CAP:
        once.clear()


@pytest.mark.parametrize("seed", range(20))
def test_note_items_matches_pairing_every_event(seed: int) -> None:
    rng = np.random.default_rng(seed)
    fast, slow = ItemStats(), ItemStats()
    catalogue = int(rng.choice([5, 50, 3 * CATALOGUE_CAP]))
    users = int(rng.choice([1, 3, 200]))
    for _ in range(30):
        size = int(rng.integers(1, 400))
        items = [f"i{k}" for k in rng.integers(0, catalogue, size).tolist()]
        named = [f"u{k}" for k in rng.integers(0, users, size).tolist()]
        fast.note_items(items, named)
        note_items_reference(slow, items, named)
        assert fast._seen == slow._seen
        assert fast._named_once == slow._named_once


def test_note_items_refuses_unmatched_users() -> None:
    with pytest.raises(ValueError, match="2 item_ids but 1 user_ids"):
        ItemStats().note_items(["a", "b"], ["u"])


@pytest.mark.parametrize("seed", range(10))
def test_profile_lengths_summed_at_once_match_one_at_a_time(seed: int) -> None:
    rng = np.random.default_rng(seed)
    batched, single = ItemStats(), ItemStats()
    lengths = np.zeros(50, np.int64)
    for _ in range(20):
        changes = []
        for user in rng.integers(0, 50, int(rng.integers(1, 100))).tolist():
            old = int(lengths[user])
            new = max(old + int(rng.choice([-1, 1, 1, 1])), 0)
            lengths[user] = new
            if new != old:
                changes.append((old, new))
        batched.note_profile_lengths(changes)
        for old, new in changes:
            single.note_profile_length(old, new)
        assert batched.profile_lengths == single.profile_lengths
