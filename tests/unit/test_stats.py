"""A/B statistics (core.stats), pinned to scipy and statsmodels on generated cases."""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, zt_ind_solve_power
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_effectsize,
    proportions_ztest,
)

from recloop.core.errors import InvalidInput
from recloop.core.stats import (
    Comparison,
    Moments,
    PairStats,
    SampleStats,
    adjust_pvalues,
    cuped,
    cuped_welch_test,
    make_sequential,
    proportions_test,
    ratio_test,
    sample_size,
    srm_test,
    welch_test,
)

CASES = 200
ALPHAS = (0.01, 0.05, 0.1)


def approx(expected: object) -> object:
    return pytest.approx(expected, rel=1e-6, abs=1e-12)


def generated(seed: int, count: int = CASES) -> Iterator[np.random.Generator]:
    """``count`` independent generators from one seed: one per case."""
    for child in np.random.SeedSequence(seed).spawn(count):
        yield np.random.default_rng(child)


def is_complete(r: Comparison) -> bool:
    fields = (r.absolute_effect, r.ci_absolute, r.relative_effect, r.ci_relative, r.p_value)
    return all(v is not None for v in (*fields, r.statistic, r.se_absolute, r.se_relative))


def delta_relative(
    mean_c: float, var_c: float, mean_t: float, var_t: float, q: float
) -> tuple[float, tuple[float, float]]:
    """The delta-method interval of ``m_t / m_c - 1``; ``var_*`` of the arm estimates."""
    rel = mean_t / mean_c - 1
    se = math.sqrt(var_t / mean_c**2 + mean_t**2 * var_c / mean_c**4)
    return rel, (rel - q * se, rel + q * se)


# -- sufficient statistics ----------------------------------------------------------

# integers stored as floats: every sum below is exact, so merges compare with ==
small_ints = st.lists(st.integers(-1000, 1000).map(float), max_size=30)
floats = st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=30)


@given(a=small_ints, b=small_ints)
def test_sample_stats_merge_exactly(a: list[float], b: list[float]) -> None:
    sa, sb = SampleStats.of(a), SampleStats.of(b)
    assert SampleStats.of(a + b) == sa + sb
    assert (sa + sb) - sb == sa


@given(a=floats, b=floats)
def test_sample_stats_merge(a: list[float], b: list[float]) -> None:
    merged, direct = SampleStats.of(a) + SampleStats.of(b), SampleStats.of(a + b)
    assert merged.n == direct.n
    assert merged.sum == pytest.approx(direct.sum, rel=1e-9, abs=1e-6)
    assert merged.sum_squares == pytest.approx(direct.sum_squares, rel=1e-9, abs=1e-6)


@given(
    data=st.lists(st.tuples(st.integers(-100, 100), st.integers(-100, 100)), max_size=30),
    split=st.integers(0, 30),
)
def test_pair_stats_merge_exactly(data: list[tuple[int, int]], split: int) -> None:
    def of(rows: list[tuple[int, int]]) -> PairStats:
        return PairStats.of([float(x) for x, _ in rows], [float(y) for _, y in rows])

    a, b = of(data[:split]), of(data[split:])
    assert of(data) == a + b
    assert (a + b) - b == a
    assert (a + b).y == a.y + b.y and (a + b).x == a.x + b.x


def test_removing_one_user() -> None:
    """Erasing a user subtracts exactly what they added."""
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 50, 100).astype(float), rng.integers(0, 9, 100).astype(float)
    everyone = PairStats.of(x, y)
    assert everyone - PairStats.of(x[37:38], y[37:38]) == PairStats.of(
        np.delete(x, 37), np.delete(y, 37)
    )


def test_moments_match_numpy() -> None:
    for rng in generated(2, 50):
        x, y = rng.normal(3, 2, 40), rng.normal(0, 1, 40)
        y = y + 0.5 * x
        s, p = SampleStats.of(y), PairStats.of(x, y)
        assert s.mean == approx(np.mean(y))
        assert s.variance == approx(np.var(y, ddof=1))
        assert s.stddev == approx(np.std(y, ddof=1))
        assert p.var_x == approx(np.var(x, ddof=1))
        assert p.cov_xy == approx(np.cov(x, y)[0, 1])


