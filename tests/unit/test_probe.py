"""core.exploration.probe: exact propensities, and the probed algorithm drawn by weight."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.errors import InvalidInput
from recloop.core.exploration import (
    Explored,
    Probed,
    _shown,
    _shown_sparse,
    explore,
    probe,
)

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


def old_probe(
    picks: list[int], weights: list[float], n: int, epsilon: float, rng: np.random.Generator
) -> Probed:
    """The former ``probe`` (its checks and the degenerate cases aside): ``P(M = j)`` summed
    by ``bincount``, the propensities by :func:`_shown` over every candidate."""
    at = np.asarray(picks, dtype=np.intp)
    w = np.asarray(weights, dtype=np.float64)
    chance = w / float(w.sum())
    p_top = np.bincount(at, weights=chance * epsilon, minlength=n).astype(np.float64)
    p_top[0] += 1.0 - epsilon
    algorithm: int | None = None
    promoted = 0
    if rng.random() < epsilon:
        cumulative = np.cumsum(chance)
        u = rng.random() * cumulative[-1]
        algorithm = int(np.searchsorted(cumulative, u, side="right"))
        if algorithm >= len(w) or chance[algorithm] == 0.0:
            algorithm = int(np.flatnonzero(chance)[-1])
        promoted = int(at[algorithm])
    order, propensities = _shown(p_top, promoted)
    probability = float(chance[algorithm]) if algorithm is not None else 0.0
    return Probed(Explored(order, propensities, promoted, epsilon), algorithm, probability)


@settings(max_examples=500, deadline=None)
@given(
    n=st.integers(1, 40),
    data=st.data(),
    epsilon=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, 0.05, 0.3])),
    seed=st.integers(0, 2**32 - 1),
)
def test_probe_equals_the_former_bincount_and_cumsum_bit_for_bit(
    n: int, data: st.DataObject, epsilon: float, seed: int
) -> None:
    """``probe`` sums ``P(M = j)`` at the picks only and fills the propensities in runs
    (``_shown_sparse``); the former dense computation is its oracle."""
    count = data.draw(st.integers(1, 6))
    picks = data.draw(st.lists(st.integers(0, n - 1), min_size=count, max_size=count))
    weights = data.draw(
        st.lists(
            st.one_of(st.floats(0.0, 3.0), st.sampled_from([0.0, -0.0, 1.0])),
            min_size=count,
            max_size=count,
        )
    )
    if not sum(weights) > 0:
        weights[0] = 1.0
    got = probe(picks, weights, n, epsilon, np.random.default_rng(seed))
    expected = old_probe(picks, weights, n, epsilon, np.random.default_rng(seed))
    assert got.algorithm == expected.algorithm
    assert got.probability == expected.probability
    assert got.explored.promoted == expected.explored.promoted
    assert got.explored.order.tolist() == expected.explored.order.tolist()
    assert got.explored.propensities.dtype == expected.explored.propensities.dtype
    assert got.explored.propensities.tobytes() == expected.explored.propensities.tobytes()


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 30),
    data=st.data(),
)
def test_sparse_shown_equals_shown(n: int, data: st.DataObject) -> None:
    entries = data.draw(st.dictionaries(st.integers(0, n - 1), st.floats(0.0, 1.0), max_size=6))
    mass = {0: data.draw(st.floats(0.0, 1.0)), **entries}
    promoted = data.draw(st.sampled_from(sorted(mass)))
    dense = np.zeros(n)
    for j, value in mass.items():
        dense[j] = value
    order, propensities = _shown_sparse(mass, n, promoted)
    old_order, old_propensities = _shown(dense, promoted)
    assert order.tolist() == old_order.tolist()
    assert propensities.tobytes() == old_propensities.tobytes()
