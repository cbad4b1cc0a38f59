"""Inverse-propensity credit (issue 15, ``exploration.credit: ips``): every visit whose top
slot shows an algorithm's own top pick credits it ``1 / propensity``
(``core.exploration.ips_credit``), counted as fractional ``PerformanceCounts``
(``core.bandit.attributed``).

On a small world with known per-algorithm CTRs, the self-normalised estimate (credited
clicks over credited impressions) finds each algorithm's own click rate, while counting
every shown pick once (what the weights correct) overrates an algorithm that agrees with
the greedy top on good visits. The fractional counting is held to a direct computation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.bandit import PerformanceCounts, attributed
from recloop.core.contribution import attributed_counts
from recloop.core.errors import InvalidInput
from recloop.core.events import Event
from recloop.core.exploration import ips_credit, probe

ITEMS = 12
# how well each algorithm's scores follow the true click rates; "echo" picks the greedy top
# on the visits where it is the best candidate, and a random other one on the rest
QUALITY = {"sharp": 0.9, "fair": 0.7, "echo": None, "random": 0.0}
GREEDY = 0.8
EPSILON = 0.3


def _visit(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(true rates of the candidates in greedy order, each algorithm's top pick as an index
    into that order)."""
    c = rng.beta(2.0, 10.0, ITEMS)
    z = (c - c.mean()) / c.std()
    greedy_scores = GREEDY * z + math.sqrt(1 - GREEDY**2) * rng.normal(size=ITEMS)
    order = np.argsort(-greedy_scores, kind="stable")
    c = c[order]
    z = z[order]
    picks = []
    for r in QUALITY.values():
        if r is None:  # echo: the greedy top when it is good, else a random candidate
            picks.append(0 if c[0] == c.max() else int(rng.integers(1, ITEMS)))
        else:
            s = r * z + math.sqrt(1 - r * r) * rng.normal(size=ITEMS)
            picks.append(int(np.argmax(s)))
    return c, np.array(picks)


def _truth(seed: int, n: int) -> np.ndarray:
    """Each algorithm's own top pick's mean click rate."""
    rng = np.random.default_rng(seed)
    total = np.zeros(len(QUALITY))
    for _ in range(n):
        c, picks = _visit(rng)
        total += c[picks]
    return total / n