def test_empty_and_single_moments() -> None:
    assert (SampleStats().mean, SampleStats().variance) == (0.0, 0.0)
    assert SampleStats.of([5.0]).variance == 0.0
    assert PairStats.of([1.0], [2.0]).cov_xy == 0.0


def test_constant_values_have_zero_variance() -> None:
    """Rounding in Σy² - (Σy)²/n must not pass for variance (0.1 is not exact in binary)."""
    for value in (0.1, 1e5 / 3, -7.3):
        assert SampleStats.of([value] * 1_000).variance == 0.0
    total = SampleStats()
    for _ in range(10_000):  # accumulated one user at a time, as a live counter is
        total += SampleStats(1, 0.1, 0.1**2)
    assert total.variance == 0.0


def test_of_rejects_bad_shapes() -> None:
    with pytest.raises(InvalidInput, match="values"):
        SampleStats.of([[1.0, 2.0]])
    with pytest.raises(InvalidInput, match="y"):
        PairStats.of([1.0, 2.0], [1.0])


# -- proportions ------------------------------------------------------------------------


def test_proportions_match_statsmodels() -> None:
    for rng in generated(10):
        n_c, n_t = (int(v) for v in rng.integers(30, 50_000, 2))
        p = rng.uniform(0.01, 0.6)
        c = int(rng.binomial(n_c, p))
        t = int(rng.binomial(n_t, p * rng.uniform(0.8, 1.25)))
        if c == 0:
            c = 1
        alpha = float(rng.choice(ALPHAS))
        r = proportions_test(SampleStats(n_c, c, c), SampleStats(n_t, t, t), alpha)
        z, p_value = proportions_ztest([t, c], [n_t, n_c])
        lo, hi = confint_proportions_2indep(
            t, n_t, c, n_c, method="wald", compare="diff", alpha=alpha
        )
        assert r.test == "z" and r.reason is None
        assert r.statistic == approx(z)
        assert r.p_value == approx(p_value)
        assert r.absolute_effect == approx(t / n_t - c / n_c)
        assert r.ci_absolute == approx((lo, hi))
        # the delta method from the raw 0/1 arrays: per-arm variance p(1 - p) = np.var(ddof=0)
        yc = np.r_[np.ones(c), np.zeros(n_c - c)]
        yt = np.r_[np.ones(t), np.zeros(n_t - t)]
        q = stats.norm.ppf(1 - alpha / 2)
        rel, ci = delta_relative(yc.mean(), yc.var() / n_c, yt.mean(), yt.var() / n_t, q)
        assert r.relative_effect == approx(rel)
        assert r.ci_relative == approx(ci)


def test_relative_interval_covers_by_simulation() -> None:
    """The delta-method SE of p_t/p_c - 1 matches its spread over 4,000 simulated experiments."""
    rng = np.random.default_rng(11)
    n, p_c, p_t = 20_000, 0.05, 0.055
    c, t = rng.binomial(n, p_c, 4_000), rng.binomial(n, p_t, 4_000)
    results = [
        proportions_test(SampleStats(n, a, a), SampleStats(n, b, b))
        for a, b in zip(c, t, strict=True)
    ]
    se = np.mean([r.se_relative for r in results])
    assert se == pytest.approx(np.std((t / n) / (c / n) - 1, ddof=1), rel=0.05)
    truth = p_t / p_c - 1
    covered = np.mean([r.ci_relative[0] <= truth <= r.ci_relative[1] for r in results])
    assert covered == pytest.approx(0.95, abs=0.015)


def test_proportions_degenerate() -> None:
    empty = proportions_test(SampleStats(), SampleStats(100, 5, 5))
    assert empty.reason == "no_users" and empty.absolute_effect is None and empty.p_value is None
    nothing = proportions_test(SampleStats(100, 0, 0), SampleStats(100, 0, 0))
    assert (nothing.reason, nothing.absolute_effect) == ("zero_variance", 0.0)
    assert nothing.p_value is None and nothing.relative_effect is None
    everything = proportions_test(SampleStats(50, 50, 50), SampleStats(70, 70, 70))
    assert (everything.reason, everything.relative_effect) == ("zero_variance", 0.0)
    zero_base = proportions_test(SampleStats(1000, 0, 0), SampleStats(1000, 8, 8))
    assert zero_base.reason == "baseline_zero"
    assert zero_base.p_value is not None and zero_base.ci_absolute is not None
    assert zero_base.relative_effect is None and zero_base.ci_relative is None


