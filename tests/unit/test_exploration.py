"""ε-greedy and adaptive slates and their exact propensities (core.exploration)."""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from recloop.core.errors import InvalidInput
from recloop.core.exploration import (
    effective_epsilon,
    epsilon_greedy,
    explore,
    promotion_probabilities,
    slot_propensity,
    top_probabilities,
)


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


# -- Adaptive exploration (explore) ----------------------------------------------------


def adaptive_outcomes(
    scores: list[float], epsilon: float, top: int, temperature: float | None
) -> list[tuple[int, float]]:
    """Oracle: every promoted index m with its probability, straight from the definition:
    m = 0 with 1 - ε, else m in 1..min(top, n-1) with ε times a softmax of
    (s_m - max) / (temperature · spread of the top set), or ε/m uniformly."""
    n = len(scores)
    if n <= 1:
        return [(0, 1.0)]
    m = min(top, n - 1)
    head = scores[: m + 1]
    spread = max(head) - min(head)
    if temperature is None or spread == 0:
        weights = [1.0] * m
    else:
        scale = temperature * spread
        weights = [math.exp((scores[j] - max(head)) / scale) for j in range(1, m + 1)]
    total = sum(weights)
    return [(0, 1.0 - epsilon)] + [(j, epsilon * w / total) for j, w in enumerate(weights, 1)]


def adaptive_distribution(
    scores: list[float], epsilon: float, top: int, temperature: float | None
) -> dict[tuple[int, int], float]:
    """P(greedy index at position), summed over the promoted indices."""
    probability: dict[tuple[int, int], float] = {}
    for m, p in adaptive_outcomes(scores, epsilon, top, temperature):
        order = [m, *range(m), *range(m + 1, len(scores))]
        for position, i in enumerate(order):
            probability[i, position] = probability.get((i, position), 0.0) + p
    return probability


@pytest.mark.parametrize("n", [1, 2, 3, 6, 9])
@pytest.mark.parametrize("top", [1, 2, 5, 100])
@pytest.mark.parametrize("temperature", [None, 0.1, 0.5, 3.0])
@pytest.mark.parametrize("epsilon", [0.0, 0.15, 1.0])
def test_explore_propensities_are_the_exact_outcome_probabilities(
    n: int, top: int, temperature: float | None, epsilon: float
) -> None:
    rng = np.random.default_rng(n * 1000 + top)
    scores = sorted(rng.normal(size=n).tolist(), reverse=True)
    exact = adaptive_distribution(scores, epsilon, top, temperature)
    # each position's propensities sum to 1 over the candidates (the top slot's too)
    for position in range(n):
        assert sum(exact.get((i, position), 0.0) for i in range(n)) == pytest.approx(1.0)
    q = promotion_probabilities(scores, top, temperature)
    tops = top_probabilities(q, epsilon)
    assert tops.sum() == pytest.approx(1.0)
    assert tops.tolist() == pytest.approx([exact.get((i, 0), 0.0) for i in range(n)], abs=1e-12)
    possible = {m for m, p in adaptive_outcomes(scores, epsilon, top, temperature) if p > 0}
    seen = set()
    for _ in range(100):
        drawn = explore(scores, epsilon, rng, top, temperature)
        assert drawn.promoted in possible
        seen.add(drawn.promoted)
        assert sorted(drawn.order.tolist()) == list(range(n))
        for position, i in enumerate(drawn.order.tolist()):
            assert drawn.propensities[position] == pytest.approx(exact[i, position], abs=1e-12)
    if epsilon == 1.0 and n > 1:
        assert 0 not in seen


def test_explore_frequencies_match_the_propensities() -> None:
    # A seeded sampler: 40,000 slates; each (index, position) frequency against its
    # propensity (chi-square per position), and the top slot within 4 standard errors.
    scores = [2.0, 1.8, 1.7, 1.1, 0.9, 0.2, 0.1]
    epsilon, top, temperature, draws = 0.4, 4, 0.5, 40_000
    rng = np.random.default_rng(20261206)
    counts = np.zeros((len(scores), len(scores)))
    for _ in range(draws):
        drawn = explore(scores, epsilon, rng, top, temperature)
        counts[drawn.order, np.arange(len(scores))] += 1
    exact = adaptive_distribution(scores, epsilon, top, temperature)
    expected = np.array(
        [[exact.get((i, j), 0.0) for j in range(len(scores))] for i in range(len(scores))]
    )
    for position in range(len(scores)):
        observed = counts[:, position]
        support = expected[:, position] > 0
        assert observed[~support].sum() == 0  # nothing lands where its propensity is 0
        if support.sum() > 1:
            chi2 = stats.chisquare(observed[support], draws * expected[support, position])
            assert chi2.pvalue > 1e-3
    p = expected[:, 0]
    se = np.sqrt(p * (1 - p) / draws)
    assert np.all(np.abs(counts[:, 0] / draws - p) <= 4 * se + 1e-12)
    assert counts[5:, 0].sum() == 0  # beyond the top set: never promoted


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_explore_uniform_over_all_is_epsilon_greedy_to_the_bit(n: int, epsilon: float) -> None:
    greedy = list(string.ascii_lowercase[:n])
    scores = np.linspace(1.0, 0.0, n)
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(50):
        slate = epsilon_greedy(greedy, epsilon, a)
        drawn = explore(scores, epsilon, b, top=n, temperature=None)
        assert [greedy[i] for i in drawn.order.tolist()] == [s.item_id for s in slate]
        assert drawn.propensities.tolist() == [s.propensity for s in slate]
        assert a.bit_generator.state == b.bit_generator.state


def test_softmax_prefers_the_plausible_and_is_scale_free() -> None:
    q = promotion_probabilities([1.0, 0.99, 0.5, 0.0], top=3, temperature=0.5)
    assert q[1] > q[2] > q[3] > 0
    # the same draw for scores on another scale (a model's probabilities, say)
    scaled = promotion_probabilities([0.01, 0.0099, 0.005, 0.0], top=3, temperature=0.5)
    assert scaled.tolist() == pytest.approx(q.tolist())
    # equal scores: uniform over the top set
    assert promotion_probabilities([1.0] * 4, 2, 0.5).tolist() == [0.0, 0.5, 0.5, 0.0]


@given(
    ceiling=st.floats(0.0, 1.0),
    evidence=st.integers(0, 10**6),
    more=st.integers(1, 10**6),
    half=st.floats(0.1, 1e4),
)
def test_effective_epsilon_is_capped_and_shrinks(
    ceiling: float, evidence: int, more: int, half: float
) -> None:
    eps = effective_epsilon(ceiling, evidence, half)
    assert 0.0 <= eps <= ceiling
    assert effective_epsilon(ceiling, evidence + more, half) <= eps
    assert effective_epsilon(ceiling, 0, half) == ceiling
    assert effective_epsilon(ceiling, evidence, None) == ceiling


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: effective_epsilon(1.2, 0, 1.0), "epsilon"),
        (lambda: effective_epsilon(0.2, -1, 1.0), "evidence"),
        (lambda: effective_epsilon(0.2, 1, 0.0), "evidence_half"),
        (lambda: promotion_probabilities([1.0, 0.0], 0, None), "top"),
        (lambda: promotion_probabilities([1.0, 0.0], 1, 0.0), "temperature"),
        (lambda: promotion_probabilities([1.0, math.nan], 1, 1.0), "scores"),
        (lambda: explore([1.0, 0.0], 1.5, np.random.default_rng(0), 1, None), "epsilon"),
    ],
)
def test_adaptive_exploration_refuses(call: Callable[[], object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        call()
    assert info.value.field == field
