"""The retrain gate reads its own off-policy evidence (issue 15 item 5): a candidate whose
AUC passes but whose top pick is worse than what serves is rejected, with the numbers."""

from __future__ import annotations

import numpy as np

from recloop.core.features import COLUMN, FEATURE_NAMES
from recloop.learning.training import Slate, TrainingData, train
from recloop.learning.validation import Estimate, PromotionGate, decide_off_policy

SERVING = Estimate(0.0241, 0.0200, 0.0282, 4_000, 4_000.0)


def _click_rate(affinity: float, position: int, drifted: bool) -> float:
    """Top slot clicks far more than the second (what AUC mostly sees); within a slot, the
    affinity helps before the drift and hurts after it (the taste the model learnt is gone)."""
    taste = 1.0 - affinity if drifted else affinity
    return 0.1 + 0.5 * taste if position == 0 else 0.01 + 0.02 * taste


def drifting_data(seed: int, slates: int = 6_000) -> TrainingData:
    """Two items per impression, their order drawn uniformly (propensity 0.5 for the top);
    the last 30 % of impressions (the holdout) come after the taste drifted."""
    rng = np.random.default_rng(seed)
    data = TrainingData()
    blocks = []
    for t in range(slates):
        drifted = t >= slates * 0.7
        rows = np.zeros((2, len(FEATURE_NAMES)))
        rows[:, COLUMN["affinity"]] = rng.random(2)
        rows[:, COLUMN["position"]] = [0.0, 1.0]
        rows[:, COLUMN["inverse_position"]] = [1.0, 0.5]
        clicks = [
            int(rng.random() < _click_rate(rows[p, COLUMN["affinity"]], p, drifted)) for p in (0, 1)
        ]
        blocks.append(rows)
        data.labels.extend(clicks)
        data.conversions.extend([0, 0])
        data.timestamps.extend([float(t), float(t)])
        data.slates.append(Slate(float(t), rows, 0.5, float(clicks[0]), 0.1))
    data.features = np.concatenate(blocks)
    return data


def test_a_candidate_that_passes_on_auc_but_loses_off_policy_is_rejected() -> None:
    for seed in (1, 2, 3):
        outcome = train(drifting_data(seed), None, PromotionGate(min_auc_gain=0.01), 0.3)
        gate = outcome.metrics["gate"]
        assert gate["auc"]["accepted"] is True, gate  # position alone carries the AUC
        assert outcome.metrics["candidate"]["auc"] > 0.6
        assert not outcome.accepted
        assert gate["accepted"] is False and gate["off_policy"]["accepted"] is False
        numbers = gate["off_policy"]["numbers"]
        assert numbers["snips_ci_high"] < numbers["serving"]
        assert numbers["serving"] == outcome.metrics["off_policy"]["logging"]["value"]
        assert outcome.reason.startswith("rejected by the gate: AUC accepted")
        assert "off-policy rejected: SNIPS" in outcome.reason


def test_the_same_candidate_without_the_drift_is_accepted() -> None:
    data = drifting_data(1)
    undrifted = drifting_data(1, slates=6_000)
    # the same impressions, their clicks drawn from the learnt taste throughout
    rng = np.random.default_rng(9)
    labels = []
    for s in undrifted.slates:
        affinity = s.rows[:, COLUMN["affinity"]]
        clicks = [int(rng.random() < _click_rate(affinity[p], p, False)) for p in (0, 1)]
        labels.extend(clicks)
        s.reward = float(clicks[0])
    undrifted.labels = labels
    assert undrifted.features.shape == data.features.shape
    outcome = train(undrifted, None, PromotionGate(min_auc_gain=0.01), 0.3)
    assert outcome.accepted, outcome.reason
    numbers = outcome.metrics["gate"]["off_policy"]["numbers"]
    assert numbers["snips_value"] > numbers["serving"]


def test_an_estimate_below_serving_rejects_and_names_its_numbers() -> None:
    worse = Estimate(0.0085, 0.0040, 0.0130, 4_000, 900.0)
    verdict = decide_off_policy({"snips": worse}, SERVING)
    assert not verdict.accepted
    assert verdict.numbers == {
        "serving": 0.0241,
        "serving_ci_low": 0.0200,
        "snips_value": 0.0085,
        "snips_ci_low": 0.0040,
        "snips_ci_high": 0.0130,
        "snips_effective_n": 900.0,
    }
    # DR alone enough to reject, too: either estimator confidently worse rejects.
    fine = Estimate(0.025, 0.02, 0.03, 4_000, 900.0)
    assert not decide_off_policy({"snips": fine, "dr": worse}, SERVING).accepted
    assert decide_off_policy({"snips": fine, "dr": fine}, SERVING).accepted


def test_an_interval_reaching_the_serving_value_is_not_evidence_of_worse() -> None:
    overlapping = Estimate(0.0200, 0.0150, 0.0250, 4_000, 900.0)
    assert decide_off_policy({"snips": overlapping}, SERVING).accepted


