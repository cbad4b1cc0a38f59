"""Blue-green deployment: sticky slots, transitions, and the canary's verdict
(core.deployment)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recloop.core.assignment import gb_hash
from recloop.core.deployment import (
    Slots,
    Transition,
    confirm,
    deploy,
    judge_canary,
    promote,
    rollback,
    slot_of,
)
from recloop.core.errors import Conflict, InvalidInput
from recloop.core.stats import SampleStats, proportions_test

USERS = [f"user-{i}" for i in range(20_000)]

# -- storage form ---------------------------------------------------------------------


def test_slots_survive_a_json_round_trip() -> None:
    slots = Slots("m1", "m2", 0.1, "canary:m2", 10.0, 5.0, "m0", 1_000, 50)
    stored = json.loads(json.dumps(slots.to_dict()))
    assert Slots.from_dict(stored) == slots


def test_slots_from_an_older_or_newer_writer() -> None:
    assert Slots.from_dict({}) == Slots()
    assert Slots.from_dict({"blue_version": "m1", "added_later": 1}) == Slots(blue_version="m1")


def test_transitions_survive_a_json_round_trip() -> None:
    t = Transition(1.0, "deploy", None, "m1", "canary", {"canary_fraction": 0.1})
    assert Transition.from_dict(json.loads(json.dumps(t.to_dict()))) == t


# -- sticky slots ----------------------------------------------------------------------------


def canary(fraction: float, version: str = "m2") -> Slots:
    return deploy(Slots(blue_version="m1"), version, 0.0, canary_fraction=fraction)[0]


def test_everyone_is_blue_without_a_green() -> None:
    assert {slot_of(Slots(), u) for u in USERS[:1000]} == {"blue"}
    assert {slot_of(Slots(blue_version="m1", canary_fraction=0.5), u) for u in USERS[:1000]} == {
        "blue"
    }


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_about_canary_fraction_of_users_are_green(fraction: float) -> None:
    slots = canary(fraction)
    share = np.mean([slot_of(slots, u) == "green" for u in USERS])
    sd = (fraction * (1 - fraction) / len(USERS)) ** 0.5
    assert abs(share - fraction) < 4 * sd + 1e-4  # 10,000 hash buckets: 1e-4 resolution


def test_a_user_keeps_their_slot() -> None:
    slots = canary(0.3)
    first = [slot_of(slots, u) for u in USERS[:2000]]
    assert [slot_of(slots, u) for u in USERS[:2000]] == first
    again = Slots.from_dict(json.loads(json.dumps(slots.to_dict())))  # after a restart
    assert [slot_of(again, u) for u in USERS[:2000]] == first


def test_slot_is_growthbooks_hash_of_salt_and_user() -> None:
    slots = canary(0.2)
    for user in USERS[:500]:
        bucket = gb_hash(slots.salt, user, 2)
        assert bucket is not None
        assert slot_of(slots, user) == ("green" if bucket < 0.2 else "blue")
    assert slot_of(slots, "") == "blue"


def test_raising_the_fraction_only_adds_users() -> None:
    small, large = canary(0.05), canary(0.2)
    green_small = {u for u in USERS if slot_of(small, u) == "green"}
    green_large = {u for u in USERS if slot_of(large, u) == "green"}
    assert green_small < green_large


def test_each_deployment_draws_other_users() -> None:
    first = {u for u in USERS if slot_of(canary(0.1, "m2"), u) == "green"}
    second = {u for u in USERS if slot_of(canary(0.1, "m3"), u) == "green"}
    overlap = len(first & second) / len(first)
    assert 0.05 < overlap < 0.15  # independent draws overlap by about the fraction


# -- transitions -------------------------------------------------------------------------------


def test_deploy_promote_confirm() -> None:
    slots, t = deploy(Slots(blue_version="m1"), "m2", now=100.0, canary_fraction=0.1)
    assert (slots.blue_version, slots.green_version, slots.canary_fraction) == ("m1", "m2", 0.1)
    assert (slots.deployed_at, slots.salt) == (100.0, "canary:m2")
    assert (t.at, t.action, t.from_version, t.to_version) == (100.0, "deploy", "m1", "m2")
    assert t.numbers["canary_fraction"] == 0.1

    slots, t = promote(slots, now=200.0, baseline=(50_000, 2_500), reason="non-inferior")
    assert (slots.blue_version, slots.green_version, slots.previous_version) == ("m2", None, "m1")
    assert (slots.promoted_at, slots.baseline_impressions, slots.baseline_clicks) == (
        200.0,
        50_000,
        2_500,
    )
    assert (t.action, t.from_version, t.to_version, t.reason) == (
        "promote",
        "m1",
        "m2",
        "non-inferior",
    )
    assert slot_of(slots, "anyone") == "blue"

    slots, t = confirm(slots, now=300.0)
    assert slots == Slots(
        blue_version="m2", canary_fraction=0.0, salt="canary:m2", deployed_at=100.0
    )
    assert (t.action, t.from_version, t.to_version) == ("confirm", "m2", "m2")


def test_rollback_of_a_canary_keeps_blue() -> None:
    slots, _ = deploy(Slots(blue_version="m1"), "m2", now=100.0)
    rolled, t = rollback(slots, now=150.0, reason="CTR halved", numbers={"ci_high": -0.4})
    assert (rolled.blue_version, rolled.green_version, rolled.canary_fraction) == ("m1", None, 0.0)
    assert (t.action, t.from_version, t.to_version) == ("rollback", "m2", "m1")
    assert (t.reason, t.numbers) == ("CTR halved", {"ci_high": -0.4})


def test_rollback_after_promotion_returns_to_the_previous_version() -> None:
    slots, _ = deploy(Slots(blue_version="m1"), "m2", now=100.0)
    slots, _ = promote(slots, now=200.0, baseline=(1_000, 50))
    rolled, t = rollback(slots, now=300.0)
    assert (rolled.blue_version, rolled.previous_version, rolled.promoted_at) == ("m1", None, None)
    assert (rolled.baseline_impressions, rolled.baseline_clicks) == (0, 0)
    assert (t.from_version, t.to_version) == ("m2", "m1")


def test_the_first_model_rolls_back_to_no_model() -> None:
    slots, t = deploy(Slots(), "m1", now=1.0)
    assert t.from_version is None
    slots, _ = promote(slots, now=2.0)
    rolled, t = rollback(slots, now=3.0)
    assert rolled.blue_version is None
    assert (t.from_version, t.to_version) == ("m1", None)


@pytest.mark.parametrize(
    ("action", "state", "match"),
    [
        (lambda: deploy(canary(0.1), "m3", 1.0), "green slot holds 'm2'", "green slot holds 'm2'"),
        (lambda: deploy(Slots(blue_version="m1"), "m1", 1.0), "blue", "already blue"),
        (lambda: promote(Slots(blue_version="m1"), 1.0), "no green", "green slot is empty"),
        (
            lambda: rollback(Slots(blue_version="m1"), 1.0),
            "no green, no promotion watched",
            "nothing to roll back",
        ),
        (
            lambda: confirm(Slots(blue_version="m1"), 1.0),
            "no promotion watched",
            "no promotion is being watched",
        ),
    ],
)
def test_transitions_the_slots_refuse_are_conflicts_naming_the_state(
    action: object, state: str, match: str
) -> None:
    with pytest.raises(Conflict, match=match) as caught:
        action()  # type: ignore[operator]
    assert caught.value.state == state


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (lambda: deploy(Slots(), "m1", 1.0, canary_fraction=0.0), "canary_fraction"),
        (lambda: deploy(Slots(), "m1", 1.0, canary_fraction=1.5), "canary_fraction"),
        (lambda: promote(canary(0.1), 1.0, baseline=(10, 11)), "baseline"),
    ],
)
def test_invalid_arguments_are_refused(action: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        action()  # type: ignore[operator]


# -- the canary's verdict ------------------------------------------------------------------------


def test_a_clearly_worse_green_is_rolled_back() -> None:
    verdict = judge_canary(blue=(20_000, 1_000), green=(20_000, 500))  # CTR halved
    assert verdict.decision == "rollback"
    assert verdict.numbers["ci_high"] < -0.05
    assert verdict.numbers["relative_effect"] == pytest.approx(-0.5)
    assert "0.0250" in verdict.reason and "0.0500" in verdict.reason and "-50.0%" in verdict.reason


def test_a_clearly_non_inferior_green_is_promoted() -> None:
    verdict = judge_canary(blue=(300_000, 15_000), green=(300_000, 15_300))
    assert verdict.decision == "promote"
    assert verdict.numbers["ci_low"] > -0.05
    assert "non-inferior" in verdict.reason


def test_a_better_green_is_promoted_sooner() -> None:
    assert judge_canary(blue=(20_000, 1_000), green=(20_000, 1_300)).decision == "promote"


def test_too_few_impressions_wait_whatever_the_rates() -> None:
    verdict = judge_canary(blue=(999, 100), green=(50_000, 0), min_impressions=1_000)
    assert verdict.decision == "wait"
    assert "1000 impressions" in verdict.reason
    assert verdict.numbers["blue_impressions"] == 999


def test_an_undecided_comparison_waits() -> None:
    verdict = judge_canary(blue=(20_000, 1_000), green=(20_000, 980))
    assert verdict.decision == "wait"
    assert verdict.numbers["ci_low"] < -0.05 < verdict.numbers["ci_high"]


def test_no_clicks_at_all_waits_with_the_reason() -> None:
    verdict = judge_canary(blue=(5_000, 0), green=(5_000, 0))
    assert verdict.decision == "wait"
    assert "cannot compare yet" in verdict.reason


def test_the_interval_is_the_anytime_valid_one() -> None:
    blue, green = (40_000, 2_000), (40_000, 1_900)
    verdict = judge_canary(blue, green)
    fixed = proportions_test(SampleStats(*blue, blue[1]), SampleStats(*green, green[1]))
    assert fixed.ci_relative is not None
    assert verdict.numbers["ci_low"] < fixed.ci_relative[0]
    assert verdict.numbers["ci_high"] > fixed.ci_relative[1]


def test_checking_after_every_batch_keeps_the_false_promotion_rate() -> None:
    """Green exactly ``margin`` worse: every promotion is an error. Checked 100 times per
    run, the confidence sequence keeps errors under alpha; the fixed-horizon interval,
    peeked at the same way, does not."""
    rng = np.random.default_rng(0)
    runs, looks, batch, p_blue = 200, 100, 1_000, 0.05
    p_green = p_blue * (1 - 0.05)
    sequential_errors = peeking_errors = 0
    for _ in range(runs):
        blue_clicks = green_clicks = 0
        sequential = peeking = False
        for look in range(1, looks + 1):
            blue_clicks += int(rng.binomial(batch, p_blue))
            green_clicks += int(rng.binomial(batch, p_green))
            n = look * batch
            verdict = judge_canary((n, blue_clicks), (n, green_clicks), min_impressions=1_000)
            sequential |= verdict.decision == "promote"
            fixed = proportions_test(
                SampleStats(n, blue_clicks, blue_clicks), SampleStats(n, green_clicks, green_clicks)
            )
            peeking |= fixed.ci_relative is not None and fixed.ci_relative[0] > -0.05
        sequential_errors += sequential
        peeking_errors += peeking
    assert sequential_errors / runs <= 0.05
    assert peeking_errors / runs > 0.05


def test_a_green_credibly_worse_within_the_margin_rolls_back_at_tolerance_zero() -> None:
    """4 % worse, credibly (the interval entirely below 0, not below -5 %): with the margin
    as tolerance (the watch's rule) it waits; the canary's tolerance 0 rolls it back."""
    blue, green = (1_000_000, 50_000), (1_000_000, 48_000)
    waits = judge_canary(blue, green)
    assert waits.decision == "wait"
    assert waits.numbers["ci_low"] < -0.05 < waits.numbers["ci_high"] < 0.0
    assert waits.numbers["tolerance"] == 0.05
    verdict = judge_canary(blue, green, tolerance=0.0)
    assert verdict.decision == "rollback"
    assert verdict.numbers["tolerance"] == 0.0
    assert "entirely below -0.0%: worse" in verdict.reason


def test_tolerance_zero_still_promotes_a_green_not_credibly_worse() -> None:
    verdict = judge_canary(blue=(300_000, 15_000), green=(300_000, 15_000), tolerance=0.0)
    assert verdict.decision == "promote"
    assert verdict.numbers["ci_low"] > -0.05 and verdict.numbers["ci_high"] > 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_impressions": 0}, "min_impressions"),
        ({"margin": 1.0}, "margin"),
        ({"margin": -0.1}, "margin"),
        ({"tolerance": -0.01}, "tolerance"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"alpha": 0.0}, "alpha"),
        ({"green": (10, 11)}, "treatment.sum"),
    ],
)
def test_judge_canary_refuses_bad_arguments(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"blue": (1_000, 50), "green": (1_000, 50), **kwargs}
    with pytest.raises(InvalidInput) as caught:
        judge_canary(**arguments)  # type: ignore[arg-type]
    assert caught.value.field == field
