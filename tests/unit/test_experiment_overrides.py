"""What a variant's overrides mean exactly (``core.experiments``): checks and weights."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recloop.core.errors import InvalidInput
from recloop.core.experiments import (
    Experiment,
    Overrides,
    Variant,
    check_overrides,
    complete_weights,
    overrides,
    strategy_weights,
)

ALGORITHMS = ("a", "b", "c", "d")


def _exp(config: dict, experiment_id: str = "e", created_at: float = 0.0) -> Experiment:
    return Experiment(
        experiment_id,
        experiment_id,
        (Variant("control", 0.5), Variant("treatment", 0.5, config)),
        (),
        created_at=created_at,
    )


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"weights": {"deep": 1.0}}, "variants.1.config.weights.deep"),
        ({"weights": {"a": 0.0}}, "variants.1.config.weights"),
        ({"weights": {}}, "variants.1.config.weights"),
        ({"weights": {"a": float("nan")}}, "variants.1.config.weights.a"),
        ({"weights": {"a": 0.6, "b": 0.5}, "mode": "override_some"}, "variants.1.config.weights"),
        ({"mode": "override_some"}, "variants.1.config.mode"),
        ({"weights": {"a": 1.0}, "mode": "merge"}, "variants.1.config.mode"),
        ({"epsilon": -0.1}, "variants.1.config.epsilon"),
        ({"model_slot": "red"}, "variants.1.config.model_slot"),
        ({"temperature": 1.0}, "variants.1.config.temperature"),
    ],
)
def test_overrides_without_an_exact_meaning_are_refused_naming_the_field(
    config: dict, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_overrides(_exp(config), ALGORITHMS)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "config",
    [
        {"weights": {"a": 1.0, "b": 0.0}},
        {"weights": {"a": 1.0, "b": 0.0}, "mode": "override_some"},
        {"weights": {"a": 0.0}, "mode": "override_some"},
        {"epsilon": 0.0, "model_slot": "green"},
        {},
    ],
)
def test_exact_overrides_are_accepted(config: dict) -> None:
    check_overrides(_exp(config), ALGORITHMS)


def test_complete_weights_names_every_algorithm_for_override_all_only() -> None:
    done = complete_weights(_exp({"weights": {"b": 3.0}}), ALGORITHMS)
    assert done.variants[1].config["weights"] == {"b": 3.0, "a": 0.0, "c": 0.0, "d": 0.0}
    some = _exp({"weights": {"b": 0.3}, "mode": "override_some"})
    assert complete_weights(some, ALGORITHMS) == some


def test_override_all_gives_omitted_and_segment_algorithms_zero() -> None:
    segment = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    assert strategy_weights(Overrides({"a": 1.0, "b": 3.0}), segment) == {
        "a": 0.25,
        "b": 0.75,
        "c": 0.0,
        "d": 0.0,
    }


def test_override_some_named_shares_exact_and_rest_proportional() -> None:
    segment = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    weights = strategy_weights(Overrides({"a": 0.5, "b": 0.0}, mode="override_some"), segment)
    assert weights["a"] == 0.5
    assert weights["b"] == 0.0
    assert weights["c"] == pytest.approx(0.5 * 0.3 / 0.7)
    assert weights["d"] == pytest.approx(0.5 * 0.4 / 0.7)


def test_override_some_with_nothing_left_to_share_renormalises_the_named() -> None:
    weights = strategy_weights(Overrides({"a": 0.2, "b": 0.2}, mode="override_some"), {"a": 1.0})
    assert weights == {"a": 0.5, "b": 0.5}


@given(
    st.dictionaries(st.sampled_from(ALGORITHMS), st.floats(0.0, 1.0), min_size=1),
    st.dictionaries(st.sampled_from(ALGORITHMS), st.floats(0.0, 1.0), min_size=1),
    st.sampled_from(["override_all", "override_some"]),
)
def test_weights_are_a_distribution_over_every_named_algorithm(
    given_weights: dict, segment: dict, mode: str
) -> None:
    total = sum(given_weights.values())
    if mode == "override_all" and total <= 0:
        return
    if mode == "override_some":
        given_weights = {a: w / max(total, 1.0) for a, w in given_weights.items()}
    if sum(segment.values()) <= 0:
        return
    segment = {a: w / sum(segment.values()) for a, w in segment.items()}
    weights = strategy_weights(Overrides(given_weights, mode=mode), segment)  # type: ignore[arg-type]
    assert set(weights) == set(given_weights) | set(segment)
    assert all(w >= 0 for w in weights.values())
    assert sum(weights.values()) == pytest.approx(1.0)


def test_overrides_keep_the_variants_mode_with_its_weights() -> None:
    first = _exp({"weights": {"a": 0.4}, "mode": "override_some"}, "first", 1.0)
    second = _exp({"weights": {"b": 1.0}, "epsilon": 0.2}, "second", 2.0)
    found = overrides([(second, "treatment"), (first, "treatment")])
    assert found == Overrides({"a": 0.4}, 0.2, None, "override_some")


def test_override_some_shares_the_rest_even_when_the_segment_weights_are_tiny() -> None:
    """``left * w / total`` underflows to 0 for a subnormal ``w``; the share is taken first."""
    weights = strategy_weights(Overrides({"a": 0.5}, mode="override_some"), {"a": 1.0, "b": 5e-324})
    assert weights == {"a": 0.5, "b": 0.5}
