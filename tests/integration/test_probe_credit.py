"""Issue 15 item 3: on a world where each algorithm's true CTR is known, the weights learnt
from probes order the algorithms correctly.

Per visit, ``ITEMS`` items with true click rates ``c ~ Beta(2, 8)``; algorithm ``k`` scores
them ``r_k z + sqrt(1 - r_k²) noise`` (``z`` the standardised rates) and proposes its top
``PROPOSED``. An algorithm's true CTR is the click rate of its own top pick, computed from
the same generator on other visits. recloop ranks every visit with ``k = 1`` and probes
(``exploration.probe``); the shown item's impression and click (drawn from its rate) go
back naming the ``credit`` ``rank`` returned (``exploration.credit: probe``), or its
``credit_weights`` (``exploration.credit: ips``, the default), as an orchestrator does.
Crediting by share (``exploration.probe: false``) would squeeze the algorithms' CTRs together
(``python -m benchmarks.credit``); a probe credits one algorithm drawn independently of the
visit, so its CTR is unbiased, and inverse-propensity credit weighs every shown pick by the
chance it had, so its self-normalised CTR is too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recloop.config import Settings
from tests.conftest import make_settings, start_app

QUALITY = {"collaborative": 0.95, "content_based": 0.7, "popularity": 0.35, "random": 0.0}
ITEMS = 30
PROPOSED = 5
VISITS = 2_400
EPSILON = 0.5


def visit(
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(true rates, each algorithm's proposals best first, their scores)."""
    c = rng.beta(2.0, 8.0, ITEMS)
    z = (c - c.mean()) / c.std()
    scores = {
        name: r * z + np.sqrt(1.0 - r * r) * rng.normal(size=ITEMS) for name, r in QUALITY.items()
    }
    return c, {k: np.argsort(-s)[:PROPOSED] for k, s in scores.items()}, scores


async def ranked_visit(
    app: Any, rng: np.random.Generator, t: int
) -> tuple[np.ndarray, dict[str, np.ndarray], str, dict[str, Any]]:
    """Visit ``t``: its true CTRs, each algorithm's top picks, the user (one of 200) and
    ``rank``'s answer (``k = 1``) for the algorithms' scored candidates."""
    c, top, scores = visit(rng)
    candidates = [
        {"item_id": f"i{j}", "algorithm": name, "score": float(scores[name][j])}
        for name, picks in top.items()
        for j in picks.tolist()
    ]
    user = f"u{t % 200}"
    r = await app.client.post(f"/users/{user}/rank", json={"candidates": candidates, "k": 1})
    assert r.status_code == 200, r.text
    return c, top, user, r.json()


async def send_feedback(
    app: Any, body: dict[str, Any], user: str, attribution: dict[str, Any], clicked: bool
) -> None:
    """The top slot's impression, and its click if ``clicked``, with ``attribution``."""
    shown = body["ranking"][0]
    events = [
        {
            "event_id": f"{body['impression_id']}-{kind}",
            "user_id": user,
            "item_id": shown["item_id"],
            "type": kind,
            "attribution": attribution,
        }
        for kind in ("impression", "click")[: 1 + int(clicked)]
    ]
    r = await app.client.post("/feedback", json={"events": events})
    assert r.status_code == 202, r.text


async def credited_counts(app: Any) -> tuple[dict[str, float], dict[str, float]]:
    """Each algorithm's credited impressions and clicks, summed over segments."""
    rows = (await app.client.get("/algorithms")).json()["algorithms"]
    impressions = {a: sum(r["impressions"] for r in rows if r["algorithm"] == a) for a in QUALITY}
    clicks = {a: sum(r["clicks"] for r in rows if r["algorithm"] == a) for a in QUALITY}
    return impressions, clicks


def true_ctr(seed: int, n: int = 20_000) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    own = dict.fromkeys(QUALITY, 0.0)
    for _ in range(n):
        c, top, _ = visit(rng)
        for name in QUALITY:
            own[name] += float(c[top[name][0]]) / n
    return own


