"""The effective sample size of inverse-propensity credit (issue 15, session 14).

An impression credited with weight ``w`` counts ``w`` impressions (and its click ``w``
clicks), but carries one observation's information: ``sum(w)`` impressions so credited are
worth Kish's ``sum(w)**2 / sum(w * w)`` observed ones. ``PerformanceCounts`` keeps
``sum(w * w - w)`` beside the counts (``impressions_sq_excess``), mergeable like them, and
the Beta posteriors take the counts at that size (``core.bandit.effective_counts``).

The oracle for the sums is exact rational arithmetic over the events' weights (weights
that are multiples of 1/4, so the float sums are exact too); for the posterior, an
interval's coverage of a known CTR over many simulated windows of weighted evidence.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from recloop.core.bandit import (
    BetaPrior,
    PerformanceCounts,
    Posterior,
    attributed,
    effective_counts,
    pooled_prior,
    posterior,
)
from recloop.core.contribution import attributed_counts
from recloop.core.events import Event

# (weight, clicked) per impression; weights k/4, exact in binary, squares and sums too
_credited = st.lists(
    st.tuples(st.integers(1, 80).map(lambda k: k / 4), st.booleans()), min_size=0, max_size=60
)


def _counts(credited: list[tuple[float, bool]]) -> PerformanceCounts:
    """The counts of one algorithm credited ``w`` per impression (and per click), summed
    as the processor sums them: event by event through ``attributed``."""
    total = PerformanceCounts()
    for w, clicked in credited:
        for kind in ("impression", "click")[: 1 + int(clicked)]:
            ((_, counts),) = attributed({"credit_weights": {"a": w}}, kind, None)
            total = total + counts
    return total


def _kish(weights: list[float]) -> Fraction:
    """The effective sample size, exactly: ``sum(w)**2 / sum(w * w)``."""
    exact = [Fraction(w) for w in weights]
    return sum(exact, Fraction(0)) ** 2 / sum((w * w for w in exact), Fraction(0))


@settings(max_examples=300, deadline=None)
@given(credited=_credited)
def test_effective_impressions_are_kish_of_the_weights(credited: list[tuple[float, bool]]) -> None:
    counts = _counts(credited)
    weights = [w for w, _ in credited]
    assert counts.impressions == sum(weights)
    assert counts.impressions_sq == sum(w * w for w in weights)
    if weights:
        assert Fraction(counts.effective_impressions) == pytest.approx(_kish(weights), rel=1e-15)
        # never more than the impressions seen, never more than the credited sum's square
        assert counts.effective_impressions <= len(weights) + 1e-9
    else:
        assert counts.effective_impressions == 0


@settings(max_examples=300, deadline=None)
@given(x=_credited, y=_credited, z=_credited)
def test_the_squares_merge_and_subtract_exactly(
    x: list[tuple[float, bool]], y: list[tuple[float, bool]], z: list[tuple[float, bool]]
) -> None:
    a, b, c = _counts(x), _counts(y), _counts(z)
    whole = _counts(x + y + z)
    assert (a + b) + c == a + (b + c) == whole  # the sums are exact, so equal to the bit
    assert a + b == b + a
    assert (whole - c) - b == a  # an expired shard or a taken-back user's part removed
    assert (whole - c).impressions_sq_excess == _counts(x + y).impressions_sq_excess
    assert a + PerformanceCounts() == a


@settings(max_examples=200, deadline=None)
@given(credited=_credited)
def test_a_count_scaled_twice_is_weighed_by_the_product(credited: list[tuple[float, bool]]) -> None:
    """``scaled`` keeps the squares of the weights it multiplies: scaling counts of
    weights ``w_i`` by ``v`` gives the counts of weights ``v * w_i``."""
    counts = _counts(credited).scaled(3.0)
    assert counts == _counts([(3.0 * w, clicked) for w, clicked in credited])


@settings(max_examples=200, deadline=None)
@given(
    shown=st.lists(
        st.tuples(st.sampled_from(["algorithm", "weights"]), st.booleans()), max_size=50
    ),
    prior=st.tuples(st.floats(0.01, 50.0), st.floats(0.01, 500.0)),
    reported=st.tuples(st.integers(0, 10_000), st.integers(0, 100)),
)
def test_with_every_weight_1_the_posterior_is_as_before(
    shown: list[tuple[str, bool]], prior: tuple[float, float], reported: tuple[int, int]
) -> None:
    """Whole counts (``attribution.algorithm``, credit weights of 1, the orchestrator's
    reports) have no excess: the posterior is the plain conjugate update, to the bit."""
    events = []
    for k, (how, clicked) in enumerate(shown):
        attribution = {"algorithm": "a"} if how == "algorithm" else {"credit_weights": {"a": 1.0}}
        for kind in ("impression", "click")[: 1 + int(clicked)]:
            events.append(Event(f"{k}{kind}", "u", "i", kind, 60.0 * k, attribution=attribution))
    counts = PerformanceCounts(*reported)
    for _, _, _, part in attributed_counts(events, {"a"}, 1e9, credit_clip=5.0):
        counts = counts + part
    assert counts.impressions_sq_excess == 0
    assert counts.effective_impressions == counts.impressions
    assert effective_counts(counts) is counts
    a, b = prior
    clicks, impressions = counts.clicks, counts.impressions
    assert posterior(BetaPrior(a, b), counts) == Posterior(
        a + clicks, b + max(impressions - clicks, 0)
    )


def test_the_weighted_posterior_is_as_wide_as_its_effective_sample() -> None:
    """400 impressions, a fifth of them credited 5 and the rest 1: 720 credited impressions
    worth 400**2 * 1.8**2 / (400 * 5.8) = 223.4 observed ones. The posterior keeps the CTR
    and is as wide as 223 impressions make it, wider than the 720 taken as plain counts."""
    credited = [(5.0, k % 10 == 0) for k in range(80)] + [(1.0, k % 10 == 0) for k in range(320)]
    ips = _counts(credited)
    assert (ips.impressions, ips.clicks) == (720.0, 72.0)
    n_eff = 720.0**2 / (80 * 25 + 320)
    assert ips.effective_impressions == pytest.approx(n_eff, rel=1e-12)
    prior = BetaPrior(1.0, 9.0)
    weighted = posterior(prior, ips)
    plain = posterior(prior, PerformanceCounts(720, 72))  # the same sums, as observations
    assert weighted.a == pytest.approx(1.0 + 0.1 * n_eff, rel=1e-12)
    assert weighted.b == pytest.approx(9.0 + 0.9 * n_eff, rel=1e-12)
    lo, hi = weighted.interval(0.95)
    plain_lo, plain_hi = plain.interval(0.95)
    assert lo < plain_lo < plain_hi < hi
    # widths go as 1 / sqrt(n): 720 / 223.4 = 3.2 times the evidence, about 1.8 times narrower
    assert 1.7 < (hi - lo) / (plain_hi - plain_lo) < 1.85
    # the disabling bound moves up with the width: fewer algorithms credibly below a floor
    assert weighted.upper(0.95) > plain.upper(0.95)
    # Thompson draws spread as the interval says (scipy's Beta as the oracle)
    draws = np.random.default_rng(4).beta(weighted.a, weighted.b, 200_000)
    assert draws.std() == pytest.approx(stats.beta.std(weighted.a, weighted.b), rel=0.01)
    plain_draws = np.random.default_rng(4).beta(plain.a, plain.b, 200_000)
    assert draws.std() > 1.7 * plain_draws.std()


def _coverage(seed: int, windows: int, effective: bool) -> float:
    """How often the 95 % interval of a window of IPS-weighted evidence holds the true CTR
    (0.1): each window 400 impressions, each credited 5 with probability 0.2 and 1 otherwise,
    clicked with probability 0.1 whatever its weight."""
    rng = np.random.default_rng(seed)
    prior = BetaPrior(0.1, 0.9)  # one pseudo-impression at the truth: the data decide
    held = 0
    for _ in range(windows):
        w = np.where(rng.random(400) < 0.2, 5.0, 1.0)
        clicked = rng.random(400) < 0.1
        ips = PerformanceCounts(
            float(w.sum()), float(w[clicked].sum()), impressions_sq_excess=float((w * w - w).sum())
        )
        counts = ips if effective else PerformanceCounts(ips.impressions, ips.clicks)
        lo, hi = posterior(prior, counts).interval(0.95)
        held += lo <= 0.1 <= hi
    return held / windows


def test_the_effective_posterior_covers_the_true_ctr_as_often_as_it_claims() -> None:
    """Over 2,000 windows, the effective posterior's 95 % interval holds the true CTR about
    95 % of the time; the weighted sums taken as observations claim 95 % and hold it far
    less often (their interval is about 0.56 times as wide as the evidence allows)."""
    assert 0.93 <= _coverage(seed=8, windows=2_000, effective=True) <= 0.97
    assert _coverage(seed=8, windows=2_000, effective=False) < 0.8


def test_the_pooled_prior_reads_weighted_counts_at_their_effective_size() -> None:
    """The method of moments subtracts the binomial noise of each algorithm's CTR from
    their spread; with weighted counts that noise is the effective sample's, so less of the
    spread is real and the prior pools the algorithms harder than the weighted sums taken
    as observations would. Two algorithms of CTR 0.10 and 0.15, each 720 credited
    impressions worth 223 observed: the prior is that of 223 observed impressions each."""
    weights = [5.0] * 80 + [1.0] * 320
    a = _counts([(w, k % 10 == 0) for k, w in enumerate(weights)])
    b = _counts([(w, k % 20 < 3) for k, w in enumerate(weights)])
    assert (a.ctr, b.ctr) == (0.1, 0.15)
    plain = [PerformanceCounts(c.impressions, c.clicks) for c in (a, b)]
    effective = pooled_prior([a, b], 0.05, max_strength=200.0, min_strength=20.0)
    as_observed = pooled_prior(plain, 0.05, max_strength=200.0, min_strength=20.0)
    n = 720.0**2 / (80 * 25 + 320)
    observed = [PerformanceCounts(n, 0.1 * n), PerformanceCounts(n, 0.15 * n)]
    oracle = pooled_prior(observed, 0.05, max_strength=200.0, min_strength=20.0)
    assert effective.source == as_observed.source == oracle.source == "moments"
    assert effective.mean == pytest.approx(oracle.mean, rel=1e-12)
    assert effective.strength == pytest.approx(oracle.strength, rel=1e-9)
    assert effective.strength > 1.2 * as_observed.strength


def test_a_credit_weight_above_the_clip_counts_as_the_clip() -> None:
    """``attribution.credit_weights`` is bounded at 1e9 at ingest; where it is counted it is
    clipped at ``exploration.credit_clip``, as ``rank`` clips the weights it answers."""
    attribution = {"credit_weights": {"a": 40.0, "b": 2.0, "c": 5.0}}
    got = dict(attributed(attribution, "impression", None, clip=5.0))
    assert got == {
        "a": PerformanceCounts(impressions=1).scaled(5.0),
        "b": PerformanceCounts(impressions=1).scaled(2.0),
        "c": PerformanceCounts(impressions=1).scaled(5.0),
    }
    assert got["a"].impressions == 5.0 and got["a"].impressions_sq == 25.0
    clicks = dict(attributed(attribution, "click", None, clip=5.0))
    assert (clicks["a"].clicks, clicks["b"].clicks) == (5.0, 2.0)
    # the replay of a flagged user's events clips as the processor does
    events = [Event("e", "u", "i", "impression", 1.0, attribution=attribution)]
    replayed = {
        a: c for _, a, _, c in attributed_counts(events, {"a", "b"}, 3_600.0, credit_clip=5.0)
    }
    assert replayed == {"a": got["a"], "b": got["b"]}
