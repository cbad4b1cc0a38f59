"""Anytime-valid (sequential) comparisons (core.stats.make_sequential)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recloop.core.errors import InvalidInput
from recloop.core.stats import (
    Comparison,
    PairStats,
    SampleStats,
    make_sequential,
    proportions_test,
    ratio_test,
    sequential_rho,
    welch_test,
)


def halfwidth(se: float, n: int, alpha: float, rho: float) -> float:
    """The paper's form, written out independently: sigma = se sqrt(N)."""
    sigma = se * math.sqrt(n)
    nr2 = n * rho**2
    return sigma * math.sqrt(2 * (nr2 + 1) / (n**2 * rho**2) * math.log(math.sqrt(nr2 + 1) / alpha))


def excludes_zero(estimate: float, se: float, n: int, alpha: float, rho: float) -> bool:
    return abs(estimate) > halfwidth(se, n, alpha, rho)


def random_comparisons(seed: int, count: int, alpha: float = 0.05) -> list[tuple[Comparison, int]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        n_c, n_t = (int(v) for v in rng.integers(100, 200_000, 2))
        p = rng.uniform(0.02, 0.5)
        c, t = int(rng.binomial(n_c, p)), int(rng.binomial(n_t, p * rng.uniform(0.9, 1.1)))
        fixed = proportions_test(SampleStats(n_c, c, c), SampleStats(n_t, t, t), alpha)
        cases.append((fixed, n_c + n_t))
    return cases


def test_rho_is_growthbooks() -> None:
    """sqrt((-2 ln a + ln(1 - 2 ln a)) / N_tune); GrowthBook's defaults a = 0.05, N_tune = 5000."""
    assert sequential_rho(0.05, 5000.0) == pytest.approx(0.039840066771373680, rel=1e-12)
    for alpha, tuning in ((0.01, 1e3), (0.1, 2e4), (0.2, 1e6)):
        log_a = math.log(alpha)
        expected = math.sqrt((-2 * log_a + math.log(-2 * log_a + 1)) / tuning)
        assert sequential_rho(alpha, tuning) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(InvalidInput, match="tuning"):
        sequential_rho(0.05, 0.0)
    with pytest.raises(InvalidInput, match="alpha"):
        sequential_rho(0.0, 5000.0)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
@pytest.mark.parametrize("tuning", [1_000.0, 5_000.0, 100_000.0])
def test_intervals_are_the_confidence_sequence(alpha: float, tuning: float) -> None:
    rho = sequential_rho(alpha, tuning)
    for fixed, n in random_comparisons(int(tuning) + int(alpha * 100), 50):
        seq = make_sequential(fixed, n, alpha, tuning)
        assert seq.sequential and seq.df is None and seq.test == "z"
        assert seq.absolute_effect == fixed.absolute_effect
        assert fixed.absolute_effect is not None and fixed.se_absolute is not None
        assert fixed.relative_effect is not None and fixed.se_relative is not None
        h = halfwidth(fixed.se_absolute, n, alpha, rho)
        assert seq.ci_absolute == pytest.approx(
            (fixed.absolute_effect - h, fixed.absolute_effect + h), rel=1e-9
        )
        h = halfwidth(fixed.se_relative, n, alpha, rho)
        assert seq.ci_relative == pytest.approx(
            (fixed.relative_effect - h, fixed.relative_effect + h), rel=1e-9
        )
        assert seq.statistic == pytest.approx(fixed.absolute_effect / fixed.se_absolute)


def test_p_value_is_smallest_alpha_excluding_zero() -> None:
    """The closed form against bisection on alpha, rho held at its value for alpha = 0.05."""
    rho = sequential_rho(0.05, 5000.0)
    for fixed, n in random_comparisons(7, 200):
        seq = make_sequential(fixed, n)
        assert seq.p_value is not None and fixed.absolute_effect is not None
        est, se = fixed.absolute_effect, fixed.se_absolute
        assert se is not None
        if not excludes_zero(est, se, n, 1.0, rho):
            assert seq.p_value == 1.0
            continue
        lo, hi = 1e-300, 1.0  # excludes at hi, not at lo
        for _ in range(200):
            mid = math.sqrt(lo * hi) if hi / lo > 4 else (lo + hi) / 2
            lo, hi = (lo, mid) if excludes_zero(est, se, n, mid, rho) else (mid, hi)
        assert seq.p_value == pytest.approx(hi, rel=1e-9)


def test_rejects_exactly_when_the_sequence_excludes_zero() -> None:
    for fixed, n in random_comparisons(8, 300):
        seq = make_sequential(fixed, n)
        assert seq.p_value is not None and seq.ci_absolute is not None
        assert (seq.p_value < 0.05) == (seq.ci_absolute[0] > 0 or seq.ci_absolute[1] < 0)


def test_sequence_is_wider_than_fixed_interval() -> None:
    """The price of peeking: at any N the CS is wider than the fixed-horizon interval."""
    for alpha in (0.01, 0.05, 0.1):
        for fixed, n in random_comparisons(9, 50, alpha):
            seq = make_sequential(fixed, n, alpha)
            assert seq.ci_absolute is not None and fixed.ci_absolute is not None
            width = seq.ci_absolute[1] - seq.ci_absolute[0]
            assert width > fixed.ci_absolute[1] - fixed.ci_absolute[0]


def test_works_for_every_test() -> None:
    rng = np.random.default_rng(10)
    a, b = rng.normal(1.0, 1.0, 3_000), rng.normal(1.1, 1.0, 3_000)
    x = rng.poisson(5, 3_000) + 1.0
    for fixed in (
        welch_test(SampleStats.of(a), SampleStats.of(b)),
        ratio_test(PairStats.of(x, a), PairStats.of(x, b)),
    ):
        seq = make_sequential(fixed, 6_000)
        assert seq.reason is None and seq.sequential and seq.test == fixed.test
        assert seq.p_value is not None and fixed.p_value is not None
        assert seq.p_value > fixed.p_value


def test_degenerate_passes_through() -> None:
    empty = make_sequential(proportions_test(SampleStats(), SampleStats(10, 1, 1)), 10)
    assert (empty.reason, empty.sequential, empty.p_value) == ("no_users", True, None)
    flat = make_sequential(proportions_test(SampleStats(10, 0, 0), SampleStats(10, 0, 0)), 20)
    assert (flat.reason, flat.ci_absolute, flat.p_value) == ("zero_variance", None, None)
    zero_base = make_sequential(
        proportions_test(SampleStats(1_000, 0, 0), SampleStats(1_000, 9, 9)), 2_000
    )
    assert zero_base.reason == "baseline_zero" and zero_base.ci_relative is None
    assert zero_base.p_value is not None and zero_base.ci_absolute is not None
    # 0% against 100%: the unpooled SE is 0, the sequence a point, the p-value 0
    split = proportions_test(SampleStats(50, 0, 0), SampleStats(50, 50, 50))
    extreme = make_sequential(split, 100)
    assert (extreme.ci_absolute, extreme.p_value, extreme.statistic) == (
        (1.0, 1.0),
        0.0,
        split.statistic,
    )


# -- continuous monitoring ----------------------------------------------------------

EXPERIMENTS = 300
LOOK_EVERY = 100
LOOKS = 100  # up to 10,000 users per arm
P = 0.1
ALPHA = 0.05
# Monte Carlo margin: with 300 experiments the share that ever rejects has a
# standard error of sqrt(0.05 * 0.95 / 300) = 0.0126 if the true rate were
# exactly 0.05; 2.33 of them (one-sided 99%) is 0.029.
MARGIN = 2.33 * math.sqrt(ALPHA * (1 - ALPHA) / EXPERIMENTS)


def ever_rejects(p_treatment: float, seed: int) -> tuple[float, float]:
    """Share of experiments rejecting at any look: (sequential, fixed-horizon z-test)."""
    rng = np.random.default_rng(seed)
    # conversions per block of 100 users, per arm; cumulative sums give every look
    control = rng.binomial(LOOK_EVERY, P, (EXPERIMENTS, LOOKS)).cumsum(axis=1)
    treatment = rng.binomial(LOOK_EVERY, p_treatment, (EXPERIMENTS, LOOKS)).cumsum(axis=1)
    sequential = fixed = 0
    for c_row, t_row in zip(control.tolist(), treatment.tolist(), strict=True):
        seq_hit = fixed_hit = False
        for look, (c, t) in enumerate(zip(c_row, t_row, strict=True), start=1):
            n = look * LOOK_EVERY
            result = proportions_test(SampleStats(n, c, c), SampleStats(n, t, t), ALPHA)
            if result.p_value is None:
                continue
            fixed_hit = fixed_hit or result.p_value < ALPHA
            seq_p = make_sequential(result, 2 * n, ALPHA).p_value
            seq_hit = seq_hit or (seq_p is not None and seq_p < ALPHA)
            if seq_hit and fixed_hit:
                break
        sequential += seq_hit
        fixed += fixed_hit
    return sequential / EXPERIMENTS, fixed / EXPERIMENTS


def test_peeking_keeps_the_false_positive_rate() -> None:
    """A/A, looked at after every 100 users per arm up to 10,000: the sequential test
    rejects in at most alpha of the experiments (plus Monte Carlo margin); the
    fixed-horizon z-test, peeked at the same way, far more often."""
    sequential, fixed = ever_rejects(P, seed=2024)
    assert sequential <= ALPHA + MARGIN
    assert fixed >= 0.15  # peeking 100 times inflates 5% to about 25-30%
    assert fixed >= 3 * max(sequential, 1 / EXPERIMENTS)


def test_sequential_still_finds_a_real_effect() -> None:
    """p = 0.10 vs 0.12 (+20%): found at some look in nearly every experiment."""
    sequential, fixed = ever_rejects(0.12, seed=2025)
    assert sequential >= 0.9 and fixed >= sequential
