"""Our SNIPS and DR on Open Bandit Pipeline's synthetic bandit data, against the truth.

obp does not install here (0.5.7 requires Python < 3.11), so its synthetic data set is
written out from its published formulas (``SyntheticBanditDataset`` with
``logistic_reward_function`` and ``linear_behavior_policy``): a context
``x ~ N(0, I_d)``, one-hot actions, ``q(x, a) = sigmoid(x·θ_a + β_a)``, the logging
policy ``softmax(x·c + b_a)``. The data set knows every ``q(x, a)``, so the value of
any target policy is known exactly: the oracle our estimators are checked against.
"""

from __future__ import annotations

import numpy as np

from recloop.core.exploration import probe
from recloop.learning.validation import LoggedSlate, doubly_robust, snips, target_probabilities

ACTIONS = 10
DIM = 5
ROUNDS = 3_000
EPSILON = 0.1


def obp_synthetic(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(expected rewards q, logging probabilities, logged actions, rewards)."""
    rng = np.random.default_rng(seed)
    context = rng.normal(size=(ROUNDS, DIM))
    theta, beta = rng.uniform(size=(ACTIONS, DIM)), rng.uniform(size=ACTIONS)
    q = 1.0 / (1.0 + np.exp(-(context @ theta.T + beta - 2.0)))
    logits = context @ rng.uniform(size=DIM)[:, None] + rng.uniform(size=ACTIONS)
    behaviour = np.exp(logits - logits.max(axis=1, keepdims=True))
    behaviour /= behaviour.sum(axis=1, keepdims=True)
    actions = np.array([rng.choice(ACTIONS, p=b) for b in behaviour])
    rewards = rng.binomial(1, q[np.arange(ROUNDS), actions]).astype(np.float64)
    return q, behaviour, actions, rewards


def test_snips_and_dr_cover_the_true_value_of_an_epsilon_greedy_policy() -> None:
    covered = {"snips": 0, "dr": 0}
    errors = {"snips": [], "dr": []}
    seeds = range(20)
    for seed in seeds:
        q, behaviour, actions, rewards = obp_synthetic(seed)
        rng = np.random.default_rng(1_000 + seed)
        scores = [row + rng.normal(0.0, 0.1, ACTIONS) for row in q]  # a decent model
        truth = float(
            np.mean(
                [target_probabilities(s, EPSILON) @ row for s, row in zip(scores, q, strict=True)]
            )
        )
        slates = [
            LoggedSlate(np.zeros((ACTIONS, 1)), int(a), float(b[a]), float(r))
            for a, b, r in zip(actions, behaviour, rewards, strict=True)
        ]
        # DR's reward model: the model's own scores, clipped to probabilities
        predicted = [np.clip(s, 0.0, 1.0) for s in scores]
        for name, estimate in (
            ("snips", snips(slates, scores, EPSILON)),
            ("dr", doubly_robust(slates, scores, EPSILON, predicted)),
        ):
            assert estimate.ci_low is not None and estimate.ci_high is not None
            assert estimate.value is not None
            covered[name] += estimate.ci_low <= truth <= estimate.ci_high
            errors[name].append(estimate.value - truth)
    for name in covered:
        # 95 % intervals: 19 of 20 expected; 16 or fewer has probability < 2 %
        assert covered[name] >= 17, (name, covered[name])
        # and no systematic bias: the mean error is small against the errors' spread
        e = np.asarray(errors[name])
        assert abs(e.mean()) < 3 * e.std(ddof=1) / np.sqrt(len(e)), (name, e.mean())


def test_snips_and_dr_cover_the_true_value_from_probe_logged_data() -> None:
    """The logging policy is recloop's probes (``core.exploration.probe``): the greedy
    action by an equal-weight blend of three noisy scorers' ranks, or with probability ε
    one scorer's own pick, the scorer drawn by weight. The target shows one scorer's pick
    always (in the logging policy's support); our SNIPS and DR from the logged
    propensities cover its true value."""
    noise = (0.05, 0.2, 0.6)
    weights = [0.5, 0.3, 0.2]
    covered = {"snips": 0, "dr": 0}
    errors: dict[str, list[float]] = {"snips": [], "dr": []}
    for seed in range(20):
        q = obp_synthetic(seed)[0]
        rng = np.random.default_rng(2_000 + seed)
        slates, targets, predicted, truth = [], [], [], 0.0
        for row in q:
            scores = [row + rng.normal(0.0, s, ACTIONS) for s in noise]
            blend = sum(np.argsort(np.argsort(s)) for s in scores)  # rank percentiles
            greedy = np.argsort(-blend, kind="stable")  # actions, best first
            place = np.argsort(greedy)  # an action's place in the greedy order
            picks = [int(place[int(np.argmax(s))]) for s in scores]
            shown = probe(picks, weights, ACTIONS, EPSILON, rng).explored
            action = int(greedy[shown.order[0]])
            reward = float(rng.random() < row[action])
            slates.append(
                LoggedSlate(np.zeros((ACTIONS, 1)), action, float(shown.propensities[0]), reward)
            )
            target = np.zeros(ACTIONS)
            target[int(np.argmax(scores[1]))] = 1.0  # the second scorer's pick, always
            targets.append(target)
            predicted.append(np.clip(scores[1], 0.0, 1.0))
            truth += float(target @ row) / len(q)
        for name, estimate in (
            ("snips", snips(slates, targets, 0.0)),
            ("dr", doubly_robust(slates, targets, 0.0, predicted)),
        ):
            assert estimate.ci_low is not None and estimate.ci_high is not None
            assert estimate.value is not None
            covered[name] += estimate.ci_low <= truth <= estimate.ci_high
            errors[name].append(estimate.value - truth)
    for name in covered:
        assert covered[name] >= 17, (name, covered[name])
        e = np.asarray(errors[name])
        assert abs(e.mean()) < 3 * e.std(ddof=1) / np.sqrt(len(e)), (name, e.mean())
