"""Live A/B statistics from mergeable sufficient statistics.

Each arm of an experiment keeps sums over its users, never the users' values:
:class:`SampleStats` (``n``, Σy, Σy²) for a per-user metric ``y`` and
:class:`PairStats` (``n``, Σx, Σx², Σy, Σy², Σxy) for a per-user pair. Sums
merge with ``+`` (shards, time buckets) and ``-`` removes a part, such as
one erased user's contribution. The tests read only these sums.

Conventions
-----------
* ``control`` is the baseline, ``treatment`` the variant. Effects are
  treatment minus control (``absolute_effect``) and treatment over control
  minus one (``relative_effect``).
* In a :class:`PairStats` ``y`` is the metric and ``x`` the auxiliary value:
  the ratio's denominator (:func:`ratio_test`, R = Σy / Σx, e.g. clicks over
  impressions per user) or the pre-exposure covariate (:func:`cuped`).
* Intervals are two-sided at level ``1 - alpha``; p-values are two-sided.
* Variances are sample variances (``ddof=1``), except for the binomial
  ``p(1 - p)``.

Tests
-----
=========================  ====================================================
:func:`proportions_test`   0/1 metric: two-proportion z-test (pooled), Wald CI
:func:`welch_test`         continuous metric: Welch's t-test
:func:`ratio_test`         ratio metric Σy / Σx: delta method, z-test
:func:`cuped_welch_test`   Welch's t-test on CUPED-adjusted values (:func:`cuped`)
:func:`make_sequential`    any of the above as an anytime-valid confidence sequence
:func:`srm_test`           sample ratio mismatch: Pearson's chi-square
:func:`adjust_pvalues`     Holm or Benjamini-Hochberg over many comparisons
:func:`sample_size`        users per variant for a two-sided test
:func:`power_at`           the power that many users per variant have
=========================  ====================================================

The relative effect's interval is the delta method's normal interval for a
ratio of independent arm estimates ``e_t / e_c`` with variances ``s_t²``,
``s_c²`` (Deng, Knoblich and Lu 2018)::

    var(e_t / e_c - 1) ≈ s_t² / e_c² + e_t² s_c² / e_c⁴

Degenerate data
---------------
No test raises on data; a :class:`Comparison` that cannot be complete says
why in ``reason`` and leaves what it cannot compute as None:

====================  ============================================================
``no_users``          an arm has no users: nothing is computed
``insufficient_data`` an arm has one user: point estimates only
``zero_denominator``  a ratio arm's Σx is 0: the ratio is undefined
``zero_variance``     the difference's standard error is 0: point estimates only
``baseline_zero``     the control mean is 0: no relative effect
====================  ============================================================

Invalid arguments (``alpha`` outside (0, 1), more conversions than users,
unknown method) raise :class:`~recloop.core.errors.InvalidInput`.

References
----------
* B. L. Welch (1947), "The generalization of 'Student's' problem when several
  different population variances are involved", Biometrika 34.
* A. Deng, U. Knoblich, J. Lu (2018), "Applying the Delta Method in Metric
  Analytics: A Practical Guide with Novel Ideas", KDD 2018.
* A. Deng, Y. Xu, R. Kohavi, T. Walker (2013), "Improving the Sensitivity of
  Online Controlled Experiments by Utilizing Pre-Experiment Data", WSDM 2013.
* I. Waudby-Smith, D. Arbour, R. Sinha, E. H. Kennedy, A. Ramdas,
  "Time-uniform central limit theory and asymptotic confidence sequences",
  arXiv:2103.06476; as implemented by GrowthBook's gbstats
  (``frequentist/tests.py``, ``SequentialTwoSidedTTest``).
* S. Holm (1979), "A simple sequentially rejective multiple test procedure",
  Scand. J. Statist. 6; Y. Benjamini, Y. Hochberg (1995), "Controlling the
  false discovery rate", J. R. Statist. Soc. B 57.
* J. Cohen (1988), "Statistical Power Analysis for the Behavioral Sciences",
  2nd ed., ch. 6 (the effect size h).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy import optimize, special  # type: ignore[import-untyped]

from recloop.core.errors import InvalidInput

# A centred sum of squares below this fraction of the raw one is within the
# rounding error of sums accumulated one user at a time (up to about n * 2**-53
# relative), so it is taken as 0. Only data whose coefficient of variation is
# below about 1e-5 is affected.
_RESOLUTION = 1e-10


def _centred(raw: float, centring: float) -> float:
    """``raw - centring`` (a centred sum of squares), 0.0 within rounding of 0."""
    value = raw - centring
    return value if value > _RESOLUTION * abs(raw) else 0.0


def _as_vector(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise InvalidInput(name, f"must be one-dimensional, got shape {array.shape}")
    return array


# -- Sufficient statistics -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleStats:
    """Sums of a per-user metric ``y`` over ``n`` users: ``n``, Σy, Σy².

    ``a + b`` is the statistics of both groups; ``a - b`` removes a group
    ``b`` that was added into ``a``. A 0/1 metric has ``sum`` = conversions.

    >>> a = SampleStats.of([1.0, 2.0, 3.0])
    >>> a, a.mean, a.variance
    (SampleStats(n=3, sum=6.0, sum_squares=14.0), 2.0, 1.0)
    >>> (a + SampleStats.of([4.0])) - SampleStats.of([4.0]) == a
    True
    """

    n: int = 0
    sum: float = 0.0
    sum_squares: float = 0.0

    @classmethod
    def of(cls, values: npt.ArrayLike) -> SampleStats:
        """The statistics of a one-dimensional array of per-user values."""
        y = _as_vector(values, "values")
        return cls(int(y.size), float(y.sum()), float(np.sum(y * y)))

    def __add__(self, other: SampleStats) -> SampleStats:
        return SampleStats(
            self.n + other.n, self.sum + other.sum, self.sum_squares + other.sum_squares
        )

    def __sub__(self, other: SampleStats) -> SampleStats:
        return SampleStats(
            self.n - other.n, self.sum - other.sum, self.sum_squares - other.sum_squares
        )

    @property
    def mean(self) -> float:
        """Σy / n; 0.0 without users."""
        return self.sum / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """The sample variance ``(Σy² - (Σy)² / n) / (n - 1)``; 0.0 with fewer than two users."""
        if self.n < 2:
            return 0.0
        return _centred(self.sum_squares, self.sum * self.sum / self.n) / (self.n - 1)

    @property
    def stddev(self) -> float:
        """The square root of :attr:`variance`."""
        return math.sqrt(self.variance)


@dataclass(frozen=True, slots=True)
class PairStats:
    """Sums of per-user pairs ``(x, y)`` over ``n`` users: Σx, Σx², Σy, Σy², Σxy.

    ``y`` is the metric and ``x`` the ratio's denominator (:func:`ratio_test`)
    or the pre-exposure covariate (:func:`cuped`). Merges like
    :class:`SampleStats`.

    >>> p = PairStats.of(x=[1.0, 2.0, 3.0], y=[2.0, 4.0, 7.0])
    >>> p.mean_x, p.mean_y, p.var_x, p.cov_xy
    (2.0, 4.333333333333333, 1.0, 2.5)
    >>> p.y == SampleStats.of([2.0, 4.0, 7.0])
    True
    """

    n: int = 0
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_y: float = 0.0
    sum_y2: float = 0.0
    sum_xy: float = 0.0

    @classmethod
    def of(cls, x: npt.ArrayLike, y: npt.ArrayLike) -> PairStats:
        """The statistics of two one-dimensional arrays, one pair per user."""
        xs, ys = _as_vector(x, "x"), _as_vector(y, "y")
        if xs.shape != ys.shape:
            raise InvalidInput("y", f"has {ys.size} values for {xs.size} values of x")
        return cls(
            int(xs.size),
            float(xs.sum()),
            float(np.sum(xs * xs)),
            float(ys.sum()),
            float(np.sum(ys * ys)),
            float(np.sum(xs * ys)),
        )

    def __add__(self, other: PairStats) -> PairStats:
        return PairStats(
            self.n + other.n,
            self.sum_x + other.sum_x,
            self.sum_x2 + other.sum_x2,
            self.sum_y + other.sum_y,
            self.sum_y2 + other.sum_y2,
            self.sum_xy + other.sum_xy,
        )

    def __sub__(self, other: PairStats) -> PairStats:
        return PairStats(
            self.n - other.n,
            self.sum_x - other.sum_x,
            self.sum_x2 - other.sum_x2,
            self.sum_y - other.sum_y,
            self.sum_y2 - other.sum_y2,
            self.sum_xy - other.sum_xy,
        )

    @property
    def x(self) -> SampleStats:
        """The statistics of ``x`` alone."""
        return SampleStats(self.n, self.sum_x, self.sum_x2)

    @property
    def y(self) -> SampleStats:
        """The statistics of ``y`` alone."""
        return SampleStats(self.n, self.sum_y, self.sum_y2)

    @property
    def mean_x(self) -> float:
        """Σx / n; 0.0 without users."""
        return self.x.mean

    @property
    def mean_y(self) -> float:
        """Σy / n; 0.0 without users."""
        return self.y.mean

    @property
    def var_x(self) -> float:
        """The sample variance of ``x``; 0.0 with fewer than two users."""
        return self.x.variance

    @property
    def var_y(self) -> float:
        """The sample variance of ``y``; 0.0 with fewer than two users."""
        return self.y.variance

    @property
    def cov_xy(self) -> float:
        """The sample covariance ``(Σxy - Σx Σy / n) / (n - 1)``; 0.0 with fewer than two users."""
        if self.n < 2:
            return 0.0
        return (self.sum_xy - self.sum_x * self.sum_y / self.n) / (self.n - 1)


@dataclass(frozen=True, slots=True)
class Moments:
    """An arm's user count, mean and sample variance: what :func:`welch_test` reads.

    :func:`cuped` returns these for the adjusted metric, which has no
    mergeable sums of its own (its θ depends on all the data).
    """

    n: int
    mean: float
    variance: float


# -- Results ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """Treatment against control: effects, intervals, p-value, or why some are missing.

    ``reason`` is None exactly when every effect, interval and the p-value
    are set (see the module docstring for the codes).

    ``p_value`` tests a zero ``absolute_effect``; ``statistic`` is its z or t.
    ``se_absolute`` and ``se_relative`` are the standard errors of the two
    effects, which :func:`make_sequential` turns into confidence sequences.
    ``df`` is the Welch-Satterthwaite degrees of freedom of a t-test.
    ``test`` names the variance model: ``"z"`` (two proportions), ``"welch_t"``
    or ``"delta"`` (ratio). ``cuped`` says the metric was CUPED-adjusted and
    ``sequential`` that the intervals are anytime-valid confidence
    sequences and the p-value anytime-valid.
    """

    absolute_effect: float | None
    ci_absolute: tuple[float, float] | None
    relative_effect: float | None
    ci_relative: tuple[float, float] | None
    p_value: float | None
    test: str
    statistic: float | None
    reason: str | None = None
    se_absolute: float | None = None
    se_relative: float | None = None
    df: float | None = None
    cuped: bool = False
    sequential: bool = False


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise InvalidInput("alpha", f"must be in (0, 1), got {alpha}")


def _normal_quantile(alpha: float) -> float:
    """``z_(1 - alpha / 2)``, the two-sided normal critical value."""
    return float(special.ndtri(1.0 - alpha / 2.0))


def _interval(center: float, halfwidth: float) -> tuple[float, float]:
    return (center - halfwidth, center + halfwidth)


def _relative(
    control: float, control_var: float, treatment: float, treatment_var: float
) -> tuple[float | None, float | None]:
    """``e_t / e_c - 1`` and its delta-method standard error; (None, None) when ``e_c`` is 0.

    ``control_var`` and ``treatment_var`` are the variances of the arm
    estimates (e.g. ``s² / n`` for a mean), not of the per-user values.
    """
    if control == 0:
        return None, None
    variance = treatment_var / control**2 + treatment**2 * control_var / control**4
    return treatment / control - 1.0, math.sqrt(variance)


def _finish(
    test: str,
    absolute: float,
    se_absolute: float,
    relative: float | None,
    se_relative: float | None,
    p_value: float,
    statistic: float,
    absolute_quantile: float,
    relative_quantile: float,
    df: float | None = None,
) -> Comparison:
    """A complete comparison, or one with ``baseline_zero`` when there is no relative effect."""
    ci_relative = None
    if relative is not None and se_relative is not None:
        ci_relative = _interval(relative, relative_quantile * se_relative)
    return Comparison(
        absolute_effect=absolute,
        ci_absolute=_interval(absolute, absolute_quantile * se_absolute),
        relative_effect=relative,
        ci_relative=ci_relative,
        p_value=p_value,
        test=test,
        statistic=statistic,
        reason=None if ci_relative is not None else "baseline_zero",
        se_absolute=se_absolute,
        se_relative=se_relative,
        df=df,
    )


def _estimates_only(
    test: str, reason: str, absolute: float | None = None, relative: float | None = None
) -> Comparison:
    return Comparison(absolute, None, relative, None, None, test, None, reason)


# -- Fixed-horizon tests ------------------------------------------------------------


def _check_conversions(name: str, arm: SampleStats) -> None:
    if not 0 <= arm.sum <= arm.n:
        raise InvalidInput(f"{name}.sum", f"must be between 0 and n={arm.n}, got {arm.sum}")


def proportions_test(
    control: SampleStats, treatment: SampleStats, alpha: float = 0.05
) -> Comparison:
    """Two-proportion z-test for a 0/1 metric (``sum`` = conversions; ``sum_squares`` unused).

    With ``p_c = sum_c / n_c``, ``p_t`` likewise and the pooled
    ``p = (sum_c + sum_t) / (n_c + n_t)``::

        z        = (p_t - p_c) / sqrt(p (1 - p) (1/n_c + 1/n_t))      p-value = 2 Φ(-|z|)
        CI       = p_t - p_c ± z_(1-alpha/2) sqrt(p_t(1-p_t)/n_t + p_c(1-p_c)/n_c)   (Wald)
        relative = p_t / p_c - 1 ± z_(1-alpha/2) sqrt(v_t/(n_t p_c²) + p_t² v_c/(n_c p_c⁴)),
                   v = p (1 - p) per arm

    The p-value uses the standard error under the null (pooled), the
    intervals the unpooled one, as ``statsmodels``' ``proportions_ztest`` and
    ``confint_proportions_2indep(method="wald")`` do.

    >>> r = proportions_test(SampleStats(1000, 100, 100), SampleStats(1000, 130, 130))
    >>> round(r.absolute_effect, 6), round(r.statistic, 4), round(r.p_value, 4)
    (0.03, 2.1027, 0.0355)
    >>> [round(v, 4) for v in r.ci_absolute], round(r.relative_effect, 6)
    ([0.0021, 0.0579], 0.3)
    >>> proportions_test(SampleStats(), SampleStats(10, 1, 1)).reason
    'no_users'
    """
    _check_alpha(alpha)
    if control.n < 1 or treatment.n < 1:
        return _estimates_only("z", "no_users")
    _check_conversions("control", control)
    _check_conversions("treatment", treatment)
    n_c, n_t = control.n, treatment.n
    p_c, p_t = control.sum / n_c, treatment.sum / n_t
    var_c, var_t = p_c * (1.0 - p_c) / n_c, p_t * (1.0 - p_t) / n_t
    absolute = p_t - p_c
    relative, se_relative = _relative(p_c, var_c, p_t, var_t)
    pooled = (control.sum + treatment.sum) / (n_c + n_t)
    se_null = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_c + 1.0 / n_t))
    if se_null == 0:
        return _estimates_only("z", "zero_variance", absolute, relative)
    z = absolute / se_null
    q = _normal_quantile(alpha)
    return _finish(
        "z",
        absolute,
        math.sqrt(var_c + var_t),
        relative,
        se_relative,
        p_value=float(2.0 * special.ndtr(-abs(z))),
        statistic=z,
        absolute_quantile=q,
        relative_quantile=q,
    )


def welch_test(
    control: SampleStats | Moments, treatment: SampleStats | Moments, alpha: float = 0.05
) -> Comparison:
    """Welch's unequal-variances t-test for a continuous metric.

    With arm means ``m``, sample variances ``s²`` and ``v = s² / n``::

        t  = (m_t - m_c) / sqrt(v_t + v_c)        p-value = 2 P(T_df > |t|)
        df = (v_t + v_c)² / (v_t² / (n_t - 1) + v_c² / (n_c - 1))   (Welch-Satterthwaite)
        CI = m_t - m_c ± t_(1-alpha/2, df) sqrt(v_t + v_c)
        relative = m_t / m_c - 1 ± z_(1-alpha/2) sqrt(v_t / m_c² + m_t² v_c / m_c⁴)

    as ``scipy.stats.ttest_ind(treatment, control, equal_var=False)``.

    >>> r = welch_test(SampleStats.of([1.0, 2.0, 3.0, 4.0]), SampleStats.of([2.0, 4.0, 6.0, 9.0]))
    >>> round(r.absolute_effect, 6), round(r.statistic, 4), round(r.df, 4), round(r.p_value, 4)
    (2.75, 1.6906, 4.0836, 0.1647)
    >>> welch_test(SampleStats.of([1.0]), SampleStats.of([2.0, 3.0])).reason
    'insufficient_data'
    """
    _check_alpha(alpha)
    if control.n < 1 or treatment.n < 1:
        return _estimates_only("welch_t", "no_users")
    absolute = treatment.mean - control.mean
    relative = treatment.mean / control.mean - 1.0 if control.mean != 0 else None
    if control.n < 2 or treatment.n < 2:
        return _estimates_only("welch_t", "insufficient_data", absolute, relative)
    var_c, var_t = control.variance / control.n, treatment.variance / treatment.n
    se = math.sqrt(var_c + var_t)
    if se == 0:
        return _estimates_only("welch_t", "zero_variance", absolute, relative)
    df = (var_c + var_t) ** 2 / (var_c**2 / (control.n - 1) + var_t**2 / (treatment.n - 1))
    t = absolute / se
    relative, se_relative = _relative(control.mean, var_c, treatment.mean, var_t)
    return _finish(
        "welch_t",
        absolute,
        se,
        relative,
        se_relative,
        p_value=float(2.0 * special.stdtr(df, -abs(t))),
        statistic=t,
        absolute_quantile=float(special.stdtrit(df, 1.0 - alpha / 2.0)),
        relative_quantile=_normal_quantile(alpha),
        df=df,
    )


def _ratio_variance(arm: PairStats, ratio: float) -> float:
    """The delta-method variance of ``R = Σy / Σx`` (``n >= 2``, ``Σx != 0``).

    ``var(R) = (s_y² - 2 R s_xy + R² s_x²) / (n x̄²)``. The numerator is the
    sample variance of the residuals ``y - R x``, whose sum is 0, so it is
    computed as ``(Σy² - 2 R Σxy + R² Σx²) / (n - 1)``.
    """
    residual = _centred(arm.sum_y2 + ratio**2 * arm.sum_x2, 2.0 * ratio * arm.sum_xy)
    return residual / (arm.n - 1) / (arm.n * arm.mean_x**2)


def ratio_test(control: PairStats, treatment: PairStats, alpha: float = 0.05) -> Comparison:
    """z-test for a ratio metric ``R = Σy / Σx`` per arm (``y`` numerator, ``x`` denominator).

    Users are the randomisation unit, so ``R`` is a ratio of two means and its
    variance comes from the delta method (Deng, Knoblich and Lu 2018)::

        var(R) = (s_y² - 2 R s_xy + R² s_x²) / (n x̄²)
        z      = (R_t - R_c) / sqrt(var(R_t) + var(R_c))          p-value = 2 Φ(-|z|)
        CI     = R_t - R_c ± z_(1-alpha/2) sqrt(var(R_t) + var(R_c))
        relative = R_t / R_c - 1 ± z_(1-alpha/2) sqrt(var(R_t)/R_c² + R_t² var(R_c)/R_c⁴)

    >>> clicks_c, views_c = [1.0, 0.0, 2.0, 1.0, 0.0], [10.0, 5.0, 12.0, 8.0, 6.0]
    >>> clicks_t, views_t = [2.0, 1.0, 3.0, 1.0, 2.0], [9.0, 7.0, 11.0, 6.0, 10.0]
    >>> r = ratio_test(PairStats.of(views_c, clicks_c), PairStats.of(views_t, clicks_t))
    >>> round(r.absolute_effect, 6), round(r.relative_effect, 6), round(r.p_value, 4)
    (0.111741, 1.145349, 0.0041)
    >>> ratio_test(PairStats.of([0.0, 0.0], [0.0, 0.0]), PairStats.of(views_t, clicks_t)).reason
    'zero_denominator'
    """
    _check_alpha(alpha)
    if control.n < 1 or treatment.n < 1:
        return _estimates_only("delta", "no_users")
    if control.sum_x == 0 or treatment.sum_x == 0:
        return _estimates_only("delta", "zero_denominator")
    r_c, r_t = control.sum_y / control.sum_x, treatment.sum_y / treatment.sum_x
    absolute = r_t - r_c
    if control.n < 2 or treatment.n < 2:
        relative = r_t / r_c - 1.0 if r_c != 0 else None
        return _estimates_only("delta", "insufficient_data", absolute, relative)
    var_c, var_t = _ratio_variance(control, r_c), _ratio_variance(treatment, r_t)
    relative, se_relative = _relative(r_c, var_c, r_t, var_t)
    se = math.sqrt(var_c + var_t)
    if se == 0:
        return _estimates_only("delta", "zero_variance", absolute, relative)
    z = absolute / se
    q = _normal_quantile(alpha)
    return _finish(
        "delta",
        absolute,
        se,
        relative,
        se_relative,
        p_value=float(2.0 * special.ndtr(-abs(z))),
        statistic=z,
        absolute_quantile=q,
        relative_quantile=q,
    )


# -- CUPED -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CupedAdjustment:
    """The CUPED-adjusted moments of both arms and the θ that produced them.

    ``applied`` is false when the pooled covariate has no variance or there
    are fewer than two users: then θ = 0 and the moments are those of ``y``.
    """

    theta: float
    control: Moments
    treatment: Moments
    applied: bool


def cuped(control: PairStats, treatment: PairStats) -> CupedAdjustment:
    """Adjust each user's metric ``y`` by the pre-exposure covariate ``x`` (Deng et al. 2013).

    θ is estimated on both arms pooled (``P = control + treatment``), and
    each user's value becomes ``y - θ (x - x̄_P)``, so that, per arm::

        θ          = cov_P(x, y) / var_P(x)
        mean_adj   = ȳ - θ (x̄ - x̄_P)
        var_adj    = s_y² - 2 θ s_xy + θ² s_x²

    Randomisation makes ``x̄_t - x̄_c`` zero in expectation, so the difference
    of adjusted means is unbiased for the treatment effect, with its variance
    reduced by the factor ``1 - corr(x, y)²`` when θ is the same in both arms.
    Centring at the pooled ``x̄_P`` keeps the adjusted means on the scale of
    ``y``, so relative effects stay meaningful.

    >>> c = PairStats.of(x=[1.0, 2.0, 3.0, 4.0], y=[1.1, 2.0, 3.2, 3.9])
    >>> t = PairStats.of(x=[1.0, 2.0, 3.0, 4.0], y=[1.6, 2.4, 3.5, 4.6])
    >>> adj = cuped(c, t)
    >>> adj.applied, round(adj.theta, 6), round(adj.treatment.mean - adj.control.mean, 6)
    (True, 0.985, 0.475)
    >>> adj.control.variance < c.var_y
    True
    """
    pooled = control + treatment
    applied = pooled.n >= 2 and pooled.var_x > 0
    theta = pooled.cov_xy / pooled.var_x if applied else 0.0

    def adjusted(arm: PairStats) -> Moments:
        variance = arm.var_y + theta**2 * arm.var_x
        variance = _centred(variance, 2.0 * theta * arm.cov_xy) if arm.n >= 2 else 0.0
        return Moments(arm.n, arm.mean_y - theta * (arm.mean_x - pooled.mean_x), variance)

    return CupedAdjustment(theta, adjusted(control), adjusted(treatment), applied)


def cuped_welch_test(control: PairStats, treatment: PairStats, alpha: float = 0.05) -> Comparison:
    """Welch's t-test (:func:`welch_test`) on the CUPED-adjusted metric (:func:`cuped`).

    ``cuped`` in the result says whether the adjustment was applied; when it
    was not, this is Welch's test on ``y``. θ is treated as known, which
    costs one degree of freedom in a sample of thousands. For a 0/1 metric
    the adjusted values are no longer 0/1, so the pooled-proportion z-test
    does not apply; with the sample sizes of online experiments Welch's test
    and the unpooled z-test agree.

    >>> c = PairStats.of(x=[1.0, 2.0, 3.0, 4.0], y=[1.1, 2.0, 3.2, 3.9])
    >>> t = PairStats.of(x=[1.0, 2.0, 3.0, 4.0], y=[1.6, 2.4, 3.5, 4.6])
    >>> r = cuped_welch_test(c, t)
    >>> r.cuped, round(r.absolute_effect, 6), r.p_value < welch_test(c.y, t.y).p_value
    (True, 0.475, True)
    """
    adjustment = cuped(control, treatment)
    result = welch_test(adjustment.control, adjustment.treatment, alpha)
    return replace(result, cuped=adjustment.applied)


# -- Sequential (anytime-valid) ----------------------------------------------------


def sequential_rho(alpha: float, tuning: float = 5000.0) -> float:
    """The mixing parameter rho that makes the confidence sequence tightest at ``tuning`` users.

    ``rho = sqrt((-2 ln alpha + ln(1 - 2 ln alpha)) / N_tune)`` (Waudby-Smith et al.,
    arXiv:2103.06476; gbstats' ``sequential_rho``). GrowthBook's default
    ``N_tune`` (``sequential_tuning_parameter``) is 5000.

    >>> round(sequential_rho(0.05, 5000.0), 8)
    0.03984007
    """
    _check_alpha(alpha)
    if not (tuning > 0 and math.isfinite(tuning)):
        raise InvalidInput("tuning", f"must be finite and > 0, got {tuning}")
    log_alpha = math.log(alpha)
    return math.sqrt((-2.0 * log_alpha + math.log(1.0 - 2.0 * log_alpha)) / tuning)


def _sequential_halfwidth(se: float, n: int, alpha: float, rho: float) -> float:
    """The half-width of :func:`make_sequential`'s CS; with ``sigma = se sqrt(N)`` one N cancels."""
    nr2 = n * rho**2
    return se * math.sqrt(2.0 * (nr2 + 1.0) / nr2 * math.log(math.sqrt(nr2 + 1.0) / alpha))


def _sequential_p_value(estimate: float, se: float, n: int, rho: float) -> float:
    """The smallest alpha at which the confidence sequence (rho fixed) excludes 0."""
    if estimate == 0:
        return 1.0
    nr2 = n * rho**2
    z2 = (estimate / se) ** 2 if se > 0 else math.inf
    return min(1.0, math.sqrt(nr2 + 1.0) * math.exp(-nr2 * z2 / (2.0 * (nr2 + 1.0))))


def make_sequential(
    result: Comparison, n: int, alpha: float = 0.05, tuning: float = 5000.0
) -> Comparison:
    """Turn a comparison into an anytime-valid one: confidence sequences and p-value.

    GrowthBook's sequential test (gbstats ``SequentialTwoSidedTTest``): the
    asymptotic confidence sequence of Waudby-Smith et al. (arXiv:2103.06476),
    applied to each effect's estimate ``θ̂`` and standard error ``se`` with
    ``N = n`` the total number of users in both arms::

        sigma = se sqrt(N)
        CS    = θ̂ ± sigma sqrt( 2 (N rho² + 1) / (N² rho²) · ln( sqrt(N rho² + 1) / alpha ) )

    with ``rho = sequential_rho(alpha, tuning)``. The CS covers the true effect
    at every ``N`` at once with probability about ``1 - alpha``, so results may
    be looked at, and the experiment stopped, at any time. Solving
    ``|θ̂| = half-width`` for alpha with rho held fixed gives the anytime-valid
    p-value in closed form, the smallest alpha whose CS excludes 0::

        p = min(1, sqrt(N rho² + 1) · exp(-N rho² z² / (2 (N rho² + 1)))),   z = θ̂ / se

    so ``p < alpha`` exactly when the CS at ``alpha`` excludes 0. The normal
    approximation replaces any t quantile (``df`` is dropped), and the
    p-value and ``statistic`` use the unpooled ``se_absolute`` also for the
    two-proportion test (whose unpooled SE is 0 only for 0% against 100%:
    then the CS is the point and the p-value 0). Parts the fixed-horizon
    result could not compute (see ``reason``) stay None.

    >>> fixed = proportions_test(SampleStats(5000, 500, 500), SampleStats(5000, 560, 560))
    >>> seq = make_sequential(fixed, n=10_000)
    >>> round(fixed.p_value, 4), round(seq.p_value, 4), seq.sequential
    (0.0513, 0.6875, True)
    >>> seq.ci_absolute[1] - seq.ci_absolute[0] > fixed.ci_absolute[1] - fixed.ci_absolute[0]
    True
    """
    rho = sequential_rho(alpha, tuning)
    estimate, se = result.absolute_effect, result.se_absolute
    if estimate is None or se is None or n < 1:
        return replace(result, sequential=True)
    ci_relative = None
    if result.relative_effect is not None and result.se_relative is not None:
        halfwidth = _sequential_halfwidth(result.se_relative, n, alpha, rho)
        ci_relative = _interval(result.relative_effect, halfwidth)
    return replace(
        result,
        ci_absolute=_interval(estimate, _sequential_halfwidth(se, n, alpha, rho)),
        ci_relative=ci_relative,
        p_value=_sequential_p_value(estimate, se, n, rho),
        statistic=estimate / se if se > 0 else result.statistic,
        df=None,
        sequential=True,
    )


# -- Sample ratio mismatch -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SrmResult:
    """Pearson's chi-square test of exposures against the configured weights.

    ``flagged`` is ``p_value < threshold``; ``expected`` is each variant's
    share of the users by weight. ``reason``: ``no_users``, ``single_variant``
    (nothing to compare), or ``zero_weight_exposed`` (users in a variant of
    weight 0: flagged with p-value 0).
    """

    p_value: float | None
    flagged: bool
    observed: dict[str, int]
    expected: dict[str, float]
    reason: str | None = None


def srm_test(
    observed: Mapping[str, int], weights: Mapping[str, float], threshold: float = 0.001
) -> SrmResult:
    """Sample ratio mismatch: are the exposed users split as the weights say?

    With ``N`` users, weights ``w`` (normalised to sum 1) and ``k`` variants
    of positive weight::

        E_i = N w_i,   χ² = Σ (O_i - E_i)² / E_i,   p = P(χ²_(k-1) > χ²)

    as ``scipy.stats.chisquare``. A variant missing from ``observed`` has 0
    users. GrowthBook's default threshold is 0.001: a mismatch that strong
    means the assignment or the exposure logging is broken and the
    comparisons cannot be trusted.

    Raises
    ------
    InvalidInput
        for a variant without a weight, a negative count or weight, or weights summing to 0.

    >>> r = srm_test({"a": 5_000, "b": 5_200}, {"a": 0.5, "b": 0.5})
    >>> round(r.p_value, 6), r.flagged, r.expected
    (0.04767, False, {'a': 5100.0, 'b': 5100.0})
    >>> srm_test({"a": 0, "b": 0}, {"a": 0.5, "b": 0.5}).reason
    'no_users'
    """
    unknown = set(observed) - set(weights)
    if unknown:
        raise InvalidInput("observed", f"variants {sorted(unknown)} have no weight")
    for key, weight in weights.items():
        if not (weight >= 0 and math.isfinite(weight)):
            raise InvalidInput(f"weights.{key}", f"must be finite and >= 0, got {weight}")
    counts = {key: observed.get(key, 0) for key in weights}
    for key, count in counts.items():
        if count < 0:
            raise InvalidInput(f"observed.{key}", f"must be >= 0, got {count}")
    total_weight = sum(weights.values())
    if total_weight <= 0:
        raise InvalidInput("weights", "must not all be 0")
    total = sum(counts.values())
    expected = {key: total * w / total_weight for key, w in weights.items()}
    if total == 0:
        return SrmResult(None, False, counts, expected, "no_users")
    if any(counts[key] > 0 for key, w in weights.items() if w == 0):
        return SrmResult(0.0, True, counts, expected, "zero_weight_exposed")
    tested = [key for key, w in weights.items() if w > 0]
    if len(tested) < 2:
        return SrmResult(None, False, counts, expected, "single_variant")
    chi2 = sum((counts[key] - expected[key]) ** 2 / expected[key] for key in tested)
    p_value = float(special.chdtrc(len(tested) - 1, chi2))
    return SrmResult(p_value, p_value < threshold, counts, expected)


# -- Multiple comparisons ---------------------------------------------------------------


def adjust_pvalues(p_values: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """Adjust p-values for multiple comparisons; None entries pass through and do not count.

    With the ``m`` present p-values sorted ``p_(1) <= ... <= p_(m)``:

    - ``"holm"`` (Holm-Bonferroni, controls the family-wise error rate):
      ``p̃_(i) = max_(j <= i) min(1, (m - j + 1) p_(j))``
    - ``"bh"`` (Benjamini-Hochberg, controls the false discovery rate under
      independence or positive dependence):
      ``p̃_(i) = min_(j >= i) min(1, m p_(j) / j)``

    as ``statsmodels.stats.multitest.multipletests`` (``"holm"``, ``"fdr_bh"``).

    >>> adjust_pvalues([0.01, None, 0.04, 0.03], "holm")
    [0.03, None, 0.06, 0.06]
    >>> [round(p, 6) for p in adjust_pvalues([0.01, 0.04, 0.03], "bh")]
    [0.03, 0.04, 0.04]
    """
    if method not in ("holm", "bh"):
        raise InvalidInput("method", f"must be 'holm' or 'bh', got {method!r}")
    present: list[tuple[int, float]] = []
    for i, p in enumerate(p_values):
        if p is None:
            continue
        if not 0 <= p <= 1:
            raise InvalidInput(f"p_values.{i}", f"must be in [0, 1], got {p}")
        present.append((i, p))
    present.sort(key=lambda item: item[1])
    m = len(present)
    result: list[float | None] = [None] * len(p_values)
    if method == "holm":
        running = 0.0
        for rank, (i, p) in enumerate(present):
            running = max(running, min(1.0, (m - rank) * p))
            result[i] = running
    else:
        running = 1.0
        for rank in range(m - 1, -1, -1):
            i, p = present[rank]
            running = min(running, m * p / (rank + 1))
            result[i] = running
    return result


# -- Planning ------------------------------------------------------------------------------


def _power(effect_size: float, n: float, z: float) -> float:
    """Power of the two-sided z-test with ``n`` users per arm (see :func:`sample_size`)."""
    shift = effect_size * math.sqrt(n / 2.0)
    return float(special.ndtr(shift - z) + special.ndtr(-shift - z))


def _effect_size(
    baseline: float, mde: float, relative: bool, metric: str, stddev: float | None
) -> float:
    """The standardised effect of :func:`sample_size` (Cohen's ``h`` or ``|mde| / stddev``)."""
    if not (mde != 0 and math.isfinite(mde)):
        raise InvalidInput("mde", f"must be finite and non-zero, got {mde}")
    target = baseline * (1.0 + mde) if relative else baseline + mde
    if metric == "binomial":
        if not 0 < baseline < 1:
            raise InvalidInput(
                "baseline", f"must be in (0, 1) for a binomial metric, got {baseline}"
            )
        if not 0 < target < 1:
            raise InvalidInput("mde", f"moves the rate to {target}, outside (0, 1)")
        effect = abs(2.0 * math.asin(math.sqrt(target)) - 2.0 * math.asin(math.sqrt(baseline)))
    elif metric == "continuous":
        if stddev is None or not (stddev > 0 and math.isfinite(stddev)):
            raise InvalidInput(
                "stddev", f"must be finite and > 0 for a continuous metric, got {stddev}"
            )
        effect = abs(target - baseline) / stddev
    else:
        raise InvalidInput("metric", f"must be 'binomial' or 'continuous', got {metric!r}")
    if effect == 0:
        raise InvalidInput("mde", f"is too small to change baseline {baseline}")
    if not math.isfinite(effect):
        raise InvalidInput("mde", f"moves baseline {baseline} beyond floating point")
    return effect


def power_at(
    n: float,
    baseline: float,
    mde: float,
    alpha: float = 0.05,
    relative: bool = True,
    metric: str = "binomial",
    stddev: float | None = None,
) -> float:
    """The power with ``n`` users per variant to detect ``mde`` (:func:`sample_size`'s
    test and effect size: ``sample_size`` is the least ``n`` whose power reaches the goal).

    This is ``statsmodels``' ``NormalIndPower().power`` with ``ratio=1``.

    >>> round(power_at(14745, 0.10, 0.10), 4)  # sample_size(0.10, 0.10) users
    0.8
    >>> power_at(0, 0.10, 0.10)
    0.0
    """
    _check_alpha(alpha)
    effect = _effect_size(baseline, mde, relative, metric, stddev)
    return 0.0 if n <= 0 else _power(effect, n, _normal_quantile(alpha))


def sample_size(
    baseline: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
    metric: str = "binomial",
    stddev: float | None = None,
) -> int:
    """Users per variant for a two-sided test at ``alpha`` to detect ``mde`` with ``power``.

    The target is ``baseline * (1 + mde)`` (``relative``) or ``baseline + mde``.
    The standardised effect ``d`` is Cohen's ``h`` for a binomial metric (the
    arcsine transform stabilises the variance) and ``|mde| / stddev`` for a
    continuous one::

        h = |2 asin sqrt(p_target) - 2 asin sqrt(baseline)|,     d = |target - baseline| / sigma

    and ``n`` solves the two-sided power equation, both tails counted::

        Φ(d sqrt(n/2) - z_(1-alpha/2)) + Φ(-d sqrt(n/2) - z_(1-alpha/2)) = power

    rounded up. This is ``statsmodels``' ``NormalIndPower().solve_power`` with
    ``proportion_effectsize`` (binomial) and ``ratio=1``. For a binomial
    metric it differs by a few users from the unpooled normal approximation
    ``(z_(1-alpha/2) + z_power)² (p₁(1-p₁) + p₂(1-p₂)) / (p₂ - p₁)²``.

    Raises
    ------
    InvalidInput
        for an unknown metric, a zero ``mde``, rates outside (0, 1), a
        missing or non-positive ``stddev`` (continuous), ``alpha`` outside
        (0, 1) or ``power`` outside (alpha, 1).

    >>> sample_size(0.10, 0.10)  # 10% baseline conversion, +10% relative
    14745
    >>> sample_size(5.0, 0.5, relative=False, metric="continuous", stddev=4.0)
    1005
    """
    _check_alpha(alpha)
    if not alpha < power < 1:
        raise InvalidInput("power", f"must be in (alpha, 1) = ({alpha}, 1), got {power}")
    effect = _effect_size(baseline, mde, relative, metric, stddev)
    z = _normal_quantile(alpha)
    # One tail alone reaches ``power`` at n_one; the other tail adds power: the root is below.
    try:
        n_one = 2.0 * ((z + float(special.ndtri(power))) / effect) ** 2
    except OverflowError:  # an effect of ~1e-160: no sample size is a number
        n_one = math.inf
    if not math.isfinite(n_one):
        raise InvalidInput("mde", f"is too small to detect from baseline {baseline}")
    if n_one <= 1.0:  # the root lies in (0, n_one]: one user each (and n_one may underflow)
        return 1
    # n_one is the root when the other tail adds nothing; widened by rounding's width.
    upper = n_one * (1.0 + 1e-9)
    n = optimize.brentq(lambda k: _power(effect, k, z) - power, 0.0, upper, xtol=1e-10)
    return math.ceil(float(n))
