"""Thompson sampling over recommendation algorithms, per user segment.

Each (segment, algorithm) pair is a Bernoulli arm whose reward is a click on
an impression. Its evidence is kept as mergeable counts
(:class:`PerformanceCounts`) in time buckets (:class:`WindowCounts`), so only
the last ``window_seconds`` (7 days by default) count and old behaviour is
forgotten. With a Beta prior per algorithm (:func:`segment_priors`, centred
on the segment's pooled CTR by :func:`pooled_prior`, an empirical-Bayes
prior refreshed as the window moves) the posterior of its click-through rate
is conjugate::

    ctr_alg ~ Beta(a + clicks, b + impressions - clicks)

with counts credited by inverse propensity first taken at their effective
sample size (:func:`effective_counts`), so a weighted count weighs what the
observations behind it do.

and an algorithm's weight is the posterior probability that it has the best
CTR (:func:`probability_best`), estimated from joint draws, or the
normalised single draw of the spec (:func:`sample_weights`).
:func:`floor_weights` keeps every algorithm in play, and
:func:`disable_reason` says when one is credibly worse than the CTR floor.

Every random function takes ``seed: int | None`` and reports the seed it
used in its result, so any set of weights can be recomputed exactly.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.special import betaincinv  # type: ignore[import-untyped]

from recloop.core.errors import InvalidInput

# -- Sufficient statistics ----------------------------------------------------


COUNT_LIMIT: Final = 2**62
"""Where the integer sums of :class:`PerformanceCounts` saturate: never near 64 bits."""


@dataclass(frozen=True, slots=True)
class PerformanceCounts:
    """What an algorithm's recommendations earned: exact, mergeable sums.

    ``a + b`` is the counts of both; ``a - b`` removes a part ``b`` that was
    added into ``a`` (an expired shard, say). Whole counts merge exactly up to
    :data:`COUNT_LIMIT`, where a sum stops (no real report comes near);
    ``satisfaction_sum`` up to float rounding. Counts credited by inverse propensity
    (:meth:`scaled`, :func:`attributed`) are fractional and merge up to float rounding
    too; whole counts stay ``int``.

    ``impressions_sq_excess`` is what the impressions' squared weights add beyond
    the impressions, ``sum(w * w - w)`` over the credited impressions' weights ``w``,
    so that ``impressions + impressions_sq_excess`` is their ``sum(w * w)``
    (:attr:`impressions_sq`) and the Kish effective sample size follows
    (:attr:`effective_impressions`). A whole impression (``w = 1``) adds 0, so
    counts that were never weighted keep 0 and their effective size is their
    impressions; the sum merges and subtracts like the others.

    >>> total = PerformanceCounts(impressions=200, clicks=6) + PerformanceCounts(100, 3, 1)
    >>> total.impressions, total.clicks, total.conversions, total.ctr
    (300, 9, 1, 0.03)
    >>> (total - PerformanceCounts(100, 3, 1)) == PerformanceCounts(200, 6)
    True
    """

    impressions: float = 0
    clicks: float = 0
    conversions: float = 0
    satisfaction_sum: float = 0.0
    satisfaction_n: float = 0
    impressions_sq_excess: float = 0.0

    def __add__(self, other: PerformanceCounts) -> PerformanceCounts:
        return PerformanceCounts(
            min(self.impressions + other.impressions, COUNT_LIMIT),
            min(self.clicks + other.clicks, COUNT_LIMIT),
            min(self.conversions + other.conversions, COUNT_LIMIT),
            self.satisfaction_sum + other.satisfaction_sum,
            min(self.satisfaction_n + other.satisfaction_n, COUNT_LIMIT),
            self.impressions_sq_excess + other.impressions_sq_excess,
        )

    def __sub__(self, other: PerformanceCounts) -> PerformanceCounts:
        return PerformanceCounts(
            self.impressions - other.impressions,
            self.clicks - other.clicks,
            self.conversions - other.conversions,
            self.satisfaction_sum - other.satisfaction_sum,
            self.satisfaction_n - other.satisfaction_n,
            self.impressions_sq_excess - other.impressions_sq_excess,
        )

    def scaled(self, weight: float) -> PerformanceCounts:
        """Every count times ``weight``: one event credited with an inverse-propensity
        weight. ``weight`` 1 returns the counts themselves (whole counts stay whole).

        The impressions' weights ``w_i`` become ``weight * w_i``, so their squares sum to
        ``weight**2 * impressions_sq`` and the excess over the new impressions is
        ``weight**2 * impressions_sq - weight * impressions``.

        >>> PerformanceCounts(impressions=1).scaled(2.5)
        PerformanceCounts(impressions=2.5, clicks=0.0, conversions=0.0, \
satisfaction_sum=0.0, satisfaction_n=0.0, impressions_sq_excess=3.75)
        """
        if weight == 1:
            return self
        impressions = self.impressions * weight
        return PerformanceCounts(
            impressions,
            self.clicks * weight,
            self.conversions * weight,
            self.satisfaction_sum * weight,
            self.satisfaction_n * weight,
            weight * weight * self.impressions_sq - impressions,
        )

    @property
    def impressions_sq(self) -> float:
        """The sum of the impressions' squared weights, ``sum(w * w)``: the impressions
        themselves when none was weighted."""
        return self.impressions + self.impressions_sq_excess

    @property
    def weighted(self) -> bool:
        """Whether the impressions weigh other than one each, with positive sums: only
        then is their effective sample size other than their number."""
        return bool(self.impressions_sq_excess) and self.impressions > 0 and self.impressions_sq > 0

    @property
    def effective_impressions(self) -> float:
        """Kish's effective sample size of the impressions, ``sum(w)**2 / sum(w * w)``:
        how many unweighted impressions carry as much information as these weighted ones
        (at most their number; the impressions themselves when none was weighted, or when
        the sums are not positive, as a part taken back may leave them).

        >>> ips = PerformanceCounts(impressions=1).scaled(4.0) + PerformanceCounts(impressions=4)
        >>> ips.impressions, ips.impressions_sq, ips.effective_impressions
        (8.0, 20.0, 3.2)
        >>> PerformanceCounts(impressions=8).effective_impressions
        8
        """
        if not self.weighted:
            return self.impressions
        return self.impressions * self.impressions / self.impressions_sq

    @property
    def ctr(self) -> float:
        """Clicks per impression; 0.0 with no impressions."""
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def conversion_rate(self) -> float:
        """Conversions (add to cart, purchase) per impression; 0.0 with no impressions."""
        return self.conversions / self.impressions if self.impressions else 0.0

    @property
    def satisfaction(self) -> float | None:
        """Mean satisfaction in [0, 1] (see :func:`satisfaction_of`); None without any."""
        return self.satisfaction_sum / self.satisfaction_n if self.satisfaction_n else None


def effective_counts(counts: PerformanceCounts) -> PerformanceCounts:
    """The counts as plain observations: impressions, clicks and conversions times
    ``n_eff / sum(w)``, ``n_eff`` the impressions' Kish effective sample size
    (:attr:`PerformanceCounts.effective_impressions`).

    Counts credited by inverse propensity (``exploration.credit: ips``) add one impression
    and its clicks times a weight ``w``; ``sum(w)`` impressions so credited carry the
    information of only ``sum(w)**2 / sum(w * w)`` observed ones. Scaled so, the counts
    keep their CTR (clicks over impressions) and weigh what their effective sample size
    does in a Beta posterior (:func:`posterior`, :func:`pooled_prior`): its credible
    interval is as wide as ``n_eff`` observations make it, not ``sum(w)``. Counts never
    weighted (``impressions_sq_excess`` 0) are returned as they are, and so are counts
    without positive sums (clicks without impressions, a part taken back).

    >>> ips = PerformanceCounts(impressions=1).scaled(4.0) + PerformanceCounts(4, 0)
    >>> ips += PerformanceCounts(clicks=1).scaled(4.0)
    >>> plain = effective_counts(ips)
    >>> plain.impressions, plain.clicks, plain.ctr == ips.ctr, plain.impressions_sq_excess
    (3.2, 1.6, True, 0.0)
    >>> effective_counts(PerformanceCounts(8, 2)) == PerformanceCounts(8, 2)
    True
    """
    if not counts.weighted:
        return counts
    scale = counts.impressions / counts.impressions_sq  # n_eff / sum(w)
    return PerformanceCounts(
        counts.impressions * scale,
        counts.clicks * scale,
        counts.conversions * scale,
        counts.satisfaction_sum,
        counts.satisfaction_n,
    )


def satisfaction_of(event_type: str, value: float | None) -> float | None:
    """The satisfaction in [0, 1] an explicit event expresses, or None if it expresses none.

    A rating ``r`` in [1, 5] maps to ``(r - 1) / 4``, a like to 1.0 and a
    dislike to 0.0.

    Raises
    ------
    InvalidInput
        for a rating without a value.

    >>> satisfaction_of("rating", 4.0), satisfaction_of("like", None)
    (0.75, 1.0)
    >>> satisfaction_of("click", None) is None
    True
    """
    if event_type == "rating":
        if value is None:
            raise InvalidInput("value", "a rating needs a value between 1 and 5")
        return (value - 1.0) / 4.0
    if event_type == "like":
        return 1.0
    if event_type == "dislike":
        return 0.0
    return None


_ONE_IMPRESSION = PerformanceCounts(impressions=1)
_ONE_CLICK = PerformanceCounts(clicks=1)
_ONE_CONVERSION = PerformanceCounts(conversions=1)


def counts_of(event_type: str, value: float | None) -> PerformanceCounts | None:
    """The counts one feedback event adds to the algorithm that recommended the item.

    impression → one impression; click → one click; add_to_cart and purchase
    → one conversion; rating, like, dislike → one satisfaction observation;
    any other type → None (it says nothing about the algorithm's CTR).

    >>> counts_of("click", None) == PerformanceCounts(clicks=1)
    True
    >>> counts_of("rating", 5.0).satisfaction, counts_of("dwell", 30.0)
    (1.0, None)
    """
    if event_type == "impression":
        return _ONE_IMPRESSION
    if event_type == "click":
        return _ONE_CLICK
    if event_type in ("add_to_cart", "purchase"):
        return _ONE_CONVERSION
    satisfaction = satisfaction_of(event_type, value)
    if satisfaction is None:
        return None
    return PerformanceCounts(satisfaction_sum=satisfaction, satisfaction_n=1)


def attributed(
    attribution: Mapping[str, Any],
    event_type: str,
    value: float | None,
    clip: float = math.inf,
) -> list[tuple[str, PerformanceCounts]]:
    """The algorithms an attributed feedback event credits, each with the counts it adds.

    ``attribution.credit_weights`` (``{algorithm: weight}``, what ``rank`` answers per slot
    with inverse-propensity credit) credits every algorithm named with its event's counts
    (:func:`counts_of`) times its weight, at most ``clip`` (``exploration.credit_clip``:
    ``rank`` clips its weights there, and a weight sent larger counts as the clip);
    without it, ``attribution.algorithm`` is credited the counts once. Nothing for an
    event :func:`counts_of` does not count, or one naming no algorithm. The caller keeps
    the algorithms it counts.

    >>> attributed({"algorithm": "als"}, "click", None)
    [('als', PerformanceCounts(impressions=0, clicks=1, conversions=0, \
satisfaction_sum=0.0, satisfaction_n=0, impressions_sq_excess=0.0))]
    >>> [(a, c.impressions) for a, c in attributed(
    ...     {"credit_weights": {"als": 1.25, "pop": 80.0}}, "impression", None, clip=5.0)]
    [('als', 1.25), ('pop', 5.0)]
    """
    weights = attribution.get("credit_weights")
    if weights:
        counts = counts_of(event_type, value)
        if counts is None:
            return []
        return [
            (a, counts.scaled(min(float(w), clip)))
            for a, w in weights.items()
            if isinstance(a, str)
        ]
    algorithm = attribution.get("algorithm")
    if not isinstance(algorithm, str):
        return []
    counts = counts_of(event_type, value)
    return [] if counts is None else [(algorithm, counts)]


# -- Sliding window -------------------------------------------------------------


def bucket_start(timestamp: float, bucket_seconds: float) -> float:
    """The start of the bucket holding ``timestamp``: ``floor(t / size) * size``.

    Buckets are aligned on the epoch, so every process agrees on them.

    >>> bucket_start(7_250.0, 3_600.0), bucket_start(7_200.0, 3_600.0)
    (7200.0, 7200.0)
    """
    if not bucket_seconds > 0:
        raise InvalidInput("bucket_seconds", f"must be > 0, got {bucket_seconds}")
    return math.floor(timestamp / bucket_seconds) * bucket_seconds


class WindowCounts:
    """Per (segment, algorithm), counts in time buckets of ``bucket_seconds``.

    The window rule: at time ``now``, a bucket ``[start, start + bucket_seconds)``
    counts while its end is after the window's start::

        start + bucket_seconds > now - window_seconds

    so a bucket that overlaps the window even partly counts in full, and the
    effective window is between ``window_seconds`` and ``window_seconds +
    bucket_seconds`` long. Buckets starting after ``now`` (clock skew) count.

    >>> w = WindowCounts(bucket_seconds=3_600.0)
    >>> w.add("new", "als", 0.0, PerformanceCounts(impressions=10, clicks=1))
    >>> w.add("new", "als", 3_600.0, PerformanceCounts(impressions=5))
    >>> w.totals("new", "als", now=7_200.0, window_seconds=3_600.0).impressions
    5
    >>> w.totals("new", "als", now=7_199.0, window_seconds=3_600.0).impressions
    15
    """

    def __init__(self, bucket_seconds: float) -> None:
        if not bucket_seconds > 0:
            raise InvalidInput("bucket_seconds", f"must be > 0, got {bucket_seconds}")
        self.bucket_seconds = bucket_seconds
        self._buckets: dict[tuple[str, str], dict[float, PerformanceCounts]] = {}

    def add(self, segment: str, algorithm: str, bucket: float, counts: PerformanceCounts) -> None:
        """Add ``counts`` to the bucket holding time ``bucket``, normally its start.

        Any time in the bucket is floored to the start (:func:`bucket_start`),
        so counts stored under another bucket size are re-bucketed, not refused.
        """
        bucket = bucket_start(bucket, self.bucket_seconds)
        buckets = self._buckets.setdefault((segment, algorithm), {})
        held = buckets.get(bucket)
        buckets[bucket] = counts if held is None else held + counts

    def totals(
        self, segment: str, algorithm: str, now: float, window_seconds: float
    ) -> PerformanceCounts:
        """The exact sum of the buckets of (segment, algorithm) in the window at ``now``:
        the buckets added in order with ``+`` (the counts are never negative, so each
        integer sum saturating once at the end is the same as at every step), field by
        field, without a :class:`PerformanceCounts` per bucket."""
        cutoff, size = now - window_seconds, self.bucket_seconds
        impressions: float = 0
        clicks: float = 0
        conversions: float = 0
        satisfaction_n: float = 0
        satisfaction_sum = 0.0
        impressions_sq_excess = 0.0
        for start, counts in self._buckets.get((segment, algorithm), {}).items():
            if start + size > cutoff:
                impressions += counts.impressions
                clicks += counts.clicks
                conversions += counts.conversions
                satisfaction_sum += counts.satisfaction_sum
                satisfaction_n += counts.satisfaction_n
                impressions_sq_excess += counts.impressions_sq_excess
        return PerformanceCounts(
            min(impressions, COUNT_LIMIT),
            min(clicks, COUNT_LIMIT),
            min(conversions, COUNT_LIMIT),
            satisfaction_sum,
            min(satisfaction_n, COUNT_LIMIT),
            impressions_sq_excess,
        )

    def expire(self, now: float, window_seconds: float) -> None:
        """Drop the buckets :meth:`totals` no longer counts, and pairs left with none."""
        cutoff = now - window_seconds
        for key, buckets in list(self._buckets.items()):
            kept = {s: c for s, c in buckets.items() if s + self.bucket_seconds > cutoff}
            if kept:
                self._buckets[key] = kept
            else:
                del self._buckets[key]

    def keys(self) -> set[tuple[str, str]]:
        """The (segment, algorithm) pairs holding at least one bucket."""
        return set(self._buckets)


# -- Beta posteriors -------------------------------------------------------------


def _check_beta(a: float, b: float) -> None:
    if not (a > 0 and math.isfinite(a)):
        raise InvalidInput("a", f"must be finite and > 0, got {a}")
    if not (b > 0 and math.isfinite(b)):
        raise InvalidInput("b", f"must be finite and > 0, got {b}")


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise InvalidInput("level", f"must be in (0, 1), got {level}")


@dataclass(frozen=True, slots=True)
class BetaPrior:
    """A Beta(a, b) prior on a CTR: ``a`` prior clicks and ``b`` prior non-clicks."""

    a: float
    b: float

    def __post_init__(self) -> None:
        _check_beta(self.a, self.b)


def segment_priors(
    default_weights: Mapping[str, float], prior_ctr: float, strength: float
) -> dict[str, BetaPrior]:
    """Beta priors that express a segment's default algorithm weights.

    With ``k`` algorithms and weights ``w``, algorithm ``alg`` gets the prior mean
    and ``strength`` pseudo-impressions::

        mean_alg = clip(prior_ctr * w_alg * k / sum(w), 1e-6, 1 - 1e-6)
        a = mean_alg * strength,  b = (1 - mean_alg) * strength

    so the prior means average ``prior_ctr`` (unless clipped) and are ordered
    like the weights; the data outweighs the prior after about ``strength``
    impressions.

    Raises
    ------
    InvalidInput
        for no algorithms, a negative weight, weights summing to 0,
        ``prior_ctr`` outside (0, 1) or a ``strength`` that is not > 0.

    >>> priors = segment_priors({"popular": 3.0, "als": 1.0}, prior_ctr=0.02, strength=100.0)
    >>> [(round(p.a, 12), round(p.b, 12)) for p in priors.values()]
    [(3.0, 97.0), (1.0, 99.0)]
    """
    if not default_weights:
        raise InvalidInput("default_weights", "needs at least one algorithm")
    for algorithm, weight in default_weights.items():
        if not (weight >= 0 and math.isfinite(weight)):
            raise InvalidInput(f"default_weights.{algorithm}", f"must be >= 0, got {weight}")
    total = sum(default_weights.values())
    if total == 0:
        raise InvalidInput("default_weights", "must not all be 0")
    if not 0 < prior_ctr < 1:
        raise InvalidInput("prior_ctr", f"must be in (0, 1), got {prior_ctr}")
    if not (strength > 0 and math.isfinite(strength)):
        raise InvalidInput("strength", f"must be finite and > 0, got {strength}")
    k = len(default_weights)
    priors = {}
    for algorithm, weight in default_weights.items():
        mean = min(max(prior_ctr * weight * k / total, 1e-6), 1.0 - 1e-6)
        priors[algorithm] = BetaPrior(mean * strength, (1.0 - mean) * strength)
    return priors


@dataclass(frozen=True, slots=True)
class PooledPrior:
    """A segment's empirical-Bayes prior: a CTR ``mean`` worth ``strength`` impressions.

    ``source`` says where the strength came from: ``"moments"`` (the
    algorithms' spread, within the bounds), ``"bounded"`` (the spread, clipped
    to a bound) or ``"no_spread"`` (no measurable spread: the upper bound).
    """

    mean: float
    strength: float
    source: str


def pooled_prior(
    counts: Sequence[PerformanceCounts],
    prior_ctr: float,
    max_strength: float,
    min_strength: float,
) -> PooledPrior:
    """The empirical-Bayes prior of a segment from its algorithms' pooled evidence.

    With ``n_i`` impressions and ``c_i`` clicks per algorithm, ``N = sum n_i``,
    ``C = sum c_i``, ``k`` the algorithms with impressions:

    - mean: the pooled CTR, shrunk towards ``prior_ctr`` by ``max_strength``
      pseudo-impressions, so it is ``prior_ctr`` before any data and the
      segment's own CTR once ``N`` is well above ``max_strength``::

          m = (C + prior_ctr * max_strength) / (N + max_strength)

    - strength: the Beta-binomial method of moments (DerSimonian-Laird). The
      between-algorithm variance of the true CTRs is what the observed spread
      leaves after the binomial noise::

          p = C / N
          tau2 = (sum n_i (c_i/n_i - p)^2 - (k - 1) p (1 - p)) / (N - sum n_i^2 / N)
          strength = clip(m (1 - m) / tau2 - 1, min_strength, max_strength)

      and ``max_strength`` when ``tau2 <= 0`` or fewer than two algorithms
      have impressions (nothing says the algorithms differ: pool them hard).

    Weighted counts enter at their effective sample size (:func:`effective_counts`),
    as binomial observations: the binomial noise of an algorithm's CTR is that of its
    effective impressions.

    The bound keeps the prior from outweighing a window's evidence for ever
    (at most ``max_strength`` pseudo-impressions) and from vanishing on a
    noisy spread (at least ``min_strength``). Since every algorithm's prior
    is centred on the segment's pooled CTR, an algorithm with little evidence
    looks as good as the average, not better (a fixed prior above the
    world's CTR favours whichever algorithm has the fewest impressions).

    Raises
    ------
    InvalidInput
        for ``prior_ctr`` outside (0, 1) or strengths that are not
        ``0 < min_strength <= max_strength`` and finite.

    >>> pooled_prior([], prior_ctr=0.05, max_strength=200.0, min_strength=20.0)
    PooledPrior(mean=0.05, strength=200.0, source='no_spread')
    >>> even = [PerformanceCounts(100_000, 1_500), PerformanceCounts(100_000, 1_500)]
    >>> p = pooled_prior(even, 0.05, 200.0, 20.0); round(p.mean, 5), p.strength
    (0.01503, 200.0)
    >>> apart = [PerformanceCounts(100_000, 1_000), PerformanceCounts(100_000, 3_000)]
    >>> p = pooled_prior(apart, 0.05, 200.0, 20.0); round(p.mean, 4), round(p.strength, 1), p.source
    (0.02, 97.2, 'moments')
    """
    if not 0 < prior_ctr < 1:
        raise InvalidInput("prior_ctr", f"must be in (0, 1), got {prior_ctr}")
    if not (min_strength > 0 and math.isfinite(max_strength) and min_strength <= max_strength):
        raise InvalidInput(
            "min_strength",
            f"must satisfy 0 < min_strength ({min_strength}) <= max_strength ({max_strength})",
        )
    max_strength, min_strength = float(max_strength), float(min_strength)
    counts = [effective_counts(c) for c in counts]
    n = np.array([c.impressions for c in counts if c.impressions > 0], dtype=np.float64)
    clicks = np.array([c.clicks for c in counts if c.impressions > 0], dtype=np.float64)
    clicks = np.minimum(clicks, n)  # as posterior(): no negative evidence
    total_n = float(n.sum())
    total_c = float(clicks.sum())
    mean = (total_c + prior_ctr * max_strength) / (total_n + max_strength)
    if len(n) < 2:
        return PooledPrior(mean, max_strength, "no_spread")
    p = total_c / total_n
    spread = float(np.sum(n * (clicks / n - p) ** 2))
    denominator = total_n - float(np.sum(n * n)) / total_n
    tau2 = (spread - (len(n) - 1) * p * (1.0 - p)) / denominator
    if not tau2 > 0:
        return PooledPrior(mean, max_strength, "no_spread")
    strength = mean * (1.0 - mean) / tau2 - 1.0
    if min_strength <= strength <= max_strength:
        return PooledPrior(mean, strength, "moments")
    return PooledPrior(mean, min(max(strength, min_strength), max_strength), "bounded")


@dataclass(frozen=True, slots=True)
class Posterior:
    """The Beta(a, b) posterior of one algorithm's CTR.

    >>> p = Posterior(a=3.0, b=97.0)
    >>> p.mean
    0.03
    >>> lo, hi = p.interval(0.95); bool(lo < p.mean < hi), bool(hi < p.upper(0.99))
    (True, True)
    """

    a: float
    b: float

    def __post_init__(self) -> None:
        _check_beta(self.a, self.b)

    @property
    def mean(self) -> float:
        """``a / (a + b)``."""
        return self.a / (self.a + self.b)

    def _quantile(self, q: float) -> float:
        # the inverse of the regularised incomplete beta function, as scipy.stats.beta.ppf
        return float(betaincinv(self.a, self.b, q))

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The equal-tailed credible interval: the ``(1 ± level) / 2`` quantiles."""
        _check_level(level)
        return self._quantile((1.0 - level) / 2.0), self._quantile((1.0 + level) / 2.0)

    def upper(self, level: float) -> float:
        """The one-sided upper credible bound: ``P(ctr <= upper) = level``."""
        _check_level(level)
        return self._quantile(level)


def posterior(prior: BetaPrior, counts: PerformanceCounts) -> Posterior:
    """``Beta(a + clicks, b + impressions - clicks)``, of the counts at their effective
    sample size (:func:`effective_counts`: weighted counts weigh what their observations
    do; unweighted ones are used as they are).

    Clicks beyond impressions (a client that logs clicks but not every
    impression) add no negative evidence: the non-clicks are
    ``max(impressions - clicks, 0)``.

    >>> posterior(BetaPrior(1.0, 1.0), PerformanceCounts(impressions=100, clicks=5))
    Posterior(a=6.0, b=96.0)
    >>> ips = PerformanceCounts(50, 0) + PerformanceCounts(50, 5).scaled(2.0)
    >>> ips.impressions, ips.clicks, posterior(BetaPrior(1.0, 1.0), ips)
    (150.0, 10.0, Posterior(a=7.0, b=85.0))
    """
    counts = effective_counts(counts)
    return Posterior(prior.a + counts.clicks, prior.b + max(counts.impressions - counts.clicks, 0))


# -- Weights -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Weights:
    """Algorithm weights summing to 1, with the seed that reproduces them.

    ``mode`` is ``"probability"`` (:func:`probability_best`), ``"sample"``
    (:func:`sample_weights`) or ``"mean"`` (:func:`mean_weights`).
    """

    weights: dict[str, float]
    seed: int
    mode: str


def _seed_or_new(seed: int | None) -> int:
    return secrets.randbits(32) if seed is None else seed


def _beta_parameters(
    posteriors: Mapping[str, Posterior],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    if not posteriors:
        raise InvalidInput("posteriors", "needs at least one algorithm")
    a = np.array([p.a for p in posteriors.values()])
    b = np.array([p.b for p in posteriors.values()])
    return a, b


def probability_best(
    posteriors: Mapping[str, Posterior], draws: int = 2000, seed: int | None = None
) -> Weights:
    """Each algorithm's posterior probability of having the highest CTR.

    Monte Carlo over ``draws`` joint draws, one Beta draw per algorithm each::

        weight_alg = #{draws where alg's draw is the largest} / draws

    (exact ties, probability 0, go to the algorithm listed first). The
    standard error of a weight ``w`` is ``sqrt(w (1 - w) / draws)``, about
    0.011 at the default 2000 draws. An algorithm that never wins gets
    weight 0: see :func:`floor_weights`.

    >>> w = probability_best({"a": Posterior(50.0, 950.0), "b": Posterior(5.0, 995.0)}, seed=7)
    >>> w.weights, w.seed, w.mode
    ({'a': 1.0, 'b': 0.0}, 7, 'probability')
    """
    if draws < 1:
        raise InvalidInput("draws", f"must be >= 1, got {draws}")
    a, b = _beta_parameters(posteriors)
    seed = _seed_or_new(seed)
    samples = np.random.default_rng(seed).beta(a, b, size=(draws, len(a)))
    wins = np.bincount(samples.argmax(axis=1), minlength=len(a))
    shares = (wins / draws).tolist()
    return Weights(dict(zip(posteriors, shares, strict=True)), seed, "probability")


def sample_weights(posteriors: Mapping[str, Posterior], seed: int | None = None) -> Weights:
    """One Beta draw per algorithm, normalised to sum 1 (the spec's formula).

    ``weight_alg = x_alg / sum(x)`` with ``x_alg ~ Beta(a_alg, b_alg)``, drawn
    in the order of ``posteriors``. Should every draw underflow to 0, the
    weights are uniform.

    >>> w = sample_weights({"a": Posterior(50.0, 950.0), "b": Posterior(5.0, 995.0)}, seed=7)
    >>> round(sum(w.weights.values()), 12), w.weights["a"] > w.weights["b"], w.mode
    (1.0, True, 'sample')
    """
    a, b = _beta_parameters(posteriors)
    seed = _seed_or_new(seed)
    x = np.random.default_rng(seed).beta(a, b)
    total = float(x.sum())
    shares = (x / total).tolist() if total > 0 else [1.0 / len(a)] * len(a)
    return Weights(dict(zip(posteriors, shares, strict=True)), seed, "sample")


def mean_weights(posteriors: Mapping[str, Posterior], seed: int | None = None) -> Weights:
    """Each algorithm's posterior mean CTR, normalised to sum 1: every algorithm votes in
    the fusion in proportion to how often its own picks are clicked, as far as the evidence
    says (the expectation of :func:`sample_weights`' draws, with no draw). Should every
    mean be 0 the weights are uniform; ``seed`` is only reported.

    >>> w = mean_weights({"a": Posterior(30.0, 70.0), "b": Posterior(10.0, 90.0)}, seed=7)
    >>> {k: round(v, 12) for k, v in w.weights.items()}, w.seed, w.mode
    ({'a': 0.75, 'b': 0.25}, 7, 'mean')
    """
    a, b = _beta_parameters(posteriors)
    seed = _seed_or_new(seed)
    means = a / (a + b)
    total = float(means.sum())
    shares = (means / total).tolist() if total > 0 else [1.0 / len(a)] * len(a)
    return Weights(dict(zip(posteriors, shares, strict=True)), seed, "mean")


def floor_weights(weights: Mapping[str, float], min_weight: float) -> dict[str, float]:
    """Lift every weight to at least ``min_weight``, taking the mass from the others.

    Weights are first normalised to sum 1. Those below the floor are set to
    ``min_weight``; the rest share what remains in proportion to their
    weights, repeating while that pushes another below the floor. The result
    sums to 1 and keeps the order of the keys and of the weights. If
    ``min_weight * k >= 1`` (or all weights are 0) the result is uniform.

    Raises
    ------
    InvalidInput
        for a negative or non-finite weight or ``min_weight``.

    >>> floor_weights({"a": 0.9, "b": 0.1, "c": 0.0}, 0.05)
    {'a': 0.855, 'b': 0.095, 'c': 0.05}
    >>> floor_weights({"a": 1.0, "b": 0.0}, 0.5)
    {'a': 0.5, 'b': 0.5}
    """
    if not (min_weight >= 0 and math.isfinite(min_weight)):
        raise InvalidInput("min_weight", f"must be >= 0, got {min_weight}")
    for algorithm, weight in weights.items():
        if not (weight >= 0 and math.isfinite(weight)):
            raise InvalidInput(f"weights.{algorithm}", f"must be >= 0, got {weight}")
    k = len(weights)
    if k == 0:
        raise InvalidInput("weights", "needs at least one algorithm")
    if min_weight * k >= 1 or sum(weights.values()) == 0:
        return dict.fromkeys(weights, 1.0 / k)
    floored: set[str] = set()
    while True:
        # The free weights share what the floored ones leave. The largest of
        # them always stays above the floor, so ``rest > 0``.
        free_mass = 1.0 - min_weight * len(floored)
        rest = sum(w for a, w in weights.items() if a not in floored)
        below = {
            a for a, w in weights.items() if a not in floored and w / rest * free_mass < min_weight
        }
        if not below:
            break
        floored |= below
    return {a: min_weight if a in floored else w / rest * free_mass for a, w in weights.items()}


# -- Disabling ------------------------------------------------------------------------


def disable_reason(
    counts: PerformanceCounts,
    post: Posterior,
    min_impressions: int,
    credible_level: float,
    disable_ctr: float,
) -> str | None:
    """Why an algorithm should be disabled, or None if it should not.

    It should once it has at least ``min_impressions`` impressions at their
    effective sample size (:attr:`PerformanceCounts.effective_impressions`: the
    impressions themselves unless credited by inverse propensity) and its CTR is
    credibly below ``disable_ctr``: the one-sided upper credible bound at
    ``credible_level`` is strictly below it.

    >>> disable_reason(PerformanceCounts(1200, 1), Posterior(2.0, 1200.0), 1000, 0.95, 0.005)
    'CTR upper 95% bound 0.003944 < 0.005 after 1200 impressions'
    >>> disable_reason(PerformanceCounts(999, 0), Posterior(1.0, 1000.0), 1000, 0.95, 0.005)
    >>> ips = PerformanceCounts(1000, 1) + PerformanceCounts(impressions=50).scaled(5.0)
    >>> ips.impressions, round(ips.effective_impressions, 1)
    (1250.0, 694.4)
    >>> disable_reason(ips, Posterior(2.0, 1250.0), 1000, 0.95, 0.005)
    """
    effective = counts.effective_impressions
    if effective < min_impressions:
        return None
    upper = post.upper(credible_level)
    if upper >= disable_ctr:
        return None
    evidence = (
        f"{counts.impressions} impressions"
        if effective == counts.impressions
        else f"{effective:.6g} effective impressions ({counts.impressions:.6g} credited)"
    )
    return (
        f"CTR upper {credible_level * 100:g}% bound {upper:.4g} < {disable_ctr:g} after {evidence}"
    )