def test_too_few_effective_samples_or_no_interval_is_no_evidence() -> None:
    few = Estimate(0.001, 0.0, 0.002, 4_000, 12.0)
    verdict = decide_off_policy({"snips": few}, SERVING, min_effective_n=30.0)
    assert verdict.accepted and "effective n 12 < 30" in verdict.reason
    none = Estimate(None, None, None, 0, 0.0, "zero_weight")
    verdict = decide_off_policy({"snips": none}, SERVING)
    assert verdict.accepted and "zero_weight" in verdict.reason
    no_serving = Estimate(None, None, None, 0, 0.0, "no_slates")
    assert decide_off_policy({"snips": few}, no_serving).accepted


# -- supported or unproven: how much of the canary a candidate gets ------------------------------


def test_a_point_estimate_at_least_the_serving_lower_bound_is_supported() -> None:
    at_floor = Estimate(0.0200, 0.0150, 0.0250, 4_000, 900.0)  # SERVING's lower bound is 0.0200
    verdict = decide_off_policy({"snips": at_floor}, SERVING)
    assert verdict.accepted and verdict.supported
    assert verdict.numbers["serving_ci_low"] == 0.0200
    assert "point >= serving lower bound 0.0200" in verdict.reason
    assert verdict.reason.startswith("accepted: ")


def test_a_point_estimate_below_the_serving_lower_bound_passes_unproven() -> None:
    below = Estimate(0.0199, 0.0150, 0.0250, 4_000, 900.0)
    verdict = decide_off_policy({"snips": below}, SERVING)
    assert verdict.accepted and not verdict.supported
    assert verdict.reason.startswith("accepted, unproven: ")
    assert "point < serving lower bound 0.0200" in verdict.reason


def test_a_rejected_candidate_is_never_supported() -> None:
    worse = Estimate(0.0085, 0.0040, 0.0130, 4_000, 900.0)
    fine = Estimate(0.0300, 0.0250, 0.0350, 4_000, 900.0)
    verdict = decide_off_policy({"snips": fine, "dr": worse}, SERVING)
    assert not verdict.accepted and not verdict.supported


def test_no_usable_evidence_passes_unproven() -> None:
    few = Estimate(0.05, 0.04, 0.06, 4_000, 12.0)  # above serving, but 12 effective samples
    assert not decide_off_policy({"snips": few}, SERVING, min_effective_n=30.0).supported
    none = Estimate(None, None, None, 0, 0.0, "zero_weight")
    assert not decide_off_policy({"snips": none}, SERVING).supported
    no_serving = Estimate(None, None, None, 0, 0.0, "no_slates")
    assert not decide_off_policy({"snips": few}, no_serving).supported


def test_without_a_serving_interval_the_floor_is_the_serving_value() -> None:
    serving = Estimate(0.0241, None, None, 1, 1.0, "insufficient_data")
    assert decide_off_policy(
        {"snips": Estimate(0.0241, 0.02, 0.03, 4_000, 900.0)}, serving
    ).supported
    verdict = decide_off_policy({"snips": Estimate(0.0240, 0.02, 0.03, 4_000, 900.0)}, serving)
    assert verdict.accepted and not verdict.supported


def single_item(data: TrainingData) -> TrainingData:
    """The same impressions as if ``rank`` had shown one item (k = 1): each slate keeps its
    top row only."""
    for s in data.slates:
        s.rows = s.rows[:1]
    return data


def test_slates_of_one_item_are_no_evidence_about_a_candidate() -> None:
    """On a slate of one item every policy puts it on top: the weights are 1 / propensity
    whatever the model, so the drifted candidate (rejected on two-item slates, above) is
    neither rejected nor supported by them: it passes unproven, saying why."""
    outcome = train(single_item(drifting_data(1)), None, PromotionGate(min_auc_gain=0.01), 0.3)
    off_policy = outcome.metrics["gate"]["off_policy"]
    assert off_policy["accepted"] is True and off_policy["supported"] is False
    assert off_policy["numbers"] == {}
    assert "every logged slate shows one item" in off_policy["reason"]
    assert outcome.metrics["off_policy"]["single_item_slates"] > 0
    assert outcome.metrics["off_policy"]["slates"] == 0
    assert outcome.accepted  # the AUC half alone decides; the canary judges it, smaller


def test_the_undrifted_candidate_on_two_item_slates_is_supported() -> None:
    data = drifting_data(1, slates=6_000)
    rng = np.random.default_rng(9)
    labels = []
    for s in data.slates:
        affinity = s.rows[:, COLUMN["affinity"]]
        clicks = [int(rng.random() < _click_rate(affinity[p], p, False)) for p in (0, 1)]
        labels.extend(clicks)
        s.reward = float(clicks[0])
    data.labels = labels
    outcome = train(data, None, PromotionGate(min_auc_gain=0.01), 0.3)
    assert outcome.accepted and outcome.metrics["gate"]["off_policy"]["supported"] is True
