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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