async def test_probes_learn_weights_that_order_the_algorithms_by_true_ctr(
    tmp_path: Path,
) -> None:
    truth = true_ctr(seed=1)
    order = sorted(QUALITY, key=lambda a: -truth[a])
    assert order == list(QUALITY)  # the world is what it says (r orders the top picks)
    settings = make_settings(
        tmp_path,
        "memory",
        bandit={
            "algorithms": list(QUALITY),
            "default_weights": {s: dict.fromkeys(QUALITY, 0.25) for s in
                                ("new", "power", "inactive", "regular")},
            "cache_seconds": 0.0,
            "seed": 5,
        },
        exploration={
            "probe": True,
            "credit": "probe",
            "epsilon": dict.fromkeys(("new", "power", "inactive", "regular"), EPSILON),
            "evidence_half": None,
            "seed": 6,
        },
    )  # fmt: skip
    app, close = await start_app(settings)
    rng = np.random.default_rng(2)
    credited = 0
    try:
        for t in range(VISITS):
            c, _, user, body = await ranked_visit(app, rng, t)
            shown = body["ranking"][0]
            attribution = {"impression_id": body["impression_id"]}
            if shown["credit"] is not None:  # a probe (the other visits credit no algorithm)
                attribution["algorithm"] = shown["credit"]
                credited += 1
            clicked = rng.random() < c[int(shown["item_id"][1:])]
            await send_feedback(app, body, user, attribution, clicked)
        await app.idle(flush=True)
        impressions, clicks = await credited_counts(app)
        assert sum(impressions.values()) == credited
        assert abs(credited / VISITS - EPSILON) < 0.05
        learnt = {a: clicks[a] / impressions[a] for a in QUALITY}
        # unbiased: each within 3.5 standard errors of the truth ...
        for a in QUALITY:
            se = np.sqrt(truth[a] * (1.0 - truth[a]) / impressions[a])
            assert abs(learnt[a] - truth[a]) < 3.5 * se, (a, learnt[a], truth[a])
        # ... so the learnt CTRs order them correctly, and so do the weights served to the
        # segment with the most evidence (mean weights, the default: in proportion to the
        # posterior means, so in the true order, the best well above the worst)
        assert sorted(QUALITY, key=lambda a: -learnt[a]) == order
        new = (await app.client.get("/users/nobody/weights")).json()  # most evidence: new
        assert new["segment"] == "new"
        weights = new["weights"]
        assert sorted(QUALITY, key=lambda a: -weights[a]) == order
        assert weights[order[0]] > 2 * weights[order[-1]]
    finally:
        await close()


