"""Group detection: an item that suddenly collects extreme ratings from a group of new,
similar profiles is evidence against the group.

Per-profile statistics cannot separate a profile of ten ratings drawn around
the system mean from a person's (docs/spam.md shows the distributions). What
every profile of one attack shares is its target: all rate it at the end of
the scale, all were made for the attack (they arrive together), and all are
made the same way (the same number of filler items). Chirita et al. (2005)
look for such groups by profile similarity, Williams et al. (2007) by the
target ("target model focus"). Here, for each item and each end of the scale:

1. ``R``: the item's raters at that end (5 or 1);
2. a *box* around one of them: first events within ``arrival`` seconds of
   theirs (for each width in ``GroupRule.arrivals``) and profile sizes within
   a factor ``exp(±length_log)`` of theirs; ``k`` of the ``|R|`` raters are
   inside it (the boxes that hold most are tested: attackers need not be
   most of an item's raters);
3. ``q``: the share of the ratings of the rest of the population (all but
   ``R``) that come from profiles inside the same box (rating-weighted, since
   a heavy rater is more likely to have rated any item). Were the item's
   raters at that end an ordinary sample of the population,
   ``k ~ Binomial(|R|, q)``;
4. the group is the ``k`` raters in the box when ``k >= min_size``, the box
   holds at least ``min_share`` of ``R`` (the group dominates the item's
   ratings at that end: the box of a popular item that a bandwagon attack
   also rates, where genuine raters outnumber the attackers, is none), and the
   binomial tail ``P(X >= k)`` is at most ``family_alpha`` divided by the
   number of boxes tested (Bonferroni: every item, both ends, every width and
   centre are tested, so ``family_alpha`` bounds the chance that any box of a
   population of ordinary raters passes), or at most ``alpha`` in any case; of
   the widths that pass, the one with the most raters inside. A box also holds
   the genuine raters chance puts there; the evidence against its members is
   weighted by the box's *purity* (:attr:`GroupReading.purity`), the share of
   its ``k`` raters that chance does not explain. Chance draws from the
   item's ordinary raters only: of ``|R|``, ``g`` are in the box by design and
   ``q (|R| - g)`` by chance, so ``k = g + q (|R| - g)`` and the purity is
   ``g / k = (k - q |R|) / (k (1 - q))``. A target's box is nearly pure, the
   box of a popular item that a bandwagon attack also rates is not.

So a launch day, on which many genuine profiles arrive together, raises
``q`` for its box rather than making a group; genuine raters of the item who
arrived at another time, or with a profile of another size, are outside the
box. An attack spread over months, with profile sizes drawn like people's,
is not a group by this definition (docs/spam.md, "What it cannot see").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom  # type: ignore[import-untyped]

from recloop.core.events import RATING_MAX, RATING_MIN

__all__ = ["GroupReading", "GroupRule", "Profile", "find_groups"]


@dataclass(frozen=True, slots=True)
class Profile:
    """What the group detector reads of one user."""

    ratings: Mapping[str, float]
    first_at: float


@dataclass(frozen=True, slots=True)
class GroupRule:
    """The group detector's numbers (``SpamConfig`` carries them; defaults there)."""

    min_size: int = 5
    arrivals: tuple[float, ...] = (86_400.0, 7 * 86_400.0)
    length_log: float = 0.3
    alpha: float = 1e-9
    """A tail that passes whatever the number of boxes tested."""
    min_share: float = 0.5
    centres: int = 3
    """Boxes tested per item, end and width: around the raters whose boxes hold most."""
    max_raters: int = 500
    """The latest raters at an end of an item that are looked at (O(raters²) each)."""
    family_alpha: float = 1e-3
    """A box passes when its tail is at most this divided by the number of boxes tested
    (0: ``alpha`` alone decides)."""


@dataclass(frozen=True, slots=True)
class GroupReading:
    """One user's purest group: the item, the end (top?), the binomial tail, the size
    ``k``, the number of the item's raters chance would put in the box were they all
    ordinary, ``q |R|``, and ``q``, the box's share of the rest's ratings."""

    item_id: str
    top: bool
    p_value: float
    size: int
    expected: float
    share: float = 0.0

    @property
    def purity(self) -> float:
        """``(k - q |R|) / (k (1 - q))``: the share of the box chance does not explain,
        so the probability that one member is in it by design rather than by chance.
        Chance draws from the item's ordinary raters, not from the whole of ``R``: of
        ``g`` raters by design, ``k = g + q (|R| - g)``.

        >>> GroupReading("t", True, 1e-9, 10, 1.0, 0.1).purity  # 10 = 9 + 0.1 * (19 - 9)
        1.0
        >>> round(GroupReading("t", True, 1e-9, 10, 3.0, 0.25).purity, 3)  # |R| 12: 9.33 + 0.67
        0.933
        """
        if not self.size or self.share >= 1.0:
            return 0.0
        return min(max(self.size - self.expected, 0.0) / (self.size * (1.0 - self.share)), 1.0)


