"""Counts, sliding windows, Beta posteriors and algorithm weights (core.bandit)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from recloop.core.bandit import (
    COUNT_LIMIT,
    BetaPrior,
    PerformanceCounts,
    PooledPrior,
    Posterior,
    Weights,
    WindowCounts,
    bucket_start,
    counts_of,
    disable_reason,
    floor_weights,
    pooled_prior,
    posterior,
    probability_best,
    sample_weights,
    satisfaction_of,
    segment_priors,
)
from recloop.core.errors import InvalidInput
from recloop.core.events import FEEDBACK_TYPES

HOUR = 3_600.0

# satisfaction sums are multiples of 1/4 (integer ratings), exact in binary floating point,
# so merges can be compared exactly
performance_counts = st.builds(
    PerformanceCounts,
    impressions=st.integers(0, 10**9),
    clicks=st.integers(0, 10**9),
    conversions=st.integers(0, 10**9),
    satisfaction_sum=st.integers(0, 4 * 10**6).map(lambda q: q / 4),
    satisfaction_n=st.integers(0, 10**6),
)

# -- PerformanceCounts -----------------------------------------------------------


@given(x=performance_counts, y=performance_counts)
def test_counts_merge_is_commutative(x: PerformanceCounts, y: PerformanceCounts) -> None:
    assert x + y == y + x


@given(x=performance_counts, y=performance_counts, z=performance_counts)
def test_counts_merge_is_associative(
    x: PerformanceCounts, y: PerformanceCounts, z: PerformanceCounts
) -> None:
    assert (x + y) + z == x + (y + z)


@given(x=performance_counts, y=performance_counts)
def test_counts_zero_is_neutral_and_sub_undoes_add(
    x: PerformanceCounts, y: PerformanceCounts
) -> None:
    assert x + PerformanceCounts() == x
    assert (x + y) - y == x


def test_counts_rates() -> None:
    counts = PerformanceCounts(
        impressions=400, clicks=10, conversions=2, satisfaction_sum=1.5, satisfaction_n=2
    )
    assert (counts.ctr, counts.conversion_rate, counts.satisfaction) == (0.025, 0.005, 0.75)
    empty = PerformanceCounts()
    assert (empty.ctr, empty.conversion_rate, empty.satisfaction) == (0.0, 0.0, None)


@pytest.mark.parametrize(
    ("event_type", "value", "expected"),
    [
        ("rating", 1.0, 0.0),
        ("rating", 2.0, 0.25),
        ("rating", 3.0, 0.5),
        ("rating", 4.5, 0.875),
        ("rating", 5.0, 1.0),
        ("like", None, 1.0),
        ("dislike", None, 0.0),
        ("click", None, None),
        ("share", None, None),
        ("dwell", 12.0, None),
    ],
)
def test_satisfaction_of(event_type: str, value: float | None, expected: float | None) -> None:
    assert satisfaction_of(event_type, value) == expected


def test_satisfaction_of_rating_needs_a_value() -> None:
    with pytest.raises(InvalidInput) as info:
        satisfaction_of("rating", None)
    assert info.value.field == "value"


COUNTED = {
    "impression": PerformanceCounts(impressions=1),
    "click": PerformanceCounts(clicks=1),
    "add_to_cart": PerformanceCounts(conversions=1),
    "purchase": PerformanceCounts(conversions=1),
    "rating": PerformanceCounts(satisfaction_sum=0.75, satisfaction_n=1),
    "like": PerformanceCounts(satisfaction_sum=1.0, satisfaction_n=1),
    "dislike": PerformanceCounts(satisfaction_sum=0.0, satisfaction_n=1),
}


@pytest.mark.parametrize("event_type", sorted(FEEDBACK_TYPES))
def test_counts_of_every_feedback_type(event_type: str) -> None:
    value = 4.0 if event_type in ("rating", "dwell") else None
    assert counts_of(event_type, value) == COUNTED.get(event_type)


# -- Buckets and the sliding window ------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "size", "expected"),
    [
        (0.0, HOUR, 0.0),
        (3_599.999, HOUR, 0.0),
        (3_600.0, HOUR, 3_600.0),
        (1_700_000_123.5, HOUR, 1_699_999_200.0),
        (-1.0, HOUR, -3_600.0),
        (7.5, 2.5, 7.5),
        (9.9, 2.5, 7.5),
    ],
)
def test_bucket_start(timestamp: float, size: float, expected: float) -> None:
    assert bucket_start(timestamp, size) == expected


@pytest.mark.parametrize("size", [0.0, -HOUR, math.nan])
def test_bucket_size_must_be_positive(size: float) -> None:
    with pytest.raises(InvalidInput):
        bucket_start(0.0, size)
    with pytest.raises(InvalidInput):
        WindowCounts(size)


def test_window_boundary_is_exact() -> None:
    """A bucket counts while its end is strictly after ``now - window_seconds``."""
    window = WindowCounts(HOUR)
    window.add("new", "als", 2 * HOUR, PerformanceCounts(impressions=1))  # ends at 3 h
    window.add("new", "als", 3 * HOUR, PerformanceCounts(impressions=10))  # ends at 4 h
    window_seconds = 24 * HOUR
    # at 27 h the window starts at 3 h: the first bucket ends exactly there
    assert window.totals("new", "als", 27 * HOUR, window_seconds).impressions == 10
    assert window.totals("new", "als", 27 * HOUR - 0.5, window_seconds).impressions == 11
    # the second bucket counts until its end, 4 h, is the window's start
    assert window.totals("new", "als", 28 * HOUR - 0.5, window_seconds).impressions == 10
    assert window.totals("new", "als", 28 * HOUR, window_seconds).impressions == 0


def test_window_sums_merges_and_separates_pairs() -> None:
    window = WindowCounts(HOUR)
    window.add("new", "als", 0.0, PerformanceCounts(impressions=100, clicks=2))
    window.add("new", "als", 0.0, PerformanceCounts(impressions=50, clicks=1))
    window.add("new", "als", 5 * HOUR, PerformanceCounts(impressions=10, conversions=1))
    window.add("power", "als", 0.0, PerformanceCounts(impressions=7))
    window.add("new", "popular", 0.0, PerformanceCounts(clicks=3))
    assert window.totals("new", "als", 6 * HOUR, 24 * HOUR) == PerformanceCounts(
        impressions=160, clicks=3, conversions=1
    )
    assert window.totals("power", "als", 6 * HOUR, 24 * HOUR) == PerformanceCounts(impressions=7)
    assert window.totals("regular", "als", 6 * HOUR, 24 * HOUR) == PerformanceCounts()
    assert window.keys() == {("new", "als"), ("power", "als"), ("new", "popular")}


def test_window_expire_drops_exactly_what_totals_ignores() -> None:
    window = WindowCounts(HOUR)
    window.add("new", "als", 2 * HOUR, PerformanceCounts(impressions=1))
    window.add("new", "als", 3 * HOUR, PerformanceCounts(impressions=10))
    window.add("new", "popular", 2 * HOUR, PerformanceCounts(impressions=100))
    window.expire(27 * HOUR, 24 * HOUR)
    assert window.keys() == {("new", "als")}
    # the expired bucket is gone even for a caller that looks back further
    assert window.totals("new", "als", 27 * HOUR, 48 * HOUR).impressions == 10
    window.expire(28 * HOUR, 24 * HOUR)
    assert window.keys() == set()


@settings(deadline=None)
@given(
    starts=st.lists(st.integers(0, 100), min_size=1, max_size=20),
    now=st.integers(0, 130).map(lambda h: h * HOUR + 1_234.5),
    window_hours=st.integers(1, 48),
)
def test_expire_keeps_totals(starts: list[int], now: float, window_hours: int) -> None:
    window = WindowCounts(HOUR)
    for i, start in enumerate(starts):
        window.add("new", "als", start * HOUR, PerformanceCounts(impressions=1, clicks=i))
    before = window.totals("new", "als", now, window_hours * HOUR)
    window.expire(now, window_hours * HOUR)
    assert window.totals("new", "als", now, window_hours * HOUR) == before
    assert window.keys() == ({("new", "als")} if before.impressions else set())


def _totals_by_addition(
    window: WindowCounts, segment: str, algorithm: str, now: float, window_seconds: float
) -> PerformanceCounts:
    """The window's sum as the buckets' counts added with ``+`` one by one (the oracle)."""
    cutoff = now - window_seconds
    total = PerformanceCounts()
    for start, counts in window._buckets.get((segment, algorithm), {}).items():
        if start + window.bucket_seconds > cutoff:
            total += counts
    return total


counts_in_a_bucket = st.builds(
    PerformanceCounts,
    st.integers(0, 10**12),
    st.integers(0, 10**12),
    st.integers(0, 10**12),
    st.floats(0.0, 1e6, allow_nan=False),
    st.integers(0, 10**12),
)


@settings(deadline=None)
@given(
    added=st.lists(
        st.tuples(st.floats(0.0, 200.0 * HOUR, allow_nan=False), counts_in_a_bucket),
        max_size=60,
    ),
    now=st.floats(0.0, 250.0 * HOUR, allow_nan=False),
    window_seconds=st.floats(1.0, 200.0 * HOUR, allow_nan=False),
    saturating=st.booleans(),
)
def test_totals_are_the_buckets_added_one_by_one(
    added: list[tuple[float, PerformanceCounts]],
    now: float,
    window_seconds: float,
    saturating: bool,
) -> None:
    """Summed field by field, saturated once (counts are never negative): the same
    counts as ``+`` bucket by bucket, float sums included, to the bit."""
    window = WindowCounts(HOUR)
    for at, counts in added:
        if saturating:  # near the limit, where a sum stops
            counts = counts + PerformanceCounts(COUNT_LIMIT // 8, 0, COUNT_LIMIT // 3)
        window.add("new", "als", at, counts)
    got = window.totals("new", "als", now, window_seconds)
    assert got == _totals_by_addition(window, "new", "als", now, window_seconds)


def test_window_floors_a_time_to_its_bucket() -> None:
    window = WindowCounts(HOUR)
    window.add("new", "als", 1_800.0, PerformanceCounts(impressions=1))  # in the bucket [0, 1 h)
    window.add("new", "als", 0.0, PerformanceCounts(impressions=2))
    # one bucket of 3: it ends at 1 h, so it counts just before and not at 1 h + window
    assert window.totals("new", "als", 2 * HOUR - 0.5, HOUR).impressions == 3
    assert window.totals("new", "als", 2 * HOUR, HOUR).impressions == 0


# -- Priors and posteriors ---------------------------------------------------------


def test_segment_priors_by_hand() -> None:
    # k = 3, sum w = 4: means 0.02 * w * 3 / 4 = 0.03, 0.015, 0.015
    priors = segment_priors({"als": 2.0, "popular": 1.0, "content": 1.0}, 0.02, 200.0)
    assert list(priors) == ["als", "popular", "content"]
    assert priors["als"].a == pytest.approx(6.0)
    assert priors["als"].b == pytest.approx(194.0)
    assert priors["popular"].a == pytest.approx(3.0)
    assert priors["popular"].b == pytest.approx(197.0)


@settings(deadline=None)
@given(
    weights=st.lists(st.floats(0.1, 10.0), min_size=1, max_size=6),
    prior_ctr=st.floats(0.001, 0.1),
    strength=st.floats(1.0, 1e4),
)
def test_segment_priors_average_the_prior_ctr_in_weight_order(
    weights: list[float], prior_ctr: float, strength: float
) -> None:
    mapping = {f"alg{i}": w for i, w in enumerate(weights)}
    priors = list(segment_priors(mapping, prior_ctr, strength).values())
    means = [p.a / (p.a + p.b) for p in priors]
    assert all(p.a + p.b == pytest.approx(strength) for p in priors)
    # no mean is clipped here (the largest is 0.1 * 10 * 6 / 10.5 < 1), so they average prior_ctr
    assert np.mean(means) == pytest.approx(prior_ctr)
    # and are proportional to the weights
    for i in range(1, len(weights)):
        assert means[i] / means[0] == pytest.approx(weights[i] / weights[0])


def test_segment_priors_clip_a_zero_weight() -> None:
    priors = segment_priors({"als": 1.0, "off": 0.0}, 0.5, 10.0)
    assert priors["off"].a == pytest.approx(1e-5)
    assert priors["als"].a == pytest.approx((1 - 1e-6) * 10.0)


@pytest.mark.parametrize(
    ("weights", "prior_ctr", "strength", "field"),
    [
        ({}, 0.02, 10.0, "default_weights"),
        ({"als": 0.0}, 0.02, 10.0, "default_weights"),
        ({"als": -1.0, "pop": 2.0}, 0.02, 10.0, "default_weights.als"),
        ({"als": math.inf}, 0.02, 10.0, "default_weights.als"),
        ({"als": 1.0}, 0.0, 10.0, "prior_ctr"),
        ({"als": 1.0}, 1.0, 10.0, "prior_ctr"),
        ({"als": 1.0}, 0.02, 0.0, "strength"),
    ],
)
def test_segment_priors_refuse(
    weights: dict[str, float], prior_ctr: float, strength: float, field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        segment_priors(weights, prior_ctr, strength)
    assert info.value.field == field


# -- The empirical-Bayes prior ---------------------------------------------------------


def test_pooled_prior_before_any_data_is_the_configured_one() -> None:
    assert pooled_prior([], 0.05, 200.0, 20.0) == PooledPrior(0.05, 200.0, "no_spread")
    assert pooled_prior([PerformanceCounts()] * 3, 0.05, 200.0, 20.0).mean == 0.05


def test_pooled_prior_mean_follows_the_segments_ctr() -> None:
    # (C + prior_ctr * strength) / (N + strength), by hand
    few = pooled_prior([PerformanceCounts(100, 2), PerformanceCounts(100, 1)], 0.05, 200.0, 20.0)
    assert few.mean == pytest.approx((3 + 0.05 * 200) / (200 + 200))
    many = [PerformanceCounts(500_000, 7_500), PerformanceCounts(300_000, 4_500)]
    assert pooled_prior(many, 0.05, 200.0, 20.0).mean == pytest.approx(0.015, abs=1e-4)


def test_pooled_prior_strength_recovers_the_algorithms_spread() -> None:
    # 400 algorithms whose true CTRs are Beta(m s, (1 - m) s), s = 150: the method of
    # moments finds s from the observed CTRs (each on 200k impressions).
    rng = np.random.default_rng(5)
    m, s = 0.02, 150.0
    ctrs = rng.beta(m * s, (1 - m) * s, size=400)
    counts = [PerformanceCounts(200_000, int(rng.binomial(200_000, p))) for p in ctrs]
    found = pooled_prior(counts, 0.05, 1_000.0, 1.0)
    assert found.source == "moments"
    assert found.strength == pytest.approx(s, rel=0.2)
    assert found.mean == pytest.approx(m, rel=0.05)


def test_pooled_prior_without_spread_takes_the_upper_bound() -> None:
    # the same true CTR for all: the observed spread is binomial noise only
    rng = np.random.default_rng(9)
    counts = [PerformanceCounts(50_000, int(rng.binomial(50_000, 0.015))) for _ in range(5)]
    found = pooled_prior(counts, 0.05, 200.0, 20.0)
    assert found.strength == 200.0
    assert found.source in ("no_spread", "bounded")


@settings(deadline=None)
@given(
    cells=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), max_size=8),
    prior_ctr=st.floats(0.001, 0.5),
    bounds=st.tuples(st.floats(1.0, 500.0), st.floats(1.0, 500.0)),
)
def test_pooled_prior_is_bounded(
    cells: list[tuple[int, int]], prior_ctr: float, bounds: tuple[float, float]
) -> None:
    low, high = sorted(bounds)
    found = pooled_prior([PerformanceCounts(n, c) for n, c in cells], prior_ctr, high, low)
    assert low <= found.strength <= high
    assert 0.0 < found.mean < 1.0


@pytest.mark.parametrize(
    ("prior_ctr", "high", "low", "field"),
    [
        (0.0, 200.0, 20.0, "prior_ctr"),
        (0.05, 10.0, 20.0, "min_strength"),
        (0.05, 200.0, 0.0, "min_strength"),
        (0.05, math.inf, 20.0, "min_strength"),
    ],
)
def test_pooled_prior_refuses(prior_ctr: float, high: float, low: float, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        pooled_prior([], prior_ctr, high, low)
    assert info.value.field == field


def test_empirical_prior_does_not_favour_the_least_shown_algorithm() -> None:
    # The world: CTRs of 1-2 %; "rare" has been shown 60 times without a click,
    # the others thousands of times. A fixed prior at 5 % worth 200 impressions makes
    # "rare" the likeliest best; the pooled prior puts it at the segment's average.
    counts = {
        "good": PerformanceCounts(40_000, 800),  # 2.0 %
        "fair": PerformanceCounts(40_000, 600),  # 1.5 %
        "rare": PerformanceCounts(60, 0),
    }
    weights = dict.fromkeys(counts, 1.0)

    def best(priors: dict[str, BetaPrior]) -> dict[str, float]:
        posts = {a: posterior(priors[a], c) for a, c in counts.items()}
        return probability_best(posts, draws=20_000, seed=3).weights

    fixed = best(segment_priors(weights, 0.05, 200.0))
    assert max(fixed, key=fixed.__getitem__) == "rare"
    pooled = pooled_prior(list(counts.values()), 0.05, 200.0, 20.0)
    learnt = best(segment_priors(weights, pooled.mean, pooled.strength))
    assert max(learnt, key=learnt.__getitem__) == "good"
    assert learnt["rare"] < 0.2


@pytest.mark.parametrize(("a", "b"), [(0.0, 1.0), (1.0, -2.0), (math.nan, 1.0), (1.0, math.inf)])
def test_beta_parameters_must_be_positive(a: float, b: float) -> None:
    with pytest.raises(InvalidInput):
        BetaPrior(a, b)
    with pytest.raises(InvalidInput):
        Posterior(a, b)


BETAS = [(1.0, 1.0), (2.0, 1200.0), (0.3, 0.7), (50.0, 950.0), (1e-3, 1e4), (1e5, 2e6)]


@pytest.mark.parametrize(("a", "b"), BETAS)
def test_posterior_matches_scipy(a: float, b: float) -> None:
    post = Posterior(a, b)
    assert post.mean == pytest.approx(stats.beta.mean(a, b), rel=1e-12)
    for level in (0.5, 0.9, 0.95, 0.99):
        lo, hi = post.interval(level)
        assert lo == pytest.approx(stats.beta.ppf((1 - level) / 2, a, b), rel=1e-12, abs=1e-300)
        assert hi == pytest.approx(stats.beta.ppf((1 + level) / 2, a, b), rel=1e-12)
        assert post.upper(level) == pytest.approx(stats.beta.ppf(level, a, b), rel=1e-12)
        # and through the other direction, the CDF
        assert stats.beta.cdf(post.upper(level), a, b) == pytest.approx(level, rel=1e-9)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5])
def test_credible_level_must_be_in_open_unit_interval(level: float) -> None:
    with pytest.raises(InvalidInput) as info:
        Posterior(1.0, 1.0).upper(level)
    assert info.value.field == "level"
    with pytest.raises(InvalidInput):
        Posterior(1.0, 1.0).interval(level)


def test_posterior_is_the_conjugate_update() -> None:
    prior = BetaPrior(0.6, 19.4)
    counts = PerformanceCounts(impressions=1000, clicks=40, conversions=3)
    assert posterior(prior, counts) == Posterior(40.6, 979.4)
    assert posterior(prior, PerformanceCounts()) == Posterior(0.6, 19.4)


def test_clicks_beyond_impressions_add_no_negative_evidence() -> None:
    assert posterior(BetaPrior(1.0, 1.0), PerformanceCounts(impressions=3, clicks=5)) == Posterior(
        6.0, 1.0
    )


# -- probability_best and sample_weights ----------------------------------------------


def exact_probability_best(params: list[tuple[float, float]]) -> list[float]:
    """Independent oracle: P(X_i is the max) = ∫ f_i(x) ∏_{j≠i} F_j(x) dx, by quadrature."""
    means = sorted(a / (a + b) for a, b in params)
    result = []
    for i, (a, b) in enumerate(params):
        others = [p for j, p in enumerate(params) if j != i]

        def integrand(x: float, a: float = a, b: float = b, others: list = others) -> float:
            cdfs = [stats.beta.cdf(x, c, d) for c, d in others]
            return float(stats.beta.pdf(x, a, b) * np.prod(cdfs))

        value, _ = integrate.quad(integrand, 0.0, 1.0, points=means, limit=200)
        result.append(value)
    return result


@pytest.mark.parametrize(
    "params",
    [
        [(3.0, 97.0), (5.0, 95.0)],
        [(30.0, 970.0), (36.0, 964.0)],
        [(2.0, 60.0), (4.0, 100.0), (12.0, 400.0)],
        [(1.0, 1.0), (1.0, 1.0), (1.0, 1.0), (1.0, 1.0)],
    ],
)
def test_probability_best_matches_numerical_integration(params: list[tuple[float, float]]) -> None:
    exact = exact_probability_best(params)
    assert sum(exact) == pytest.approx(1.0, abs=1e-6)
    draws = 20_000
    posteriors = {f"alg{i}": Posterior(a, b) for i, (a, b) in enumerate(params)}
    weights = probability_best(posteriors, draws=draws, seed=2024).weights
    assert list(weights) == list(posteriors)
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-12)
    for estimate, p in zip(weights.values(), exact, strict=True):
        # 4 Monte Carlo standard errors; at most 0.0142 at p = 0.5
        assert estimate == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / draws) + 1e-9)


POSTERIORS = {
    "popular": Posterior(20.0, 980.0),
    "als": Posterior(24.0, 976.0),
    "content": Posterior(3.0, 97.0),
}


@pytest.mark.parametrize("weigh", [probability_best, sample_weights])
def test_same_seed_same_weights(weigh: Callable[..., Weights]) -> None:
    first = weigh(POSTERIORS, seed=11)
    assert first == weigh(POSTERIORS, seed=11)
    assert first.seed == 11
    assert first.weights != weigh(POSTERIORS, seed=12).weights


@pytest.mark.parametrize("weigh", [probability_best, sample_weights])
def test_reported_seed_reproduces(weigh: Callable[..., Weights]) -> None:
    first = weigh(POSTERIORS)
    assert isinstance(first.seed, int)
    assert weigh(POSTERIORS, seed=first.seed) == first


def test_seed_zero_is_a_seed() -> None:
    assert probability_best(POSTERIORS, seed=0).seed == 0
    assert probability_best(POSTERIORS, seed=0) == probability_best(POSTERIORS, seed=0)


def test_sample_weights_normalise_one_draw_per_algorithm() -> None:
    """The draw protocol is pinned: one Beta draw per algorithm, in key order."""
    result = sample_weights(POSTERIORS, seed=5)
    draws = np.random.default_rng(5).beta([20.0, 24.0, 3.0], [980.0, 976.0, 97.0])
    assert list(result.weights.values()) == pytest.approx(list(draws / draws.sum()), rel=1e-12)
    assert result.mode == "sample"


def test_sample_weights_are_uniform_when_every_draw_underflows() -> None:
    tiny = Posterior(1e-10, 1e3)  # its draws are 0.0 in double precision
    assert sample_weights({"a": tiny, "b": tiny}, seed=1).weights == {"a": 0.5, "b": 0.5}


def test_one_algorithm_gets_all_the_weight() -> None:
    only = {"als": Posterior(1.0, 1.0)}
    assert probability_best(only, seed=1).weights == {"als": 1.0}
    assert sample_weights(only, seed=1).weights == {"als": 1.0}


def test_weights_refuse_no_algorithms_and_no_draws() -> None:
    with pytest.raises(InvalidInput) as info:
        probability_best({}, seed=1)
    assert info.value.field == "posteriors"
    with pytest.raises(InvalidInput):
        sample_weights({}, seed=1)
    with pytest.raises(InvalidInput) as info:
        probability_best(POSTERIORS, draws=0, seed=1)
    assert info.value.field == "draws"


# -- floor_weights -------------------------------------------------------------------


def test_floor_weights_by_hand() -> None:
    # c is lifted to 0.05; a and b share 0.95 as 9:1
    assert floor_weights({"a": 0.9, "b": 0.1, "c": 0.0}, 0.05) == pytest.approx(
        {"a": 0.855, "b": 0.095, "c": 0.05}
    )
    # lifting c and d to 0.1 pushes b (0.1 * 0.8 = 0.08) below the floor too
    assert floor_weights({"a": 0.9, "b": 0.1, "c": 0.0, "d": 0.0}, 0.1) == pytest.approx(
        {"a": 0.7, "b": 0.1, "c": 0.1, "d": 0.1}
    )
    # weights already above the floor are only normalised
    assert floor_weights({"a": 3.0, "b": 1.0}, 0.1) == {"a": 0.75, "b": 0.25}


def test_floor_weights_uniform_cases() -> None:
    assert floor_weights({"a": 0.9, "b": 0.1, "c": 0.0}, 1 / 3) == dict.fromkeys("abc", 1 / 3)
    assert floor_weights({"a": 0.9, "b": 0.1}, 0.7) == {"a": 0.5, "b": 0.5}
    assert floor_weights({"a": 0.0, "b": 0.0}, 0.1) == {"a": 0.5, "b": 0.5}


@pytest.mark.parametrize(
    ("weights", "min_weight", "field"),
    [
        ({}, 0.1, "weights"),
        ({"a": -0.1, "b": 1.1}, 0.1, "weights.a"),
        ({"a": math.nan}, 0.1, "weights.a"),
        ({"a": 1.0}, -0.1, "min_weight"),
    ],
)
def test_floor_weights_refuse(weights: dict[str, float], min_weight: float, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        floor_weights(weights, min_weight)
    assert info.value.field == field


@settings(deadline=None)
@given(
    values=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
    min_weight=st.floats(0.0, 0.3),
)
def test_floor_weights_properties(values: list[float], min_weight: float) -> None:
    weights = {f"alg{i}": w for i, w in enumerate(values)}
    floored = floor_weights(weights, min_weight)
    k = len(values)
    assert list(floored) == list(weights)
    assert sum(floored.values()) == pytest.approx(1.0, abs=1e-12)
    if min_weight * k >= 1 or sum(values) == 0:
        assert set(floored.values()) == {1 / k}
        return
    out = list(floored.values())
    assert min(out) >= min_weight - 1e-12
    # the order of the weights is kept
    for i in range(k):
        for j in range(k):
            if values[i] <= values[j]:
                assert out[i] <= out[j] + 1e-12
    # weights left above the floor keep their ratios to one another
    free = [(v, o) for v, o in zip(values, out, strict=True) if o > min_weight + 1e-12]
    for (v1, o1), (v2, o2) in itertools.pairwise(free):
        assert o1 * v2 == pytest.approx(o2 * v1, rel=1e-9)
    # nothing is lifted when every normalised weight is already at or above the floor
    if min(values) / sum(values) >= min_weight:
        assert out == pytest.approx([v / sum(values) for v in values], rel=1e-12)


# -- disable_reason -------------------------------------------------------------------


def test_disable_reason_message() -> None:
    counts = PerformanceCounts(impressions=1200, clicks=1)
    post = posterior(BetaPrior(1.0, 1.0), counts)
    assert disable_reason(counts, post, 1000, 0.95, 0.005) == (
        "CTR upper 95% bound 0.003944 < 0.005 after 1200 impressions"
    )
    assert disable_reason(counts, post, 1000, 0.975, 0.005) == (
        "CTR upper 97.5% bound 0.00463 < 0.005 after 1200 impressions"
    )


def test_disable_reason_needs_min_impressions() -> None:
    prior = BetaPrior(1.0, 1.0)
    just_below = PerformanceCounts(impressions=999)
    at = PerformanceCounts(impressions=1000)
    assert disable_reason(just_below, posterior(prior, just_below), 1000, 0.95, 0.005) is None
    assert disable_reason(at, posterior(prior, at), 1000, 0.95, 0.005) is not None


def test_disable_reason_bound_is_strict() -> None:
    counts = PerformanceCounts(impressions=2000, clicks=4)
    post = posterior(BetaPrior(1.0, 1.0), counts)
    bound = stats.beta.ppf(0.95, 5.0, 1997.0)  # the oracle: 0.00457...
    assert disable_reason(counts, post, 1000, 0.95, bound * (1 + 1e-9)) is not None
    assert disable_reason(counts, post, 1000, 0.95, bound * (1 - 1e-9)) is None
    assert disable_reason(counts, post, 1000, 0.95, 0.005) is not None
    assert disable_reason(counts, post, 1000, 0.95, 0.004) is None


def test_disable_reason_with_more_clicks_keeps_the_algorithm() -> None:
    prior = BetaPrior(1.0, 1.0)
    # 4 clicks in 2000 is credibly below 0.5 % (upper bound 0.00457); 5 (0.00525) is not
    for clicks, disabled in [(4, True), (5, False), (6, False)]:
        counts = PerformanceCounts(impressions=2000, clicks=clicks)
        reason = disable_reason(counts, posterior(prior, counts), 1000, 0.95, 0.005)
        assert (reason is not None) == disabled, clicks