def _learn(seed: int, n: int, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """(IPS estimates, shown-once estimates) of each algorithm's CTR over ``n`` visits of
    probes with equal weights, clicks drawn from the truth."""
    rng = np.random.default_rng(seed)
    draws = np.random.default_rng(seed + 1)
    names = list(QUALITY)
    ips = dict.fromkeys(names, PerformanceCounts())
    once = dict.fromkeys(names, PerformanceCounts())
    weights = np.full(len(names), 1.0 / len(names))
    for _ in range(n):
        c, picks = _visit(rng)
        shown = probe(picks, weights, ITEMS, EPSILON, draws).explored
        top = int(shown.order[0])
        clicked = rng.random() < c[top]
        credit = ips_credit(picks, top, float(shown.propensities[0]), clip)
        weights_of = zip(names, credit.tolist(), strict=True)
        attribution = {"credit_weights": {a: w for a, w in weights_of if w}}
        for kind in ("impression", "click")[: 1 + int(clicked)]:
            for a, counts in attributed(attribution, kind, None):
                ips[a] = ips[a] + counts
            for a in attribution["credit_weights"]:
                for b, counts in attributed({"algorithm": a}, kind, None):
                    once[b] = once[b] + counts
    return (
        np.array([ips[a].ctr for a in names]),
        np.array([once[a].ctr for a in names]),
    )


def test_ips_credit_learns_each_algorithms_own_ctr_where_counting_shown_picks_does_not() -> None:
    truth = _truth(seed=11, n=20_000)
    assert list(np.argsort(-truth)) == [0, 1, 2, 3]  # sharp > fair > echo > random
    learnt, once = _learn(seed=3, n=20_000, clip=1e9)
    # unbiased (self-normalised): each within 8 % of its true rate, so in the true order
    assert np.all(np.abs(learnt - truth) < 0.08 * truth), (learnt, truth)
    assert list(np.argsort(-learnt)) == [0, 1, 2, 3]
    # counting each shown pick once credits "echo" with the greedy top's good visits:
    # it is overrated above "fair", the order the weights would learn is wrong
    assert once[2] > once[1] > truth[1]
    assert once[2] > 1.2 * truth[2]


def test_clipped_weights_bound_each_visits_credit() -> None:
    # a probe's pick shown with probability 0.3 · 0.25: 13.3 unclipped, 5 clipped
    assert ips_credit([3, 0], 3, EPSILON * 0.25, 5.0).tolist() == [5.0, 0.0]
    assert ips_credit([3, 0], 3, EPSILON * 0.25, 1e9)[0] == pytest.approx(1 / 0.075)
    with pytest.raises(InvalidInput, match="propensity"):
        ips_credit([0], 0, 0.0, 5.0)
    with pytest.raises(InvalidInput, match="clip"):
        ips_credit([0], 0, 0.5, 0.5)


_ALGS = ("a", "b", "c")
_KINDS = ("impression", "click", "purchase", "like", "dwell")


@st.composite
def _events(draw: st.DrawFn) -> list[Event]:
    out = []
    for k in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(_KINDS))
        value = 3.0 if kind == "dwell" else None
        if draw(st.booleans()):
            names = draw(st.lists(st.sampled_from(_ALGS), min_size=1, unique=True))
            weights = {a: draw(st.floats(1.0, 50.0)) for a in names}
            attribution: dict[str, object] = {"credit_weights": weights}
        else:
            attribution = {"algorithm": draw(st.sampled_from(_ALGS))}
        out.append(Event(f"e{k}", "u", "i", kind, 100.0 * k, value, attribution=attribution))
    return out


@settings(max_examples=200, deadline=None)
@given(events=_events())
def test_fractional_counts_equal_a_direct_computation(events: list[Event]) -> None:
    """The replay's counts (``core.contribution``, through ``attributed`` and
    ``PerformanceCounts.__add__``) against sums computed directly from the events."""
    got: dict[str, PerformanceCounts] = {}
    for _, algorithm, _, counts in attributed_counts(events, _ALGS, bucket_seconds=1e9):
        got[algorithm] = got.get(algorithm, PerformanceCounts()) + counts
    for a in _ALGS:

        def weight(e: Event, a: str = a) -> float:
            named = e.attribution.get("credit_weights") or {e.attribution["algorithm"]: 1.0}
            return float(named.get(a, 0.0))

        direct = {kind: math.fsum(weight(e) for e in events if e.type == kind) for kind in _KINDS}
        counts = got.get(a, PerformanceCounts())
        assert counts.impressions == pytest.approx(direct["impression"], rel=1e-12, abs=1e-12)
        assert counts.clicks == pytest.approx(direct["click"], rel=1e-12, abs=1e-12)
        assert counts.conversions == pytest.approx(direct["purchase"], rel=1e-12, abs=1e-12)
        assert counts.satisfaction_n == pytest.approx(direct["like"], rel=1e-12, abs=1e-12)
        assert counts.satisfaction_sum == pytest.approx(direct["like"], rel=1e-12, abs=1e-12)
        # whole counts stay whole when every weight is 1
        if all("algorithm" in e.attribution for e in events):
            assert isinstance(counts.impressions, int)


def test_an_event_names_weights_or_an_algorithm() -> None:
    assert attributed({}, "click", None) == []
    assert attributed({"algorithm": "a"}, "dwell", 3.0) == []
    assert attributed({"credit_weights": {"a": 2.0}}, "dwell", 3.0) == []
    # credit weights take the place of the algorithm
    ((name, counts),) = attributed({"algorithm": "b", "credit_weights": {"a": 2.0}}, "click", None)
    assert (name, counts) == ("a", PerformanceCounts(0, 2.0, 0, 0.0, 0))