async def test_ips_credit_learns_from_every_visit_and_orders_the_algorithms(
    tmp_path: Path,
) -> None:
    """``exploration.credit: ips``: the top slot's ``credit_weights`` name every algorithm whose
    own top pick it shows, each weighed 1 / propensity; sent back as
    ``attribution.credit_weights``, they are counted as fractional impressions and clicks:
    exactly the weights' sums (the direct computation), about one impression per algorithm
    and visit (the expectation of an inverse-propensity weight), and a click rate per
    algorithm (self-normalised) that orders the algorithms as their true CTRs do."""
    truth = true_ctr(seed=1)
    order = sorted(QUALITY, key=lambda a: -truth[a])
    segments = ("new", "power", "inactive", "regular")
    visits = 1_600
    settings = make_settings(
        tmp_path,
        "memory",
        bandit={
            "algorithms": list(QUALITY),
            "default_weights": {s: dict.fromkeys(QUALITY, 0.25) for s in segments},
            "cache_seconds": 0.0,
            "seed": 5,
        },
        exploration={
            "probe": True,
            "credit": "ips",
            "credit_clip": 1e6,
            "epsilon": dict.fromkeys(segments, EPSILON),
            "evidence_half": None,
            "segment_evidence_half": None,
            "seed": 6,
        },
    )
    app, close = await start_app(settings)
    rng = np.random.default_rng(2)
    sent = dict.fromkeys(QUALITY, 0.0)
    sent_clicks = dict.fromkeys(QUALITY, 0.0)
    try:
        for t in range(visits):
            c, top, user, body = await ranked_visit(app, rng, t)
            shown = body["ranking"][0]
            assert shown["credit"] is None
            weights = shown["credit_weights"]
            for a, w in weights.items():  # 1 / the slot's propensity, its pick shown
                assert w == pytest.approx(1.0 / shown["propensity"])
                assert shown["item_id"] == f"i{int(top[a][0])}"
            if t < 20:  # logged with the impression as answered
                r = await app.client.get(f"/impressions/{body['impression_id']}")
                assert r.json()["slate"][0]["credit_weights"] == weights
            clicked = rng.random() < c[int(shown["item_id"][1:])]
            for a, w in weights.items():
                sent[a] += w
                sent_clicks[a] += w * clicked
            attribution = {"impression_id": body["impression_id"], "credit_weights": weights}
            await send_feedback(app, body, user, attribution, clicked)
        await app.idle(flush=True)
        impressions, clicks = await credited_counts(app)
        for a in QUALITY:
            assert impressions[a] == pytest.approx(sent[a], rel=1e-9)
            assert clicks[a] == pytest.approx(sent_clicks[a], rel=1e-9, abs=1e-9)
            assert 0.8 * visits < impressions[a] < 1.2 * visits  # E[weight] = 1 per visit
        learnt = {a: clicks[a] / impressions[a] for a in QUALITY}
        assert sorted(QUALITY, key=lambda a: -learnt[a]) == order
        for a in QUALITY:
            assert abs(learnt[a] - truth[a]) < 0.25 * truth[a], (a, learnt[a], truth[a])
        weights = (await app.client.get("/users/nobody/weights")).json()["weights"]
        assert sorted(QUALITY, key=lambda a: -weights[a]) == order
    finally:
        await close()


def _shrinking_settings(tmp_path: Path) -> Settings:
    """Probes with IPS credit whose ε (0.3 for ``new``) halves at 10 impressions of the
    segment's evidence per algorithm, equal default weights, weights recomputed at every
    read."""
    segments = ("new", "power", "inactive", "regular")
    return make_settings(
        tmp_path,
        "memory",
        bandit={
            "algorithms": list(QUALITY),
            "default_weights": {s: dict.fromkeys(QUALITY, 0.25) for s in segments},
            "cache_seconds": 0.0,
        },
        exploration={
            "probe": True,
            "credit": "ips",
            "segment_evidence_half": 10.0,
            "evidence_half": None,
            "epsilon": {"new": 0.3, "power": 0.05, "inactive": 0.2, "regular": 0.1},
        },
    )


async def test_probing_epsilon_shrinks_with_the_segments_evidence(tmp_path: Path) -> None:
    settings = _shrinking_settings(tmp_path)
    app, close = await start_app(settings)
    try:

        async def epsilon() -> float:
            r = await app.client.get("/users/nobody/strategy")
            return float(r.json()["exploration"]["epsilon"])

        assert await epsilon() == 0.3  # no evidence: the ceiling
        # 10 credited impressions per algorithm in the new segment (one user each)
        events = [
            {
                "user_id": f"v{k}-{a}",
                "item_id": "i",
                "type": "impression",
                "attribution": {"algorithm": a},
            }
            for a in QUALITY
            for k in range(10)
        ]
        r = await app.client.post("/feedback", json={"events": events})
        assert r.status_code == 202, r.text
        await app.idle(flush=True)
        assert await epsilon() == pytest.approx(0.3 * 10 / (10 + 10))
        rows = (await app.client.get("/algorithms")).json()["algorithms"]
        new = [r for r in rows if r["segment"] == "new"]
        assert [r["effective_impressions"] for r in new] == [10] * len(QUALITY)
    finally:
        await close()


