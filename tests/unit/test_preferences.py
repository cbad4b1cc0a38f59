"""Learning rate, EMA step and the per-user state (core.preferences)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.preferences import ImplicitAggregate, LearningRate, UserState, ema_update

RATE = LearningRate(base_alpha=0.1, alpha_max=0.5)
X = np.array([1.0, 0.0])
Y = np.array([0.0, 1.0])

unit_floats = st.floats(-1.0, 1.0, allow_nan=False)


@st.composite
def unit_vectors(draw: st.DrawFn, dim: int = 4) -> np.ndarray:
    values = draw(st.lists(unit_floats, min_size=dim, max_size=dim))
    v = np.array(values)
    norm = float(np.linalg.norm(v))
    if norm < 1e-3:
        v, norm = np.eye(dim)[0], 1.0
    return v / norm


# -- LearningRate -----------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "reliability", "expected"),
    [
        (1.0, 100.0, 0.1),
        (-2.0, 100.0, 0.2),  # |signal|
        (0.5, 100.0, 0.05),
        (1.0, 50.0, 0.05),  # proportional to reliability
        (100.0, 100.0, 0.5),  # clamped to alpha_max
        (0.0, 100.0, 0.0),
        (1.0, -20.0, 0.0),  # clamped to 0
    ],
)
def test_learning_rate_examples(signal: float, reliability: float, expected: float) -> None:
    assert RATE(signal, reliability) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@settings(deadline=None)
@given(
    base=st.floats(0.001, 1.0),
    alpha_max=st.floats(0.001, 1.0),
    signal=st.floats(-10.0, 10.0),
    reliability=st.floats(0.0, 100.0),
)
def test_learning_rate_is_clamped_product(
    base: float, alpha_max: float, signal: float, reliability: float
) -> None:
    alpha = LearningRate(base, alpha_max)(signal, reliability)
    assert 0.0 <= alpha <= alpha_max
    assert alpha == pytest.approx(min(base * abs(signal) * reliability / 100.0, alpha_max))


@settings(deadline=None)
@given(signal=st.floats(-1.0, 1.0), reliability=st.floats(0.0, 100.0))
def test_learning_rate_scales_linearly_below_the_cap(signal: float, reliability: float) -> None:
    rate = LearningRate(base_alpha=0.1, alpha_max=1.0)  # 0.1 * 2 * 100 / 100 never clamps
    assert rate(2 * signal, reliability) == pytest.approx(2 * rate(signal, reliability))
    assert rate(signal, reliability / 2) == pytest.approx(rate(signal, reliability) / 2)


# -- ema_update --------------------------------------------------------------


def test_ema_update_exact_numbers() -> None:
    p = np.array([0.2, -0.4])
    v = np.array([0.6, 0.8])
    # 0.25 * v + 0.75 * p
    np.testing.assert_allclose(ema_update(p, v, 2.0, 0.25), [0.3, -0.1], atol=1e-15)
    # -0.25 * v + 0.75 * p: only the sign of the signal counts
    np.testing.assert_allclose(ema_update(p, v, -0.3, 0.25), [0.0, -0.5], atol=1e-15)


@settings(deadline=None)
@given(
    p=unit_vectors(),
    v=unit_vectors(),
    signal=st.floats(-5.0, 5.0).filter(lambda s: s != 0.0),
    alpha=st.floats(0.0, 1.0),
)
def test_ema_update_formula(p: np.ndarray, v: np.ndarray, signal: float, alpha: float) -> None:
    s = 1.0 if signal > 0 else -1.0
    expected = alpha * s * v + (1.0 - alpha) * p
    np.testing.assert_array_equal(ema_update(p, v, signal, alpha), expected)


@settings(deadline=None)
@given(
    steps=st.lists(
        st.tuples(unit_vectors(), st.sampled_from([-1.0, 1.0]), st.floats(0.0, 1.0)),
        max_size=40,
    )
)
def test_norm_never_exceeds_one_from_zero(steps: list[tuple[np.ndarray, float, float]]) -> None:
    p = np.zeros(4)
    for v, signal, alpha in steps:
        p = ema_update(p, v, signal, alpha)
        assert float(np.linalg.norm(p)) <= 1.0 + 1e-12


@settings(deadline=None)
@given(p=unit_vectors(), scale=st.floats(0.0, 1.0), v=unit_vectors(), alpha=st.floats(0.01, 1.0))
def test_sign_decides_direction(p: np.ndarray, scale: float, v: np.ndarray, alpha: float) -> None:
    p = p * scale  # any |p| <= 1
    before = float(p @ v)
    assert float(ema_update(p, v, -1.0, alpha) @ v) <= before + 1e-12
    assert float(ema_update(p, v, 1.0, alpha) @ v) >= before - 1e-12
    # towards: the distance to v shrinks by exactly (1 - alpha)
    assert np.linalg.norm(ema_update(p, v, 1.0, alpha) - v) == pytest.approx(
        (1.0 - alpha) * np.linalg.norm(p - v), abs=1e-12
    )


def test_negative_signal_moves_away() -> None:
    p = np.array([0.5, 0.5])
    after = ema_update(p, X, -1.0, 0.5)
    np.testing.assert_allclose(after, [-0.25, 0.25])
    assert np.linalg.norm(after - X) > np.linalg.norm(p - X)


@pytest.mark.parametrize(("signal", "alpha"), [(0.0, 0.3), (1.0, 0.0), (-1.0, 0.0)])
def test_zero_alpha_or_signal_leaves_p_unchanged(signal: float, alpha: float) -> None:
    p = np.array([0.3, -0.2])
    np.testing.assert_array_equal(ema_update(p, X, signal, alpha), [0.3, -0.2])


# -- UserState.apply_explicit -------------------------------------------------


def test_new_state_is_empty() -> None:
    state = UserState.new("u", 3)
    np.testing.assert_array_equal(state.vector, np.zeros(3))
    assert (state.events_applied, state.events_skipped, state.interactions) == (0, 0, 0)
    assert (state.explicit_offset, state.implicit_offset) == (-1, -1)
    assert state.first_event_at is None
    assert state.last_event_at is None


def test_apply_explicit_with_vector() -> None:
    state = UserState.new("u", 2)
    assert state.apply_explicit(7, 1.0, X, timestamp=100.0, rate=RATE, now=200.0) is True
    np.testing.assert_allclose(state.vector, [0.1, 0.0])
    assert (state.events_applied, state.events_skipped, state.interactions) == (1, 0, 1)
    assert state.explicit_offset == 7
    assert (state.first_event_at, state.last_event_at, state.updated_at) == (100.0, 100.0, 200.0)


def test_apply_explicit_without_item_vector_is_skipped() -> None:
    state = UserState.new("u", 2)
    assert state.apply_explicit(3, 1.0, None, timestamp=5.0, rate=RATE, now=6.0) is True
    np.testing.assert_array_equal(state.vector, [0.0, 0.0])
    assert (state.events_applied, state.events_skipped, state.interactions) == (0, 1, 1)
    assert state.explicit_offset == 3
    assert state.first_event_at == 5.0


def test_apply_explicit_sequence_exact() -> None:
    state = UserState.new("u", 2)
    state.apply_explicit(1, 1.0, X, 1.0, RATE, now=1.0)  # [0.1, 0]
    state.apply_explicit(2, 1.0, Y, 2.0, RATE, now=2.0)  # 0.1*Y + 0.9*p = [0.09, 0.1]
    state.apply_explicit(3, -1.0, X, 3.0, RATE, now=3.0)  # -0.1*X + 0.9*p = [-0.019, 0.09]
    np.testing.assert_allclose(state.vector, [-0.019, 0.09], atol=1e-15)
    assert state.events_applied == 3


def test_apply_explicit_uses_reliability() -> None:
    state = UserState.new("u", 2)
    state.apply_explicit(1, 1.0, X, 1.0, RATE, now=1.0, reliability=50.0)
    np.testing.assert_allclose(state.vector, [0.05, 0.0])


def test_apply_explicit_is_idempotent_per_offset() -> None:
    state = UserState.new("u", 2)
    assert state.apply_explicit(5, 1.0, X, 10.0, RATE, now=10.0)
    assert not state.apply_explicit(5, 1.0, X, 20.0, RATE, now=20.0)
    assert not state.apply_explicit(4, 1.0, Y, 20.0, RATE, now=20.0)
    np.testing.assert_allclose(state.vector, [0.1, 0.0])
    assert (state.events_applied, state.interactions, state.explicit_offset) == (1, 1, 5)
    assert (state.last_event_at, state.updated_at) == (10.0, 10.0)


def test_first_and_last_event_times() -> None:
    state = UserState.new("u", 2)
    for offset, ts in enumerate([50.0, 10.0, 30.0]):
        state.apply_explicit(offset, 1.0, X, ts, RATE, now=99.0)
    assert (state.first_event_at, state.last_event_at) == (10.0, 50.0)


# -- ImplicitAggregate and apply_implicit ------------------------------------


def five_clicks_two_impressions() -> ImplicitAggregate:
    agg = ImplicitAggregate()
    for offset in range(3, 8):
        agg.add(0.15, is_impression=False, offset=offset, timestamp=float(offset))
    agg.add(0.0, is_impression=True, offset=9, timestamp=1.0)
    agg.add(0.0, is_impression=True, offset=8, timestamp=20.0)
    return agg


def test_aggregate_sums_interactions_only() -> None:
    agg = five_clicks_two_impressions()
    assert agg.signal == pytest.approx(0.75)
    assert (agg.interactions, agg.impressions, agg.max_offset) == (5, 2, 9)
    assert (agg.first_at, agg.last_at) == (1.0, 20.0)


def test_impression_signal_is_not_summed() -> None:
    agg = ImplicitAggregate()
    agg.add(0.9, is_impression=True, offset=0, timestamp=0.0)
    assert (agg.signal, agg.interactions, agg.impressions) == (0.0, 0, 1)


def test_apply_implicit_aggregate() -> None:
    state = UserState.new("u", 2)
    state.apply_implicit(five_clicks_two_impressions(), Y, RATE, now=50.0)
    # one step with alpha = 0.1 * 0.75
    np.testing.assert_allclose(state.vector, [0.0, 0.075])
    assert (state.events_applied, state.events_skipped) == (5, 0)
    assert (state.interactions, state.impressions) == (5, 2)
    assert (state.implicit_offset, state.explicit_offset) == (9, -1)
    assert (state.first_event_at, state.last_event_at, state.updated_at) == (1.0, 20.0, 50.0)


def test_apply_implicit_without_item_vector() -> None:
    state = UserState.new("u", 2)
    state.apply_implicit(five_clicks_two_impressions(), None, RATE, now=50.0)
    np.testing.assert_array_equal(state.vector, [0.0, 0.0])
    assert (state.events_applied, state.events_skipped, state.interactions) == (0, 5, 5)
    assert state.impressions == 2


def test_apply_implicit_impressions_only() -> None:
    agg = ImplicitAggregate()
    for offset in (4, 2, 6):
        agg.add(0.0, is_impression=True, offset=offset, timestamp=1.0)
    state = UserState.new("u", 2)
    state.apply_implicit(agg, X, RATE, now=2.0)
    np.testing.assert_array_equal(state.vector, [0.0, 0.0])
    assert (state.events_applied, state.interactions, state.impressions) == (0, 0, 3)
    assert state.implicit_offset == 6


def test_implicit_offset_never_decreases() -> None:
    state = UserState.new("u", 2)
    state.implicit_offset = 20
    state.apply_implicit(five_clicks_two_impressions(), X, RATE, now=1.0)
    assert state.implicit_offset == 20