def find_groups(profiles: Mapping[str, Profile], rule: GroupRule) -> dict[str, GroupReading]:
    """Every member of a group, with the purest group it belongs to (then the lowest tail).

    O(total ratings) to index the raters at the ends, then, per item and end
    with at least ``min_size`` such raters, O(raters²) and O(profiles) per
    tested box.

    >>> day = 86_400.0
    >>> ps = {f"g{k}": Profile({f"x{k % 7}": 5.0, "t": 2.0, f"y{k}": 3.0}, k * day / 3)
    ...       for k in range(200)}
    >>> ps.update({f"a{k}": Profile({"t": 5.0, f"f{k}": 3.0, f"h{k}": 3.0, f"j{k}": 4.0},
    ...            60 * day + 100 * k) for k in range(6)})
    >>> found = find_groups(ps, GroupRule())
    >>> sorted(found), found["a0"].item_id, found["a0"].size
    (['a0', 'a1', 'a2', 'a3', 'a4', 'a5'], 't', 6)
    """
    users = list(profiles)
    arrival = np.fromiter((profiles[u].first_at for u in users), np.float64, len(users))
    n = np.fromiter((len(profiles[u].ratings) for u in users), np.float64, len(users))
    size = np.log(np.maximum(n, 1.0))
    total = float(n.sum())
    raters: dict[tuple[str, bool], list[int]] = {}
    for index, user in enumerate(users):
        for item, value in profiles[user].ratings.items():
            if value >= RATING_MAX:
                raters.setdefault((item, True), []).append(index)
            elif value <= RATING_MIN:
                raters.setdefault((item, False), []).append(index)
    tested = 0
    candidates: list[tuple[str, bool, np.ndarray, tuple[int, float, np.ndarray, float, float]]]
    candidates = []
    for (item, top), members in raters.items():
        if len(members) < rule.min_size or total <= 0:
            continue
        idx = np.asarray(members[-rule.max_raters :])
        a, s = arrival[idx], size[idx]
        # the rest of the population: where chance puts ratings (the raters
        # themselves are left out, or a large attack would make its own box usual)
        rest = np.ones(len(users), dtype=bool)
        rest[np.asarray(members)] = False
        rest_total = float(n[rest].sum())
        if rest_total <= 0:
            continue
        same_size = np.abs(s[:, None] - s[None, :]) <= rule.length_log
        boxes_tested: list[tuple[int, float, np.ndarray, float, float]] = []
        for width in rule.arrivals:
            # a box around each rater: how many of the item's raters at this end it holds
            boxes = same_size & (np.abs(a[:, None] - a[None, :]) <= width)
            held = boxes.sum(axis=1)
            for c in np.argsort(-held, kind="stable")[: rule.centres].tolist():
                k = int(held[c])
                if k < rule.min_size or k < rule.min_share * len(members):
                    break
                in_pop = (
                    rest
                    & (np.abs(size - s[c]) <= rule.length_log)
                    & (np.abs(arrival - a[c]) <= width)
                )
                q = min(float(n[in_pop].sum()) / rest_total, 1.0)
                p = float(binom.sf(k - 1, len(idx), q))
                boxes_tested.append((k, p, boxes[c], q * len(idx), q))
        tested += len(idx) * len(rule.arrivals)  # a box could be centred on each rater
        candidates += [(item, top, idx, box) for box in boxes_tested]
    alpha = max(rule.alpha, rule.family_alpha / tested if tested else 0.0)
    # per item and end, of the significant boxes, the one holding most of the raters
    best: dict[tuple[str, bool], tuple[np.ndarray, tuple[int, float, np.ndarray, float, float]]]
    best = {}
    for item, top, idx, box in candidates:
        held_best = best.get((item, top))
        if box[1] <= alpha and (
            held_best is None or (box[0], -box[1]) > (held_best[1][0], -held_best[1][1])
        ):
            best[(item, top)] = (idx, box)
    # Members of two groups or more are explained by design (the attackers of a segment
    # or bandwagon attack rate its target and its selected popular items alike); the
    # rest of a group that shares members is judged again without them, so that the
    # genuine raters of those items are not flagged by a box the attackers made pure.
    chosen = [(item, top, idx, box) for (item, top), (idx, box) in best.items()]
    times = np.zeros(len(users), dtype=np.int64)
    for _, _, idx, box in chosen:
        times[idx[box[2]]] += 1
    found: dict[str, GroupReading] = {}
    for item, top, idx, (k, p, inside, expected, q) in chosen:
        shared = inside & (times[idx] > 1)
        readings = [(shared, GroupReading(item, top, p, k, expected, q))]
        rest_of = inside & ~shared
        k_rest, ordinary = int(rest_of.sum()), len(idx) - int(shared.sum())
        if k_rest == k:  # nothing shared: the box as it is
            readings = [(inside, readings[0][1])]
        elif k_rest >= rule.min_size:
            p_rest = float(binom.sf(k_rest - 1, ordinary, q))
            if p_rest <= alpha:
                readings.append((rest_of, GroupReading(item, top, p_rest, k_rest, q * ordinary, q)))
        for members, reading in readings:
            for u in idx[members].tolist():
                user = users[u]
                held = found.get(user)
                if held is None or (reading.purity, -reading.p_value) > (
                    held.purity,
                    -held.p_value,
                ):
                    found[user] = reading
    return found