async def test_weighted_credit_shrinks_epsilon_by_its_effective_size(tmp_path: Path) -> None:
    """With ``credit_weights`` the segment's evidence is each algorithm's effective sample
    size (Kish), shown as ``effective_impressions`` in ``GET /algorithms``: 10 impressions
    per algorithm, 5 credited 3 (the clip) and 5 credited 1, are Σw = 20 credited but
    n_eff = 20² / 50 = 8 observed, and ε shrinks by 8, not by 20."""
    settings = _shrinking_settings(tmp_path)
    app, close = await start_app(settings)
    try:
        events = [
            {
                "user_id": f"v{k}-{a}",
                "item_id": "i",
                "type": "impression",
                "attribution": {"credit_weights": {a: 3.0 if k < 5 else 1.0}},
            }
            for a in QUALITY
            for k in range(10)
        ]
        r = await app.client.post("/feedback", json={"events": events})
        assert r.status_code == 202, r.text
        await app.idle(flush=True)
        rows = (await app.client.get("/algorithms")).json()["algorithms"]
        new = [r for r in rows if r["segment"] == "new"]
        n_eff = 20.0**2 / (5 * 9 + 5)
        assert [r["impressions"] for r in new] == [20.0] * len(QUALITY)
        assert [r["effective_impressions"] for r in new] == pytest.approx([n_eff] * len(QUALITY))
        r = await app.client.get("/users/nobody/strategy")
        epsilon = float(r.json()["exploration"]["epsilon"])
        assert epsilon == pytest.approx(0.3 * 10 / (10 + n_eff))
        assert epsilon > 0.3 * 10 / (10 + 20) * 1.5  # not shrunk by the credited sum
    finally:
        await close()


async def test_weighted_counts_are_clipped_and_their_posterior_kept_across_a_restart(
    tmp_path: Path,
) -> None:
    """Session 14, embedded (SQLite): credit weights above ``exploration.credit_clip`` count
    as the clip; the posterior of weighted counts is that of their effective sample size
    (Kish), and so it is again after a restart, read back from the stored counts."""
    settings = make_settings(tmp_path, "sqlite", bandit={"cache_seconds": 0.0})
    assert settings.exploration.credit_clip == 3.0
    # 30 visits of new users: 10 credited 40 (counted 3) and 20 credited 1; every fifth clicked
    events = [
        {
            "event_id": f"e{k}-{kind}",
            "user_id": f"w{k}",
            "item_id": "i",
            "type": kind,
            "attribution": {"credit_weights": {"collaborative": 40.0 if k < 10 else 1.0}},
        }
        for k in range(30)
        for kind in ("impression", "click")[: 1 + int(k % 5 == 0)]
    ]

    async def row(app: Any) -> dict[str, Any]:
        rows = (await app.client.get("/algorithms")).json()["algorithms"]
        (found,) = [r for r in rows if r["algorithm"] == "collaborative" and r["impressions"] > 0]
        return found

    app, close = await start_app(settings)
    try:
        r = await app.client.post("/feedback", json={"events": events})
        assert r.status_code == 202, r.text
        await app.idle(flush=True)
        before = await row(app)
        assert (before["impressions"], before["clicks"]) == (50.0, 10.0)  # 10·3 + 20, 2·3 + 4
        segment = before["segment"]
        posts = app.container.optimizer.posteriors(segment, time.time())
        n_eff = 50.0**2 / (10 * 9 + 20)
        assert before["effective_impressions"] == pytest.approx(n_eff, rel=1e-9)
        prior = app.container.optimizer.priors(segment, time.time())["collaborative"]
        assert posts["collaborative"].a == pytest.approx(prior.a + 0.2 * n_eff, rel=1e-9)
        assert posts["collaborative"].b == pytest.approx(prior.b + 0.8 * n_eff, rel=1e-9)
    finally:
        await close()
    app, close = await start_app(settings)
    try:
        after = await row(app)
        assert after["effective_impressions"] == pytest.approx(before["effective_impressions"])
        assert after["posterior_interval"] == pytest.approx(before["posterior_interval"])
        assert after["posterior_mean"] == pytest.approx(before["posterior_mean"])
    finally:
        await close()
