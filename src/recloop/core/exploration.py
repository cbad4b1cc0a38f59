"""ε-greedy exploration over a ranked slate, with exact propensities.

Given the greedy ranking ``g_0 .. g_(n-1)``, the policy shows it unchanged
with probability ``1 - ε``; otherwise it picks ``m`` uniformly in ``1 .. n-1``
and promotes ``g_m`` to the top, the others keeping their order::

    position 0:       g_m
    position j >= 1:  g_(j-1) if j <= m else g_j

The propensity of a shown (item, position) is the probability that the
policy puts that item at that position, summed over every way it can::

    P(g_0 at 0)           = 1 - ε
    P(g_m at 0)           = ε / (n - 1)                      m >= 1
    P(g_j at j)           = (1 - ε) + ε (j - 1) / (n - 1)    j >= 1  (not displaced)
    P(g_(j-1) at j)       = ε (n - j) / (n - 1)              j >= 1  (pushed down)

and 0 for any other pair. A single candidate is never explored: its
propensity is 1. Off-policy estimators (inverse propensity scoring) divide
by these numbers, so they are exact rather than the ``1 - ε`` / ``ε``
approximations. The caller may show only a prefix of the slate; the
propensities of the shown positions stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recloop.core.arrays import all_of, cumsum_of, max_of, min_of, sum_of
from recloop.core.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Slot:
    """One shown item: where, with what probability, and whether exploration put it there."""

    item_id: str
    position: int
    propensity: float
    explored: bool


def _check(greedy: Sequence[str], epsilon: float) -> None:
    if not 0.0 <= epsilon <= 1.0:
        raise InvalidInput("epsilon", f"must be in [0, 1], got {epsilon}")
    if len(set(greedy)) != len(greedy):
        raise InvalidInput("greedy", "item ids must be unique")


def _propensity(index: int, position: int, n: int, epsilon: float) -> float:
    """P(greedy[index] lands at ``position``) for a slate of ``n`` candidates."""
    if n == 1:
        return 1.0 if index == position == 0 else 0.0
    if position == 0:
        return 1.0 - epsilon if index == 0 else epsilon / (n - 1)
    if index == position:
        return (1.0 - epsilon) + epsilon * (position - 1) / (n - 1)
    if index == position - 1:
        return epsilon * (n - position) / (n - 1)
    return 0.0


def slot_propensity(greedy: Sequence[str], item_id: str, position: int, epsilon: float) -> float:
    """The probability that :func:`epsilon_greedy` shows ``item_id`` at ``position``.

    0.0 for an item that is not a candidate or a position past the slate.

    Raises
    ------
    InvalidInput
        for ``epsilon`` outside [0, 1], duplicate candidates or a negative position.

    >>> greedy = ["a", "b", "c"]
    >>> [slot_propensity(greedy, item, 0, 0.3) for item in greedy]
    [0.7, 0.15, 0.15]
    >>> [slot_propensity(greedy, item, 1, 0.3) for item in greedy]
    [0.3, 0.7, 0.0]
    """
    _check(greedy, epsilon)
    if position < 0:
        raise InvalidInput("position", f"must be >= 0, got {position}")
    if item_id not in greedy or position >= len(greedy):
        return 0.0
    return _propensity(greedy.index(item_id), position, len(greedy), epsilon)


def epsilon_greedy(greedy: Sequence[str], epsilon: float, rng: np.random.Generator) -> list[Slot]:
    """The slate to show: ``greedy``, or with probability ``epsilon`` one other candidate on top.

    Every candidate is returned, each with its exact propensity (see the
    module docstring); ``explored`` marks the promoted item only.

    Raises
    ------
    InvalidInput
        for ``epsilon`` outside [0, 1] or duplicate candidates.

    >>> slate = epsilon_greedy(["a", "b", "c"], 1.0, np.random.default_rng(0))
    >>> [(s.item_id, s.propensity, s.explored) for s in slate]
    [('c', 0.5, True), ('a', 1.0, False), ('b', 0.5, False)]
    >>> [s.item_id for s in epsilon_greedy(["a", "b", "c"], 0.0, np.random.default_rng(0))]
    ['a', 'b', 'c']
    """
    _check(greedy, epsilon)
    n = len(greedy)
    order = list(range(n))  # indices into greedy, in the order shown
    promoted = 0
    if n > 1 and rng.random() < epsilon:
        promoted = int(rng.integers(1, n))
        order.insert(0, order.pop(promoted))
    return [
        Slot(
            item_id=greedy[i],
            position=position,
            propensity=_propensity(i, position, n, epsilon),
            explored=promoted > 0 and position == 0,
        )
        for position, i in enumerate(order)
    ]


# -- Adaptive exploration ----------------------------------------------------------------


def effective_epsilon(ceiling: float, evidence: float, evidence_half: float | None) -> float:
    """The exploration rate for a user with ``evidence`` interactions: ``ceiling`` shrunk as
    the evidence grows, halved at ``evidence_half``::

        ε = ceiling · evidence_half / (evidence_half + evidence)

    ``evidence_half`` None keeps ``ceiling`` whatever the evidence.

    Raises
    ------
    InvalidInput
        for ``ceiling`` outside [0, 1], negative evidence or ``evidence_half`` <= 0.

    >>> effective_epsilon(0.3, 0, 20.0), effective_epsilon(0.3, 20, 20.0)
    (0.3, 0.15)
    >>> round(effective_epsilon(0.1, 180, 20.0), 6), effective_epsilon(0.1, 180, None)
    (0.01, 0.1)
    """
    if not 0.0 <= ceiling <= 1.0:
        raise InvalidInput("epsilon", f"must be in [0, 1], got {ceiling}")
    if not evidence >= 0:
        raise InvalidInput("evidence", f"must be >= 0, got {evidence}")
    if evidence_half is None:
        return ceiling
    if not (evidence_half > 0 and math.isfinite(evidence_half)):
        raise InvalidInput("evidence_half", f"must be finite and > 0, got {evidence_half}")
    # the ratio first: it is at most 1 in floating point too, so ε never exceeds the ceiling
    return ceiling * (evidence_half / (evidence_half + evidence))


def promotion_probabilities(
    scores: npt.ArrayLike, top: int, temperature: float | None
) -> npt.NDArray[np.float64]:
    """``q``: which candidate an exploring draw promotes, over the greedy order.

    ``scores`` are the candidates' scores in greedy order (best first). The
    draw is among the ``m = min(top, n - 1)`` candidates after the greedy one,
    by a softmax of their scores scaled by the spread of the top set::

        q_j ∝ exp((s_j - s_0) / (temperature · (s_0 - min_{i<=m} s_i)))   1 <= j <= m

    and 0 elsewhere (``q_0 = 0``: an exploring draw always promotes another
    candidate). ``temperature`` None, or a spread of 0, makes it uniform over
    the top set; ``top >= n - 1`` with None is the uniform ε-greedy of
    :func:`epsilon_greedy`. Scaling by the spread makes the draw the same for
    fused scores and for a model's probabilities.

    Raises
    ------
    InvalidInput
        for ``top`` < 1, ``temperature`` <= 0 or non-finite scores.

    >>> promotion_probabilities([1.0, 0.9, 0.5, 0.0], top=2, temperature=None).tolist()
    [0.0, 0.5, 0.5, 0.0]
    >>> q = promotion_probabilities([1.0, 0.9, 0.5, 0.0], top=3, temperature=0.25)
    >>> q.round(4).tolist()
    [0.0, 0.8135, 0.1642, 0.0222]
    """
    if top < 1:
        raise InvalidInput("top", f"must be >= 1, got {top}")
    if temperature is not None and not (temperature > 0 and math.isfinite(temperature)):
        raise InvalidInput("temperature", f"must be finite and > 0, got {temperature}")
    s = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(s)):
        raise InvalidInput("scores", "must be finite")
    n = s.shape[0]
    q = np.zeros(n, dtype=np.float64)
    m = min(top, n - 1)
    if m < 1:
        return q
    head = s[: m + 1]
    spread = float(head.max() - head.min())
    if temperature is None or spread == 0.0:
        q[1 : m + 1] = 1.0 / m
        return q
    logits = (head[1:] - head.max()) / (temperature * spread)
    weights = np.exp(logits - logits.max())
    q[1 : m + 1] = weights / weights.sum()
    return q


def top_probabilities(q: npt.ArrayLike, epsilon: float) -> npt.NDArray[np.float64]:
    """P(greedy[i] shown on top) for promotion probabilities ``q``: ``(1 - ε)`` on the
    greedy candidate plus ``ε q``; sums to 1 over the candidates (a single candidate: 1).

    >>> top_probabilities([0.0, 0.5, 0.5], 0.2).tolist()
    [0.8, 0.1, 0.1]
    """
    p = np.asarray(q, dtype=np.float64) * epsilon
    if p.shape[0] == 0:
        return p
    if p.shape[0] == 1 or not p[1:].any():
        p = np.zeros_like(p)
        p[0] = 1.0
        return p
    p[0] += 1.0 - epsilon
    return p


@dataclass(frozen=True, slots=True, eq=False)
class Explored:
    """What :func:`explore` shows, in columns: ``order[j]`` is the index (into the greedy
    order) of the candidate at position ``j``; ``propensities[j]`` its exact probability
    of being there; ``promoted`` the index moved to the top (0: none)."""

    order: npt.NDArray[np.intp]
    propensities: npt.NDArray[np.float64]
    promoted: int
    epsilon: float


def explore(
    scores: npt.ArrayLike,
    epsilon: float,
    rng: np.random.Generator,
    top: int,
    temperature: float | None,
) -> Explored:
    """The greedy order, or with probability ``epsilon`` a plausible other candidate on top.

    The promoted index ``M`` is 0 with probability ``1 - ε`` and ``j`` with
    probability ``ε q_j`` (:func:`promotion_probabilities`); ``g_M`` moves to the
    top and the others keep their order. The exact propensity of each shown
    (candidate, position), with ``P(M < j)`` and ``P(M >= j)`` cumulative sums::

        position 0:   P(g_0) = 1 - ε,          P(g_j) = ε q_j
        position j:   P(g_j at j) = P(M < j),  P(g_(j-1) at j) = P(M >= j)

    all in numpy, with no object per candidate. With ``top >= n - 1`` and
    ``temperature`` None the draws and propensities are those of
    :func:`epsilon_greedy` with the same generator.

    Raises
    ------
    InvalidInput
        as :func:`promotion_probabilities`, or for ``epsilon`` outside [0, 1].

    >>> e = explore([3.0, 2.0, 1.0], 1.0, np.random.default_rng(0), top=2, temperature=None)
    >>> e.order.tolist(), e.propensities.tolist(), e.promoted
    ([2, 0, 1], [0.5, 1.0, 0.5], 2)
    """
    if not 0.0 <= epsilon <= 1.0:
        raise InvalidInput("epsilon", f"must be in [0, 1], got {epsilon}")
    q = promotion_probabilities(scores, top, temperature)
    n = q.shape[0]
    m = min(top, n - 1)
    promoted = 0
    if n > 1 and rng.random() < epsilon:
        if temperature is None:
            promoted = int(rng.integers(1, m + 1))
        else:
            cumulative = np.cumsum(q)
            promoted = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), m)
            promoted = max(promoted, 1)
    order = np.arange(n)
    if promoted:
        order[1 : promoted + 1] = np.arange(promoted)
        order[0] = promoted
    propensities = np.ones(n, dtype=np.float64)
    if n <= 1:
        return Explored(order, propensities, promoted, epsilon)
    j = np.arange(1, n)
    pushed = j <= promoted  # g_(j-1) at j, else g_j at j
    if temperature is None:
        # closed forms (as _propensity computes them, to the bit when m = n - 1)
        propensities[0] = 1.0 - epsilon if promoted == 0 else epsilon / m
        kept = (1.0 - epsilon) + epsilon * np.minimum(j - 1, m) / m  # P(M < j)
        moved = epsilon * np.maximum(m - j + 1, 0) / m  # P(M >= j)
    else:
        p_m = top_probabilities(q, epsilon)  # P(M = j)
        below = np.cumsum(p_m)  # P(M <= j)
        propensities[0] = p_m[promoted]
        kept = below[:-1]  # below[j - 1]
        moved = np.maximum(1.0 - kept, 0.0)
    propensities[1:] = np.where(pushed, moved, kept)
    return Explored(order, propensities, promoted, epsilon)


# -- Probes: exploration that credits exactly one algorithm ---------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Probed:
    """What :func:`probe` shows: the :class:`Explored` columns, and the algorithm probed
    (an index into the ``picks`` given; None: not a probe) with the probability it had of
    being drawn."""

    explored: Explored
    algorithm: int | None
    probability: float


def _shown(
    p_top: npt.NDArray[np.float64], promoted: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Order and exact propensities when candidate ``M`` moves to the top with
    ``P(M = j) = p_top[j]`` and ``promoted`` was drawn (:func:`explore`'s formulas)."""
    n = p_top.shape[0]
    order = np.arange(n)
    if promoted:
        order[1 : promoted + 1] = np.arange(promoted)
        order[0] = promoted
    propensities = np.ones(n, dtype=np.float64)
    if n > 1:
        j = np.arange(1, n)
        below = np.cumsum(p_top)  # P(M <= j)
        propensities[0] = p_top[promoted]
        kept = np.minimum(below[j - 1], 1.0)
        moved = np.maximum(1.0 - below[j - 1], 0.0)
        propensities[1:] = np.where(j <= promoted, moved, kept)
    return order, propensities


