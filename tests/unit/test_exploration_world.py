"""Adaptive exploration on the simulated world (benchmarks/world.py), where the truth is known.

- Off-policy estimates computed from the propensities the adaptive policy logs are
  unbiased: IPS and SNIPS of several target policies against their true value.
- It costs less than uniform ε-greedy: the expected top-slot clicks lost to exploration
  (regret against the greedy ranking), computed exactly from the true click probabilities
  on the same contexts. ``python -m benchmarks.exploration`` prints the figures
  (docs/benchmarks.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from benchmarks.world import CLICK_WINDOW, SimImpression, make_world, simulate, true_value

from recloop.config import ExplorationSettings
from recloop.core.exploration import effective_epsilon, promotion_probabilities, top_probabilities
from recloop.learning.validation import LoggedSlate, snips, target_probabilities

LATE = 0.95  # share of clicks inside the window (world._LATE_CLICKS)


@pytest.fixture(scope="module")
def logged() -> list[SimImpression]:
    world = make_world(seed=11, n_users=300, n_items=120)
    sim = simulate(
        world, 6_000, epsilon=0.6, n_candidates=6, slate_size=1, seed=4,
        explore_top=5, temperature=0.5, evidence_half=50.0,
    )  # fmt: skip
    return sim.impressions


def clicked(impression: SimImpression) -> float:
    top = impression.slate[0]
    inside = top.clicked_at is not None and top.clicked_at - impression.created_at <= CLICK_WINDOW
    return 1.0 if inside else 0.0


@pytest.mark.parametrize("target_epsilon", [0.0, 0.5, 1.0])
def test_off_policy_estimates_from_logged_propensities_are_unbiased(
    logged: list[SimImpression], target_epsilon: float
) -> None:
    targets = [target_probabilities(i.scores, target_epsilon) for i in logged]
    truth = true_value(logged, targets)
    shown = [i.candidates.index(i.slate[0].item_id) for i in logged]
    weights = np.array(
        [t[k] / i.slate[0].propensity for i, t, k in zip(logged, targets, shown, strict=True)]
    )
    # 1. With the true click probability of the shown item as its reward, the IPS term
    #    minus the impression's true value has mean 0 (only the exploration draw varies).
    diffs = np.array(
        [
            w * LATE * i.top_click_probability[k] - LATE * float(t @ i.top_click_probability)
            for i, t, k, w in zip(logged, targets, shown, weights, strict=True)
        ]
    )
    assert abs(diffs.mean()) < 3.5 * diffs.std(ddof=1) / math.sqrt(len(diffs))
    # 2. With the clicks drawn: IPS within 3.5 standard errors of the truth ...
    rewards = np.array([clicked(i) for i in logged])
    terms = weights * rewards
    assert abs(terms.mean() - truth) < 3.5 * terms.std(ddof=1) / math.sqrt(len(terms))
    # 3. ... and the repository's SNIPS (the retrain gate's estimator) covers it at 99.9 %.
    slates = [
        LoggedSlate(np.zeros((len(i.candidates), 1)), k, i.slate[0].propensity, r)
        for i, k, r in zip(logged, shown, rewards.tolist(), strict=True)
    ]
    estimate = snips(slates, [i.scores for i in logged], target_epsilon, alpha=0.001)
    assert estimate.ci_low is not None and estimate.ci_high is not None
    assert estimate.ci_low <= truth <= estimate.ci_high


def test_adaptive_exploration_loses_fewer_clicks_than_uniform_epsilon_greedy() -> None:
    world = make_world(seed=21, n_users=500, n_items=200)
    contexts = simulate(world, 3_000, epsilon=0.0, n_candidates=20, slate_size=1, seed=8)
    users = {u.user_id: u for u in world.users}
    ceilings = ExplorationSettings().epsilon
    defaults = ExplorationSettings()
    greedy, uniform, adaptive = [], [], []
    for i in contexts.impressions:
        assert i.scores is not None
        n = len(i.candidates)
        ceiling = ceilings[i.segment]
        greedy.append(top_probabilities(promotion_probabilities(i.scores, n, None), 0.0))
        uniform.append(top_probabilities(promotion_probabilities(i.scores, n, None), ceiling))
        eps = effective_epsilon(
            ceiling, users[i.user_id].features.interactions, defaults.evidence_half
        )
        q = promotion_probabilities(i.scores, defaults.top, defaults.temperature)
        adaptive.append(top_probabilities(q, eps))
    best = true_value(contexts.impressions, greedy)
    uniform_regret = best - true_value(contexts.impressions, uniform)
    adaptive_regret = best - true_value(contexts.impressions, adaptive)
    assert uniform_regret > 0
    assert 0 <= adaptive_regret < 0.5 * uniform_regret