def test_proportions_reject_impossible_counts() -> None:
    with pytest.raises(InvalidInput, match=r"treatment\.sum"):
        proportions_test(SampleStats(10, 1, 1), SampleStats(10, 11, 11))
    with pytest.raises(InvalidInput, match="alpha"):
        proportions_test(SampleStats(10, 1, 1), SampleStats(10, 1, 1), alpha=1.0)


# -- Welch -------------------------------------------------------------------------------


def arm_values(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(2, 400))
    kind = rng.integers(3)
    if kind == 0:
        return rng.normal(rng.uniform(-5, 20), rng.uniform(0.1, 10), n)
    if kind == 1:
        return rng.lognormal(rng.uniform(0, 2), 1.0, n)
    return rng.exponential(30, n) * rng.binomial(1, 0.2, n)  # revenue: mostly zeros


def test_welch_matches_scipy() -> None:
    checked = 0
    for rng in generated(20):
        c, t = arm_values(rng), arm_values(rng)
        if np.var(c) == 0 or np.var(t) == 0:
            continue  # all-zero revenue arm: see test_welch_degenerate
        alpha = float(rng.choice(ALPHAS))
        r = welch_test(SampleStats.of(c), SampleStats.of(t), alpha)
        ref = stats.ttest_ind(t, c, equal_var=False)
        ci = ref.confidence_interval(1 - alpha)
        assert r.test == "welch_t"
        assert r.statistic == approx(ref.statistic)
        assert r.p_value == approx(ref.pvalue)
        assert r.df == approx(ref.df)
        assert r.ci_absolute == approx((ci.low, ci.high))
        q = stats.norm.ppf(1 - alpha / 2)
        rel, ci_rel = delta_relative(
            c.mean(), c.var(ddof=1) / c.size, t.mean(), t.var(ddof=1) / t.size, q
        )
        assert r.relative_effect == approx(rel)
        assert r.ci_relative == approx(ci_rel)
        checked += 1
    assert checked > CASES * 0.9


def test_welch_accepts_moments() -> None:
    c, t = SampleStats.of([1.0, 2.0, 4.0]), SampleStats.of([3.0, 5.0, 8.0, 9.0])
    as_moments = welch_test(Moments(3, c.mean, c.variance), Moments(4, t.mean, t.variance))
    assert as_moments == welch_test(c, t)


def test_welch_degenerate() -> None:
    assert welch_test(SampleStats(), SampleStats.of([1.0, 2.0])).reason == "no_users"
    single = welch_test(SampleStats.of([2.0]), SampleStats.of([1.0, 3.0, 5.0]))
    assert (single.reason, single.absolute_effect, single.relative_effect) == (
        "insufficient_data",
        1.0,
        0.5,
    )
    assert single.p_value is None and single.ci_absolute is None
    flat = welch_test(SampleStats.of([2.0] * 5), SampleStats.of([3.0] * 5))
    assert (flat.reason, flat.absolute_effect, flat.p_value) == ("zero_variance", 1.0, None)
    zero_base = welch_test(SampleStats.of([-1.0, 1.0]), SampleStats.of([1.0, 2.0, 3.0]))
    assert zero_base.reason == "baseline_zero" and zero_base.p_value is not None
    # one constant arm is fine: df = n - 1 of the other
    one_flat = welch_test(SampleStats.of([4.0] * 10), SampleStats.of([1.0, 5.0, 6.0]))
    assert one_flat.reason is None and one_flat.df == approx(2.0)


# -- ratio ---------------------------------------------------------------------------------