def _shown_sparse(
    mass: dict[int, float], n: int, promoted: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """:func:`_shown` of ``P(M = j) = mass.get(j, 0.0)`` (a few nonzero entries: a probe's
    picks), the same bits without a pass over the ``n`` candidates per step: the
    cumulative ``P(M <= j)`` is a step function, constant between the entries (a sum
    plus 0.0 is the sum), so the propensities are a few runs of one value each
    (tests/unit/test_probe.py holds it to :func:`_shown`)."""
    order = np.arange(n)
    if promoted:
        order[1 : promoted + 1] = np.arange(promoted)
        order[0] = promoted
    propensities = np.empty(n, dtype=np.float64)
    propensities.fill(1.0)  # np.ones' values, without its Python wrapper
    if n > 1:
        propensities[0] = mass.get(promoted, 0.0)
        # position p reads below = P(M <= p - 1): from p = j + 1 on, entry j is in it
        steps = sorted(j for j in mass if j < n - 1)
        below = 0.0
        for s, j in enumerate(steps):
            below += mass[j]
            start = j + 1
            end = steps[s + 1] + 1 if s + 1 < len(steps) else n
            # pushed down (p <= promoted) or kept
            split = min(max(promoted + 1, start), end)
            if start < split:
                propensities[start:split] = max(1.0 - below, 0.0)
            if split < end:
                propensities[split:end] = min(below, 1.0)
    return order, propensities


def probe(
    picks: npt.ArrayLike,
    weights: npt.ArrayLike,
    n: int,
    epsilon: float,
    rng: np.random.Generator,
) -> Probed:
    """The greedy order, or with probability ``epsilon`` a probe: one algorithm ``A``
    drawn with probability ``weights[A] / sum(weights)``, its own top pick moved to the top.

    ``picks[a]`` is algorithm ``a``'s top pick as an index into the greedy order of ``n``
    candidates (0: it agrees with the greedy top, and the probe changes nothing shown).
    The probed slot's feedback is credited to ``A`` alone, so the click rate of an
    algorithm's probes estimates the click rate of its own top pick without bias: ``A`` is
    drawn independently of the visit. The promoted index ``M`` has::

        P(M = j) = (1 - ε)·[j = 0] + ε · Σ_a [picks[a] = j] · weights[a] / sum(weights)

    and every shown (candidate, position) gets its exact propensity from it as in
    :func:`explore`. No picks, or weights summing to 0: never a probe, the greedy order
    with propensity 1.

    Raises
    ------
    InvalidInput
        for ``epsilon`` outside [0, 1], a pick outside ``0 .. n-1``, a negative or
        non-finite weight, or ``picks`` and ``weights`` of different lengths.

    >>> p = probe([2, 0], [0.5, 0.5], 3, 1.0, np.random.default_rng(0))
    >>> p.explored.order.tolist(), p.explored.propensities.tolist(), p.algorithm
    ([2, 0, 1], [0.5, 0.5, 0.5], 0)
    """
    if not 0.0 <= epsilon <= 1.0:
        raise InvalidInput("epsilon", f"must be in [0, 1], got {epsilon}")
    at = np.asarray(picks, dtype=np.intp)
    w = np.asarray(weights, dtype=np.float64)
    if at.shape != w.shape:
        raise InvalidInput("weights", f"has {w.shape[0]} values for {at.shape[0]} picks")
    # the ufuncs' reductions (core.arrays): the same values, past numpy's Python wrappers
    if at.size and (min_of(at) < 0 or max_of(at) >= n):
        raise InvalidInput("picks", f"must be in 0 .. {n - 1}")
    if not all_of(np.isfinite(w)) or (w.size and min_of(w) < 0):
        raise InvalidInput("weights", "must be finite and >= 0")
    total = float(sum_of(w))
    if n < 1 or total <= 0.0:
        order, propensities = _shown((np.arange(max(n, 0)) == 0).astype(np.float64), 0)
        return Probed(Explored(order, propensities, 0, 0.0), None, 0.0)
    chance = w / total
    # P(M = j), nonzero at 0 and the picks only: summed as bincount sums (in pick order,
    # from 0.0), then 1 - ε added at 0
    mass: dict[int, float] = {}
    for j, c in zip(at.tolist(), (chance * epsilon).tolist(), strict=True):
        mass[j] = mass.get(j, 0.0) + c
    mass[0] = mass.get(0, 0.0) + (1.0 - epsilon)
    algorithm: int | None = None
    promoted = 0
    if rng.random() < epsilon:
        cumulative = cumsum_of(chance)
        u = rng.random() * cumulative[-1]
        # side="right": the first algorithm whose cumulative chance exceeds u, never one
        # with chance 0 (its cumulative equals the one before it)
        algorithm = int(cumulative.searchsorted(u, side="right"))
        if algorithm >= len(w) or chance[algorithm] == 0.0:  # u rounded up to the total
            algorithm = int(np.flatnonzero(chance)[-1])
        promoted = int(at[algorithm])
    order, propensities = _shown_sparse(mass, n, promoted)
    probability = float(chance[algorithm]) if algorithm is not None else 0.0
    return Probed(Explored(order, propensities, promoted, epsilon), algorithm, probability)


# -- Inverse-propensity credit: every shown first pick credited -------------------------------


def ips_credit(
    picks: npt.ArrayLike, shown: int, propensity: float, clip: float
) -> npt.NDArray[np.float64]:
    """Per algorithm, the inverse-propensity credit of the top slot: ``min(1 / propensity,
    clip)`` for every algorithm whose own top pick is the shown top, 0 for the others.

    ``picks[a]`` is algorithm ``a``'s top pick as an index into the greedy order,
    ``shown`` the index shown on top (:attr:`Explored.order` ``[0]``) and ``propensity``
    its exact probability of being there (:attr:`Explored.propensities` ``[0]``). An
    algorithm ``a`` credited ``w = 1[shown = picks[a]] / P(shown = picks[a])`` impressions
    per visit, and ``w`` clicks when the slot is clicked, has in expectation over the draw
    one impression and ``P(click | its pick on top)`` clicks per visit, whatever else is
    shown: summed, its clicks over its impressions (what the bandit's counts give) is the
    self-normalised estimate of its own top pick's click rate, consistent when every pick
    can be shown (:func:`probe` with ε > 0 and a positive weight). ``clip`` bounds one
    visit's weight (a rarely shown pick otherwise weighs ``1 / (ε · chance)``); clipped
    weights lean towards the visits where the algorithm agrees with the greedy top.

    Raises
    ------
    InvalidInput
        for a propensity outside (0, 1] or a ``clip`` below 1.

    >>> ips_credit([0, 2, 0], 0, 0.8, 20.0).tolist()
    [1.25, 0.0, 1.25]
    >>> ips_credit([0, 2, 0], 2, 0.04, 20.0).tolist()
    [0.0, 20.0, 0.0]
    """
    if not 0.0 < propensity <= 1.0:
        raise InvalidInput("propensity", f"must be in (0, 1], got {propensity}")
    if not clip >= 1.0:
        raise InvalidInput("clip", f"must be >= 1, got {clip}")
    at = np.asarray(picks, dtype=np.intp)
    return np.where(at == shown, min(1.0 / propensity, clip), 0.0)
