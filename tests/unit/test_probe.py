"""core.exploration.probe: exact propensities, and the probed algorithm drawn by weight."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recloop.core.errors import InvalidInput
from recloop.core.exploration import explore, probe

N = 6
PICKS = [3, 0, 3, 5]  # two algorithms agree on candidate 3; one agrees with the greedy top
WEIGHTS = [0.4, 0.3, 0.2, 0.1]
EPSILON = 0.4
DRAWS = 40_000


def test_propensities_are_the_frequencies_of_what_is_shown() -> None:
    rng = np.random.default_rng(0)
    seen = np.zeros((N, N))  # [position, candidate]
    drawn = np.zeros(len(PICKS))
    logged: dict[tuple[int, int], float] = {}
    for _ in range(DRAWS):
        p = probe(PICKS, WEIGHTS, N, EPSILON, rng)
        order = p.explored.order.tolist()
        for position, candidate in enumerate(order):
            seen[position, candidate] += 1
            value = float(p.explored.propensities[position])
            # one (candidate, position) always logs the same propensity
            assert logged.setdefault((position, candidate), value) == pytest.approx(value)
        if p.algorithm is not None:
            drawn[p.algorithm] += 1
            assert p.probability == pytest.approx(WEIGHTS[p.algorithm] / sum(WEIGHTS))
            assert order[0] == PICKS[p.algorithm]
    frequency = seen / DRAWS
    for (position, candidate), value in logged.items():
        se = math.sqrt(value * (1 - value) / DRAWS) + 1e-9
        assert abs(frequency[position, candidate] - value) < 4.5 * se, (position, candidate)
    # the top slot: (1 - ε) on the greedy candidate plus ε times each pick's weight
    expected_top = np.zeros(N)
    expected_top[0] = 1 - EPSILON
    np.add.at(expected_top, PICKS, EPSILON * np.asarray(WEIGHTS))
    assert logged[(0, 3)] == pytest.approx(expected_top[3])
    assert logged[(0, 0)] == pytest.approx(expected_top[0])
    # each algorithm probed with probability ε w / sum(w), whatever its pick
    for a, w in enumerate(WEIGHTS):
        rate = EPSILON * w
        assert abs(drawn[a] / DRAWS - rate) < 4.5 * math.sqrt(rate * (1 - rate) / DRAWS)


def test_ips_of_each_algorithms_own_pick_is_unbiased() -> None:
    """From logged top-slot propensities, the value of 'show algorithm a's pick' by inverse
    propensity scoring matches its true value (click rates known)."""
    rng = np.random.default_rng(1)
    visits = 30_000
    truth = np.zeros(len(PICKS))
    estimate = np.zeros(len(PICKS))
    for _ in range(visits):
        rates = rng.uniform(0.0, 0.3, N)
        picks = rng.integers(0, N, len(PICKS))
        p = probe(picks, WEIGHTS, N, EPSILON, rng)
        top = int(p.explored.order[0])
        click = float(rng.random() < rates[top])
        truth += rates[picks]
        estimate += (picks == top) * click / p.explored.propensities[0]
    truth /= visits
    estimate /= visits
    assert np.allclose(estimate, truth, atol=0.012), (estimate, truth)


def test_no_weight_or_no_epsilon_is_the_greedy_order() -> None:
    rng = np.random.default_rng(2)
    for picks, weights, epsilon in (([2], [0.0], 1.0), ([2, 1], [0.5, 0.5], 0.0), ([], [], 1.0)):
        p = probe(picks, weights, 4, epsilon, rng)
        assert p.explored.order.tolist() == [0, 1, 2, 3] and p.algorithm is None
    # with ε = 0 every shown slot has propensity 1, as explore() says
    assert probe([2], [1.0], 4, 0.0, rng).explored.propensities.tolist() == [1.0] * 4
    assert explore([4.0, 3.0, 2.0, 1.0], 0.0, rng, 3, 0.5).propensities.tolist() == [1.0] * 4


@pytest.mark.parametrize(
    ("picks", "weights", "epsilon", "field"),
    [([0], [1.0], 1.5, "epsilon"), ([4], [1.0], 0.1, "picks"), ([0], [-1.0], 0.1, "weights"),
     ([0, 1], [1.0], 0.1, "weights"), ([0], [math.nan], 0.1, "weights")],
)  # fmt: skip
def test_bad_input_names_the_field(
    picks: list[int], weights: list[float], epsilon: float, field: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        probe(picks, weights, 3, epsilon, np.random.default_rng(0))
    assert raised.value.field == field
