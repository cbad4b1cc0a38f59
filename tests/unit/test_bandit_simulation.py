"""Thompson sampling finds the best algorithm of a simulated segment (core.bandit).

Four algorithms with known CTRs. Each impression goes to an algorithm drawn
from the current weights; weights are :func:`probability_best` of the
posteriors, recomputed every 500 impressions (as a service would cache
them); a click is drawn from the chosen algorithm's true CTR. Regret is the
expected one, ``max(ctr) - ctr[chosen]`` per impression, so it measures the
policy and not the click noise. The same loop with uniform weights is the
contrast: every assertion below that Thompson sampling passes, it fails.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from recloop.core.bandit import PerformanceCounts, posterior, probability_best, segment_priors

ALGORITHMS = ("popular", "collaborative", "content", "session")
CTRS = np.array([0.02, 0.03, 0.05, 0.035])
BEST = int(CTRS.argmax())
IMPRESSIONS = 50_000
REFRESH = 500  # impressions between two weight computations
SEED = 20240601

Policy = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def thompson(impressions: np.ndarray, clicks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    priors = segment_priors(dict.fromkeys(ALGORITHMS, 1.0), prior_ctr=0.03, strength=10.0)
    posteriors = {
        alg: posterior(priors[alg], PerformanceCounts(int(n), int(c)))
        for alg, n, c in zip(ALGORITHMS, impressions, clicks, strict=True)
    }
    weights = probability_best(posteriors, seed=int(rng.integers(2**32))).weights
    return np.array(list(weights.values()))


def uniform(impressions: np.ndarray, clicks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.full(len(ALGORITHMS), 1 / len(ALGORITHMS))


def simulate(policy: Policy) -> tuple[npt.NDArray[np.float64], np.ndarray]:
    """Per-impression expected regret, and the policy's weights at the end."""
    rng = np.random.default_rng(SEED)
    impressions = np.zeros(len(ALGORITHMS), dtype=np.int64)
    clicks = np.zeros(len(ALGORITHMS), dtype=np.int64)
    regret = np.empty(IMPRESSIONS)
    for start in range(0, IMPRESSIONS, REFRESH):
        weights = policy(impressions, clicks, rng)
        shown = rng.choice(len(ALGORITHMS), size=REFRESH, p=weights)
        clicked = rng.random(REFRESH) < CTRS[shown]
        impressions += np.bincount(shown, minlength=len(ALGORITHMS))
        clicks += np.bincount(shown[clicked], minlength=len(ALGORITHMS))
        regret[start : start + REFRESH] = CTRS[BEST] - CTRS[shown]
    return regret, policy(impressions, clicks, rng)


def regret_shrinks(regret: npt.NDArray[np.float64]) -> bool:
    """Sublinear growth: the second half costs far less than the first, the tail far less still."""
    half = len(regret) // 2
    second_half_cheaper = regret[half:].sum() < 0.6 * regret[:half].sum()
    tail_cheaper = regret[-10_000:].mean() < 0.2 * regret[:1_000].mean()
    return bool(second_half_cheaper and tail_cheaper)


@pytest.fixture(scope="module")
def thompson_run() -> tuple[npt.NDArray[np.float64], np.ndarray]:
    return simulate(thompson)


@pytest.fixture(scope="module")
def uniform_run() -> tuple[npt.NDArray[np.float64], np.ndarray]:
    return simulate(uniform)


def test_the_best_algorithm_takes_the_weight(
    thompson_run: tuple[npt.NDArray[np.float64], np.ndarray],
) -> None:
    _, weights = thompson_run
    assert weights[BEST] > 0.8


def test_regret_grows_sublinearly(
    thompson_run: tuple[npt.NDArray[np.float64], np.ndarray],
    uniform_run: tuple[npt.NDArray[np.float64], np.ndarray],
) -> None:
    assert regret_shrinks(thompson_run[0])
    assert not regret_shrinks(uniform_run[0])  # linear: every impression costs the same


def test_regret_is_far_below_a_uniform_policy(
    thompson_run: tuple[npt.NDArray[np.float64], np.ndarray],
    uniform_run: tuple[npt.NDArray[np.float64], np.ndarray],
) -> None:
    # uniform: 50,000 * (0.05 - 0.03375) = 812.5 expected
    assert uniform_run[0].sum() == pytest.approx(812.5, rel=0.05)
    assert thompson_run[0].sum() < 0.25 * uniform_run[0].sum()