def ratio_arm(rng: np.random.Generator, n: int, ctr: float) -> tuple[np.ndarray, np.ndarray]:
    impressions = rng.poisson(rng.uniform(1, 20), n) + 1.0
    clicks = rng.binomial(impressions.astype(int), ctr).astype(float)
    return impressions, clicks


def test_ratio_matches_linearisation() -> None:
    """Against the delta method written independently: the variance of ``y - R x``."""
    for rng in generated(30):
        alpha = float(rng.choice(ALPHAS))
        ctr = rng.uniform(0.02, 0.3)
        xc, yc = ratio_arm(rng, int(rng.integers(5, 2_000)), ctr)
        xt, yt = ratio_arm(rng, int(rng.integers(5, 2_000)), ctr * rng.uniform(0.8, 1.2))
        r = ratio_test(PairStats.of(xc, yc), PairStats.of(xt, yt), alpha)

        def arm(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
            ratio = y.sum() / x.sum()
            return ratio, np.var(y - ratio * x, ddof=1) / (x.size * x.mean() ** 2)

        (r_c, v_c), (r_t, v_t) = arm(xc, yc), arm(xt, yt)
        se, q = math.sqrt(v_c + v_t), stats.norm.ppf(1 - alpha / 2)
        assert r.test == "delta" and r.reason is None
        assert r.absolute_effect == approx(r_t - r_c)
        assert r.statistic == approx((r_t - r_c) / se)
        assert r.p_value == approx(2 * stats.norm.sf(abs(r_t - r_c) / se))
        assert r.ci_absolute == approx((r_t - r_c - q * se, r_t - r_c + q * se))
        rel, ci_rel = delta_relative(r_c, v_c, r_t, v_t, q)
        assert r.relative_effect == approx(rel)
        assert r.ci_relative == approx(ci_rel)


def test_ratio_standard_error_matches_simulation() -> None:
    """The delta-method SE of R_t - R_c matches its spread over 2,000 simulated experiments."""
    rng = np.random.default_rng(31)
    diffs, ses = [], []
    for _ in range(2_000):
        xc, yc = ratio_arm(rng, 500, 0.1)
        xt, yt = ratio_arm(rng, 500, 0.1)
        r = ratio_test(PairStats.of(xc, yc), PairStats.of(xt, yt))
        diffs.append(r.absolute_effect)
        ses.append(r.se_absolute)
    assert np.mean(ses) == pytest.approx(np.std(diffs, ddof=1), rel=0.05)


def test_ratio_naive_binomial_variance_would_be_wrong() -> None:
    """Why the delta method: clicks cluster within users, so per-impression SEs are too small.

    Users' own CTRs ~ Beta(1, 9) (intra-user correlation 0.1) over about 11
    impressions each: a design effect near 1 + 10 * 0.1 = 2, an SE near
    sqrt(2) = 1.41 times the binomial one.
    """
    rng = np.random.default_rng(32)
    n = 2_000
    x = rng.poisson(10, n) + 1.0
    y = rng.binomial(x.astype(int), rng.beta(1, 9, n)).astype(float)  # each user their own CTR
    r = ratio_test(PairStats.of(x, y), PairStats.of(x, y))
    ratio = y.sum() / x.sum()
    naive = math.sqrt(2 * ratio * (1 - ratio) / x.sum())
    assert r.se_absolute > 1.3 * naive


def test_ratio_degenerate() -> None:
    some = PairStats.of([3.0, 4.0, 5.0], [1.0, 0.0, 2.0])
    assert ratio_test(PairStats(), some).reason == "no_users"
    assert ratio_test(PairStats.of([0.0, 0.0], [0.0, 0.0]), some).reason == "zero_denominator"
    single = ratio_test(PairStats.of([4.0], [1.0]), some)
    assert single.reason == "insufficient_data" and single.absolute_effect == approx(0.0)
    # every user with the same CTR: no variance
    flat = ratio_test(PairStats.of([10.0, 20.0], [1.0, 2.0]), PairStats.of([5.0, 10.0], [1.0, 2.0]))
    assert (flat.reason, flat.p_value) == ("zero_variance", None)
    assert flat.absolute_effect == approx(0.1)
    zero_base = ratio_test(PairStats.of([3.0, 4.0], [0.0, 0.0]), some)
    assert zero_base.reason == "baseline_zero" and zero_base.p_value is not None


# -- CUPED ----------------------------------------------------------------------------------


def correlated(
    rng: np.random.Generator, n: int, corr: float, shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(10, 3, n)
    y = 5 + corr * (x - 10) / 3 + math.sqrt(1 - corr**2) * rng.normal(size=n) + shift
    return x, y


def test_cuped_matches_welch_on_adjusted_values() -> None:
    for rng in generated(40, 100):
        corr, alpha = rng.uniform(-0.95, 0.95), float(rng.choice(ALPHAS))
        xc, yc = correlated(rng, int(rng.integers(3, 500)), corr)
        xt, yt = correlated(rng, int(rng.integers(3, 500)), corr, shift=rng.normal(0, 0.3))
        control, treatment = PairStats.of(xc, yc), PairStats.of(xt, yt)
        x_all, y_all = np.r_[xc, xt], np.r_[yc, yt]
        theta = np.cov(x_all, y_all)[0, 1] / np.var(x_all, ddof=1)
        adjustment = cuped(control, treatment)
        assert adjustment.applied and adjustment.theta == approx(theta)
        ac, at = yc - theta * (xc - x_all.mean()), yt - theta * (xt - x_all.mean())
        assert adjustment.control.mean == approx(ac.mean())
        assert adjustment.treatment.variance == approx(np.var(at, ddof=1))
        r = cuped_welch_test(control, treatment, alpha)
        ref = stats.ttest_ind(at, ac, equal_var=False)
        ci = ref.confidence_interval(1 - alpha)
        assert r.cuped and r.test == "welch_t"
        assert r.absolute_effect == approx(yt.mean() - yc.mean() - theta * (xt.mean() - xc.mean()))
        assert r.statistic == approx(ref.statistic)
        assert r.p_value == approx(ref.pvalue)
        assert r.df == approx(ref.df)
        assert r.ci_absolute == approx((ci.low, ci.high))


def test_cuped_reduces_variance_by_correlation_squared() -> None:
    rng = np.random.default_rng(41)
    for corr in (0.3, 0.6, 0.9):
        control, treatment = (PairStats.of(*correlated(rng, 50_000, corr)) for _ in range(2))
        adjustment = cuped(control, treatment)
        assert adjustment.control.variance < control.var_y
        assert adjustment.control.variance / control.var_y == pytest.approx(1 - corr**2, abs=0.01)
        plain = welch_test(control.y, treatment.y)
        assert cuped_welch_test(control, treatment).se_absolute < plain.se_absolute


def test_cuped_without_usable_covariate_is_welch() -> None:
    rng = np.random.default_rng(42)
    yc, yt = rng.normal(0, 1, 50), rng.normal(0.2, 1, 60)
    control, treatment = PairStats.of(np.full(50, 3.0), yc), PairStats.of(np.full(60, 3.0), yt)
    adjustment = cuped(control, treatment)
    assert not adjustment.applied and adjustment.theta == 0.0
    r = cuped_welch_test(control, treatment)
    assert not r.cuped
    assert r == welch_test(control.y, treatment.y)
    lone = cuped_welch_test(PairStats.of([1.0], [2.0]), PairStats())
    assert (lone.cuped, lone.reason) == (False, "no_users")


def test_cuped_degenerate() -> None:
    rng = np.random.default_rng(43)
    control = PairStats.of(*correlated(rng, 30, 0.5))
    assert cuped_welch_test(control, PairStats()).reason == "no_users"
    assert cuped_welch_test(control, PairStats.of([1.0], [4.0])).reason == "insufficient_data"
    # y an exact linear function of x: nothing is left after adjustment
    x = rng.normal(0, 1, 40)
    exact = cuped_welch_test(PairStats.of(x[:20], 2 * x[:20]), PairStats.of(x[20:], 2 * x[20:]))
    assert (exact.reason, exact.cuped) == ("zero_variance", True)


# -- SRM ---------------------------------------------------------------------------------------


def test_srm_matches_scipy() -> None:
    for rng in generated(50):
        k = int(rng.integers(2, 6))
        weights = rng.dirichlet(np.ones(k)) * rng.uniform(0.5, 100)
        true = weights * rng.uniform(0.9, 1.1, k)
        counts = rng.multinomial(int(rng.integers(1, 100_000)), true / true.sum())
        keys = [f"v{i}" for i in range(k)]
        observed = dict(zip(keys, counts.tolist(), strict=True))
        r = srm_test(observed, dict(zip(keys, weights.tolist(), strict=True)))
        expected = counts.sum() * weights / weights.sum()
        ref = stats.chisquare(counts, expected)
        assert r.p_value == approx(ref.pvalue)
        assert r.flagged == (ref.pvalue < 0.001)
        assert list(r.expected.values()) == approx(expected.tolist())
        assert r.reason is None


def test_srm_flags_a_broken_split() -> None:
    assert srm_test({"a": 5_300, "b": 4_700}, {"a": 0.5, "b": 0.5}).flagged
    assert not srm_test({"a": 5_030, "b": 4_970}, {"a": 0.5, "b": 0.5}).flagged


def test_srm_degenerate() -> None:
    none = srm_test({"a": 0, "b": 0}, {"a": 0.5, "b": 0.5})
    assert (none.p_value, none.flagged, none.reason) == (None, False, "no_users")
    assert none.expected == {"a": 0.0, "b": 0.0}
    missing = srm_test({}, {"a": 0.5, "b": 0.5})
    assert missing.reason == "no_users" and missing.observed == {"a": 0, "b": 0}
    single = srm_test({"a": 10}, {"a": 1.0})
    assert (single.p_value, single.reason) == (None, "single_variant")
    leak = srm_test({"a": 100, "b": 90, "off": 1}, {"a": 0.5, "b": 0.5, "off": 0.0})
    assert (leak.p_value, leak.flagged, leak.reason) == (0.0, True, "zero_weight_exposed")
    # a zero-weight variant nobody is in takes no part in the test
    held = srm_test({"a": 100, "b": 90, "off": 0}, {"a": 0.5, "b": 0.5, "off": 0.0})
    assert held.p_value == approx(stats.chisquare([100, 90]).pvalue)


@pytest.mark.parametrize(
    ("observed", "weights", "field"),
    [
        ({"a": 1, "x": 2}, {"a": 0.5, "b": 0.5}, "observed"),
        ({"a": -1, "b": 2}, {"a": 0.5, "b": 0.5}, "observed.a"),
        ({"a": 1, "b": 2}, {"a": -0.5, "b": 0.5}, "weights.a"),
        ({"a": 1, "b": 2}, {"a": 0.0, "b": 0.0}, "weights"),
    ],
)
def test_srm_rejects_invalid_input(
    observed: dict[str, int], weights: dict[str, float], field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        srm_test(observed, weights)
    assert info.value.field == field


# -- multiple comparisons ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "reference"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjust_matches_statsmodels(
    method: str, reference: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # multipletests(method="holm") ends with gc.collect(), 60 ms a call in a full session;
    # it frees memory and changes no result
    monkeypatch.setattr(gc, "collect", lambda generation=2: 0)
    for rng in generated(60):
        m = int(rng.integers(1, 25))
        p = rng.uniform(0, 1, m) ** rng.uniform(1, 4)  # skewed towards small p-values
        p[rng.random(m) < 0.2] = p[0]  # ties
        p = np.round(p, int(rng.integers(2, 6)))
        values: list[float | None] = list(p.tolist())
        for i in np.flatnonzero(rng.random(m) < 0.15):
            values[i] = None
        present = [v for v in values if v is not None]
        adjusted = adjust_pvalues(values, method)
        assert [a is None for a in adjusted] == [v is None for v in values]
        if present:
            expected = multipletests(present, method=reference)[1]
            assert [a for a in adjusted if a is not None] == approx(expected.tolist())


def test_adjust_edges() -> None:
    assert adjust_pvalues([]) == []
    assert adjust_pvalues([None, None], "bh") == [None, None]
    assert adjust_pvalues([0.03]) == [0.03]
    with pytest.raises(InvalidInput, match="method"):
        adjust_pvalues([0.1], "bonferroni")
    with pytest.raises(InvalidInput, match=r"p_values\.1"):
        adjust_pvalues([0.1, 1.5])
    with pytest.raises(InvalidInput, match=r"p_values\.0"):
        adjust_pvalues([float("nan")])


# -- sample size ------------------------------------------------------------------------------


def test_sample_size_matches_statsmodels() -> None:
    """Cohen's h (statsmodels ``proportion_effectsize``) or ``mde / stddev``; NormalIndPower."""
    power_analysis = NormalIndPower()
    for rng in generated(70):
        alpha = float(rng.choice(ALPHAS))
        power = float(rng.uniform(0.5, 0.95))
        relative = bool(rng.integers(2))
        if rng.integers(2):
            baseline = float(rng.uniform(0.005, 0.6))
            mde = float(rng.uniform(0.02, 0.5)) if relative else float(rng.uniform(0.001, 0.1))
            target = baseline * (1 + mde) if relative else baseline + mde
            effect = abs(proportion_effectsize(target, baseline))
            ours = sample_size(baseline, mde, alpha, power, relative, "binomial")
        else:
            baseline = float(rng.uniform(1, 100))
            mde = float(rng.uniform(0.01, 0.3)) if relative else float(rng.uniform(0.1, 10))
            effect = float(rng.uniform(0.02, 0.8))  # standardised: from tiny to large
            stddev = (baseline * mde if relative else mde) / effect
            ours = sample_size(baseline, mde, alpha, power, relative, "continuous", stddev)
        with np.errstate(invalid="ignore"):  # the solver tries negative sample sizes on its way
            reference = power_analysis.solve_power(effect_size=effect, alpha=alpha, power=power)
            other = zt_ind_solve_power(effect_size=effect, alpha=alpha, power=power)
        assert ours == math.ceil(reference) == math.ceil(other)


def test_sample_size_achieves_power() -> None:
    n = sample_size(0.1, 0.1)
    h = abs(proportion_effectsize(0.11, 0.1))
    assert NormalIndPower().power(h, n, 0.05) >= 0.8 > NormalIndPower().power(h, n - 1, 0.05)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"baseline": 0.1, "mde": 0.0}, "mde"),
        ({"baseline": 1.2, "mde": 0.1}, "baseline"),
        ({"baseline": 0.9, "mde": 0.2}, "mde"),
        ({"baseline": 0.1, "mde": 0.1, "power": 0.01}, "power"),
        ({"baseline": 0.1, "mde": 0.1, "alpha": 0.0}, "alpha"),
        ({"baseline": 5.0, "mde": 0.1, "metric": "continuous"}, "stddev"),
        ({"baseline": 5.0, "mde": 0.1, "metric": "continuous", "stddev": -1.0}, "stddev"),
        ({"baseline": 5.0, "mde": 0.1, "metric": "count"}, "metric"),
    ],
)
def test_sample_size_rejects_invalid_input(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        sample_size(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


# -- result invariants ------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    n_c=st.integers(0, 50),
    n_t=st.integers(0, 50),
    c=st.integers(0, 50),
    t=st.integers(0, 50),
    sequential=st.booleans(),
)
def test_reason_is_none_exactly_when_complete(
    n_c: int, n_t: int, c: int, t: int, sequential: bool
) -> None:
    """For any counts, no exception, and a reason exactly when something is missing."""
    c, t = min(c, n_c), min(t, n_t)
    control, treatment = SampleStats(n_c, c, c), SampleStats(n_t, t, t)
    pair_c = PairStats(n_c, n_c, n_c, c, c, c)
    pair_t = PairStats(n_t, 2 * n_t, 4 * n_t, t, t, 2 * t)
    for r in (
        proportions_test(control, treatment),
        welch_test(control, treatment),
        ratio_test(pair_c, pair_t),
        cuped_welch_test(pair_c, pair_t),
    ):
        if sequential:
            r = make_sequential(r, n_c + n_t)
        assert (r.reason is None) == is_complete(r)
        assert r.sequential == sequential
