"""The disabling threshold and the segment's evidence read the effective sample size (#15).

Counts credited by inverse propensity (``exploration.credit: ips``) enter the posteriors at
Kish's effective sample size ``n_eff = (Σw)² / Σw²`` (``test_effective_counts.py``). The two
other readers of an algorithm's evidence take the same size: the ``bandit.min_impressions``
an algorithm needs before it may be disabled (``core.bandit.disable_reason``) and the
segment's evidence that shrinks a probing ε (``SegmentWeights.evidence``, read by
``exploration.segment_evidence_half``). Counts never weighted behave as before: the
impressions themselves, the same reason, to the character.

Service level on the in-memory adapters; the oracle for ``n_eff`` is exact rational
arithmetic over the weights.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.adapters.memory import InMemoryStateStore
from recloop.config import BanditSettings
from recloop.core.bandit import (
    BetaPrior,
    PerformanceCounts,
    disable_reason,
    posterior,
)
from recloop.core.segments import SEGMENTS
from recloop.ports import AlgorithmCount
from recloop.services.optimizer import Optimizer

NOW = 1_800_000_000.0
ALGORITHMS = ("a", "b")


def weighted(whole: int, weight: float, n: int, clicks: float = 0) -> PerformanceCounts:
    """``whole`` impressions credited 1 and ``n`` credited ``weight`` each (no clicks unless
    ``clicks``, whole ones), summed as the processor sums them."""
    total = PerformanceCounts(impressions=whole, clicks=clicks)
    one = PerformanceCounts(impressions=1).scaled(weight)
    for _ in range(n):
        total = total + one
    return total


def kish(whole: int, weight: float, n: int) -> float:
    w = [Fraction(1)] * whole + [Fraction(weight)] * n
    return float(sum(w, Fraction(0)) ** 2 / sum((x * x for x in w), Fraction(0)))


def optimizer(**bandit: object) -> Optimizer:
    config = BanditSettings(
        algorithms=list(ALGORITHMS),
        default_weights={s: dict.fromkeys(ALGORITHMS, 0.5) for s in SEGMENTS},
        cache_seconds=0.0,
        seed=7,
        **bandit,  # type: ignore[arg-type]
    )
    return Optimizer(InMemoryStateStore(), config, clock=lambda: NOW)


def rows(segment: str, counts: dict[str, PerformanceCounts]) -> list[AlgorithmCount]:
    return [AlgorithmCount(segment, alg, NOW - 60.0, c) for alg, c in counts.items()]


# -- the disabling threshold ---------------------------------------------------------------


def test_weighted_counts_below_the_threshold_at_their_effective_size_are_not_judged() -> None:
    """1,000 whole impressions and 50 credited 5: Σw = 1,250 ≥ 1,000, n_eff = 694 < 1,000.
    The posterior's upper bound is already below the floor, so only the threshold, read at
    the effective size, keeps the algorithm from being judged on too little evidence."""
    counts = weighted(1_000, 5.0, 50)
    assert counts.impressions == 1_250
    assert counts.effective_impressions == pytest.approx(kish(1_000, 5.0, 50), rel=1e-12)
    assert counts.effective_impressions < 1_000
    post = posterior(BetaPrior(1.0, 1.0), counts)
    assert post.upper(0.95) < 0.005  # credibly below the floor, were it judged
    assert disable_reason(counts, post, 1_000, 0.95, 0.005) is None
    # 1,000 whole impressions are judged, and disabled: Beta(1, 1001)'s upper 95 % bound is
    # 1 - 0.05 ** (1 / 1001) in closed form
    whole = PerformanceCounts(impressions=1_000)
    assert disable_reason(whole, posterior(BetaPrior(1.0, 1.0), whole), 1_000, 0.95, 0.005) == (
        f"CTR upper 95% bound {1 - 0.05 ** (1 / 1001):.4g} < 0.005 after 1000 impressions"
    )


def test_weighted_counts_at_the_threshold_are_judged_and_the_reason_says_both_sizes() -> None:
    counts = weighted(1_500, 5.0, 50)  # Σw 1,750, n_eff 1,750² / 2,750 = 1,113.6
    assert counts.effective_impressions >= 1_000
    post = posterior(BetaPrior(1.0, 1.0), counts)
    reason = disable_reason(counts, post, 1_000, 0.95, 0.005)
    assert reason == (
        f"CTR upper 95% bound {post.upper(0.95):.4g} < 0.005"
        " after 1113.64 effective impressions (1750 credited)"
    )


@settings(max_examples=200, deadline=None)
@given(
    impressions=st.integers(0, 5_000),
    clicks=st.integers(0, 30),
    min_impressions=st.integers(1, 3_000),
)
def test_whole_counts_are_judged_at_their_impressions_as_before(
    impressions: int, clicks: int, min_impressions: int
) -> None:
    """Unweighted counts: judged once the impressions reach the threshold, with the reason
    naming them as whole impressions, exactly as before effective sizes were read."""
    counts = PerformanceCounts(impressions=impressions, clicks=min(clicks, impressions))
    assert counts.effective_impressions == impressions
    assert type(counts.effective_impressions) is int
    post = posterior(BetaPrior(1.0, 1.0), counts)
    reason = disable_reason(counts, post, min_impressions, 0.95, 0.005)
    if impressions < min_impressions or post.upper(0.95) >= 0.005:
        assert reason is None
    else:
        assert reason is not None and reason.endswith(f" after {impressions} impressions")


async def test_the_optimizer_leaves_weighted_evidence_below_the_threshold_enabled() -> None:
    """Service level: ``a``'s weighted counts reach ``min_impressions`` as credited but not
    at their effective size, so it stays enabled; the same counts whole, and more weighted
    ones, disable it."""
    opt = optimizer(disable_ctr=0.01)
    b = PerformanceCounts(impressions=1_000, clicks=20)
    opt.record(rows("new", {"a": weighted(1_000, 5.0, 50), "b": b}))
    result = await opt.weights("new")
    assert result.disabled == [] and set(result.weights) == {"a", "b"}
    # the posterior the review reads is credibly below the floor all the same
    post = opt.posteriors("new", NOW)["a"]
    assert post.upper(0.95) < 0.01

    opt.record(rows("new", {"a": weighted(500, 5.0, 0)}))  # n_eff 1,113.6 now
    result = await opt.weights("new")
    assert [s.algorithm for s in result.disabled] == ["a"]
    assert "effective impressions (1750 credited)" in result.disabled[0].reason

    whole = optimizer(disable_ctr=0.01)
    whole.record(rows("new", {"a": PerformanceCounts(impressions=1_250), "b": b}))
    (off,) = (await whole.weights("new")).disabled
    assert off.algorithm == "a" and off.reason.endswith(" after 1250 impressions")


# -- the segment's evidence -------------------------------------------------------------


async def test_the_segments_evidence_is_the_mean_effective_size() -> None:
    """``a``: 10 impressions credited 4 (Σw 40, n_eff 10); ``b``: 10 whole. The evidence
    that shrinks ε is their mean effective size, 10, not the credited mean, 25."""
    opt = optimizer()
    opt.record(rows("regular", {"a": weighted(0, 4.0, 10), "b": PerformanceCounts(10, 1)}))
    result = await opt.weights("regular")
    assert opt.window_totals("regular", NOW)["a"].impressions == 40
    assert result.evidence == pytest.approx(10.0, rel=1e-12)
    # mixed weights: each algorithm's own Kish size
    opt.record(rows("power", {"a": weighted(30, 5.0, 6), "b": weighted(7, 2.5, 4)}))
    result = await opt.weights("power")
    expected = (kish(30, 5.0, 6) + kish(7, 2.5, 4)) / 2
    assert result.evidence == pytest.approx(expected, rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(impressions=st.lists(st.integers(0, 100_000), min_size=2, max_size=2))
def test_the_segments_evidence_of_whole_counts_is_their_mean_impressions(
    impressions: list[int],
) -> None:
    opt = optimizer()
    counts = {
        alg: PerformanceCounts(n, n // 50) for alg, n in zip(ALGORITHMS, impressions, strict=True)
    }
    opt.record(rows("inactive", counts))
    result = asyncio.run(opt.weights("inactive"))
    enabled = [alg for alg in ALGORITHMS if alg in result.weights]
    if len(enabled) == len(ALGORITHMS):
        assert result.evidence == sum(impressions) / 2
    else:  # one was disabled (a low CTR after enough impressions): the other's alone
        assert result.evidence == sum(counts[a].impressions for a in enabled) / len(enabled)
