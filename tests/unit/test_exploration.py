"""ε-greedy slates and their exact propensities (core.exploration)."""

from __future__ import annotations

import string
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from recloop.core.errors import InvalidInput
from recloop.core.exploration import epsilon_greedy, slot_propensity


def outcomes(greedy: list[str], epsilon: Fraction) -> list[tuple[list[str], Fraction]]:
    """Independent oracle: every slate the policy can show, with its exact probability.

    Straight from the definition: the greedy order with probability 1 - ε, or
    ``greedy[m]`` moved to the top, m uniform in 1..n-1, with probability ε.
    """
    n = len(greedy)
    if n == 1:
        return [(greedy, Fraction(1))]
    result = [(greedy, 1 - epsilon)]
    for m in range(1, n):
        promoted = [greedy[m], *greedy[:m], *greedy[m + 1 :]]
        result.append((promoted, epsilon / (n - 1)))
    return result


def exact_distribution(greedy: list[str], epsilon: Fraction) -> dict[tuple[str, int], Fraction]:
    """P(item at position), summed over every outcome."""
    probability: dict[tuple[str, int], Fraction] = {}
    for slate, p in outcomes(greedy, epsilon):
        for position, item in enumerate(slate):
            probability[item, position] = probability.get((item, position), Fraction(0)) + p
    return probability


EPSILONS = [Fraction(0), Fraction(1, 20), Fraction(3, 10), Fraction(1, 2), Fraction(1)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("epsilon", EPSILONS)
def test_slot_propensity_equals_the_exact_outcome_probability(n: int, epsilon: Fraction) -> None:
    greedy = list(string.ascii_lowercase[:n])
    exact = exact_distribution(greedy, epsilon)
    for item in greedy:
        for position in range(n + 1):
            expected = float(exact.get((item, position), Fraction(0)))
            assert slot_propensity(greedy, item, position, float(epsilon)) == pytest.approx(
                expected, abs=1e-15
            )


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("epsilon", EPSILONS)
def test_every_slate_is_an_outcome_with_exact_propensities(n: int, epsilon: Fraction) -> None:
    greedy = list(string.ascii_lowercase[:n])
    possible = {tuple(slate) for slate, p in outcomes(greedy, epsilon) if p > 0}
    exact = exact_distribution(greedy, epsilon)
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(200):
        slate = epsilon_greedy(greedy, float(epsilon), rng)
        shown = tuple(s.item_id for s in slate)
        assert shown in possible
        seen.add(shown)
        assert [s.position for s in slate] == list(range(n))
        for s in slate:
            assert s.propensity == pytest.approx(float(exact[s.item_id, s.position]), abs=1e-15)
            assert s.explored == (s.position == 0 and s.item_id != greedy[0])
    assert seen == possible  # 200 draws reach every outcome of these small slates


def test_monte_carlo_frequencies_match_propensities() -> None:
    greedy = ["a", "b", "c", "d"]
    epsilon, draws = 0.3, 20_000
    rng = np.random.default_rng(20240601)
    placed: Counter[tuple[str, int]] = Counter()
    explored = 0
    for _ in range(draws):
        slate = epsilon_greedy(greedy, epsilon, rng)
        placed.update((s.item_id, s.position) for s in slate)
        explored += any(s.explored for s in slate)
    for item in greedy:
        for position in range(len(greedy)):
            p = slot_propensity(greedy, item, position, epsilon)
            # at most 4 standard errors (0.0035 at p = 0.5) away
            assert placed[item, position] / draws == pytest.approx(p, abs=0.014)
    assert explored / draws == pytest.approx(epsilon, abs=0.014)


def test_explored_is_the_promoted_slot_only() -> None:
    slate = epsilon_greedy(["a", "b", "c"], 1.0, np.random.default_rng(0))
    assert [s.explored for s in slate] == [True, False, False]
    assert slate[0].item_id != "a"
    assert all(not s.explored for s in epsilon_greedy(["a", "b"], 0.0, np.random.default_rng(0)))


def test_single_and_empty_slates() -> None:
    (only,) = epsilon_greedy(["a"], 1.0, np.random.default_rng(0))
    assert (only.item_id, only.position, only.propensity, only.explored) == ("a", 0, 1.0, False)
    assert epsilon_greedy([], 0.5, np.random.default_rng(0)) == []


def test_slot_propensity_of_what_cannot_be_shown_is_zero() -> None:
    assert slot_propensity(["a", "b", "c"], "z", 0, 0.3) == 0.0
    assert slot_propensity(["a", "b", "c"], "a", 3, 0.3) == 0.0
    assert slot_propensity(["a", "b", "c"], "c", 1, 0.3) == 0.0  # moves up only to the top


@pytest.mark.parametrize("epsilon", [-0.01, 1.01, float("nan")])
def test_epsilon_must_be_a_probability(epsilon: float) -> None:
    with pytest.raises(InvalidInput) as info:
        epsilon_greedy(["a", "b"], epsilon, np.random.default_rng(0))
    assert info.value.field == "epsilon"
    with pytest.raises(InvalidInput):
        slot_propensity(["a", "b"], "a", 0, epsilon)


def test_refuses_duplicates_and_negative_positions() -> None:
    with pytest.raises(InvalidInput) as info:
        epsilon_greedy(["a", "b", "a"], 0.1, np.random.default_rng(0))
    assert info.value.field == "greedy"
    with pytest.raises(InvalidInput) as info:
        slot_propensity(["a", "b"], "a", -1, 0.1)
    assert info.value.field == "position"
