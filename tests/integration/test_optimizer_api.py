"""Algorithm weights, performance reports, auto-disable, overrides, strategy and rank."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from recloop.api.schemas import REPORT_COUNT_MAX
from recloop.config import Settings
from recloop.core.exploration import promotion_probabilities
from tests.conftest import Running, start_app

ALGS = ["collaborative", "content_based", "popularity", "trending"]


async def weights(app: Running, user: str = "nobody") -> dict:
    r = await app.client.get(f"/users/{user}/weights")
    assert r.status_code == 200, r.text
    return r.json()


async def rank_newcomer(app: Running, candidates: list[dict]) -> dict:
    """A ranking for a new user with no evidence: ε at the new segment's ceiling, 0.3."""
    r = await app.client.post("/users/newcomer/rank", json={"candidates": candidates})
    assert r.status_code == 200, r.text
    body: dict = r.json()
    assert body["epsilon"] == 0.3
    return body


def stats(rows: list[dict], segment: str, algorithm: str) -> dict:
    (row,) = [r for r in rows if r["segment"] == segment and r["algorithm"] == algorithm]
    return row


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(bandit={"cache_seconds": 0.0, "seed": 7}, exploration={"seed": 3})


@pytest.fixture
async def app(settings: Settings):  # type: ignore[no-untyped-def]
    running, close = await start_app(settings)
    yield running
    await close()


@pytest.fixture
async def share_app(settings_factory: Callable[..., Settings]):  # type: ignore[no-untyped-def]
    """The policy before probes became the default (issue 15): softmax exploration, every
    slot credited by share, P(best) weights. It is still a setting, and what the tests of
    its exact propensities and shares below check."""
    running, close = await start_app(
        settings_factory(
            bandit={"cache_seconds": 0.0, "seed": 7, "weight_mode": "probability"},
            exploration={"seed": 3, "probe": False, "segment_evidence_half": None},
        )
    )
    yield running
    await close()


async def test_unknown_user_is_new_and_gets_the_prior_weights(app: Running) -> None:
    body = await weights(app)
    assert body["segment"] == "new"
    assert set(body["weights"]) == set(ALGS)
    assert sum(body["weights"].values()) == pytest.approx(1.0)
    assert max(body["weights"], key=body["weights"].get) == "popularity"
    assert body["disabled"] == []
    assert body["mode"] == "mean"  # the default since issue 15 (docs/benchmarks.md)


async def test_reports_move_the_weights_and_are_idempotent(app: Running) -> None:
    records = [
        {"algorithm": a, "segment": "regular", "impressions": 20_000, "clicks": c}
        for a, c in zip(ALGS, [1_600, 600, 600, 600], strict=True)
    ]
    r = await app.client.post(
        "/algorithm-performance", json={"records": records, "report_id": "r1"}
    )
    assert r.status_code == 202
    assert r.json() == {"report_id": "r1", "status": "accepted", "records": 4}
    again = await app.client.post(
        "/algorithm-performance", json={"records": records, "report_id": "r1"}
    )
    assert again.json()["status"] == "duplicate"
    rows = (await app.client.get("/algorithms")).json()["algorithms"]
    collaborative = stats(rows, "regular", "collaborative")
    assert (collaborative["impressions"], collaborative["clicks"]) == (20_000, 1_600)
    # whole counts: their effective sample size is the impressions, and as whole
    assert collaborative["effective_impressions"] == 20_000
    assert isinstance(collaborative["effective_impressions"], int)
    assert collaborative["ctr"] == pytest.approx(0.08)
    lo, hi = collaborative["posterior_interval"]
    assert lo < collaborative["posterior_mean"] < hi
    # a user with 10 interactions is "regular"
    await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
    events = [{"user_id": "reg", "item_id": "i", "type": "like"} for _ in range(10)]
    await app.client.post("/feedback", json={"events": events})
    await app.idle()
    body = await weights(app, "reg")
    assert body["segment"] == "regular"
    # mean weights (the default): each algorithm's posterior mean CTR, normalised
    means = {a: stats(rows, "regular", a)["posterior_mean"] for a in ALGS}
    for a in ALGS:
        assert body["weights"][a] == pytest.approx(means[a] / sum(means.values()))
    assert max(body["weights"], key=body["weights"].get) == "collaborative"


@pytest.mark.parametrize(
    ("record", "loc"),
    [
        (
            {"algorithm": "collaborative", "segment": "new", "impressions": 5, "clicks": 6},
            ["clicks"],
        ),
        (
            {
                "algorithm": "collaborative",
                "segment": "new",
                "impressions": 5,
                "clicks": 0,
                "conversions": 6,
            },
            ["conversions"],
        ),
        (
            {"algorithm": "collaborative", "segment": "new", "impressions": 10**23, "clicks": 0},
            ["impressions"],
        ),
        (
            {"algorithm": "collaborative", "segment": "new", "impressions": 2**63 - 1, "clicks": 0},
            ["impressions"],
        ),
        (
            {
                "algorithm": "collaborative",
                "segment": "new",
                "impressions": REPORT_COUNT_MAX + 1,
                "clicks": 0,
            },
            ["impressions"],
        ),
        (
            {
                "algorithm": "collaborative",
                "segment": "new",
                "impressions": REPORT_COUNT_MAX,
                "clicks": REPORT_COUNT_MAX + 1,
            },
            ["clicks"],
        ),
        (
            {
                "records": [
                    {"algorithm": "popularity", "segment": "new", "impressions": 1, "clicks": 2}
                ]
            },
            ["records", 0, "clicks"],
        ),
        ({"algorithm": "collaborative", "impressions": 5, "clicks": 1}, []),
        (
            {
                "algorithm": "collaborative",
                "segment": "new",
                "user_id": "u",
                "impressions": 5,
                "clicks": 1,
            },
            [],
        ),
        (
            {"algorithm": "collaborative", "segment": "new", "impressions": -1, "clicks": 0},
            ["impressions"],
        ),
        (
            {"algorithm": "collaborative", "segment": "vip", "impressions": 1, "clicks": 0},
            ["segment"],
        ),
        (
            {"algorithm": "telepathy", "segment": "new", "impressions": 1, "clicks": 0},
            ["algorithm"],
        ),
    ],
)
async def test_bad_reports_are_422_and_change_nothing(
    app: Running, record: dict, loc: list
) -> None:
    r = await app.client.post("/algorithm-performance", json=record)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][0] == "body"
    if loc:
        assert detail["loc"] == ["body", *loc]
    if record.get("algorithm") == "telepathy":
        assert "telepathy" in detail["msg"]
    rows = (await app.client.get("/algorithms")).json()["algorithms"]
    assert all(row["impressions"] == 0 for row in rows)


async def test_the_largest_reports_are_accepted_and_summed(app: Running) -> None:
    """Issue 16: counts up to REPORT_COUNT_MAX are taken, and their sums are exact."""
    record = {
        "algorithm": "popularity",
        "segment": "new",
        "impressions": REPORT_COUNT_MAX,
        "clicks": REPORT_COUNT_MAX,
        "conversions": REPORT_COUNT_MAX,
        "satisfaction": 1.0,
    }
    r = await app.client.post("/algorithm-performance", json={"records": [record] * 1000})
    assert r.status_code == 202, r.text
    r = await app.client.post("/algorithm-performance", json=record)
    assert r.status_code == 202, r.text
    rows = (await app.client.get("/algorithms")).json()["algorithms"]
    popularity = stats(rows, "new", "popularity")
    assert popularity["impressions"] == popularity["clicks"] == 1001 * REPORT_COUNT_MAX
    assert popularity["ctr"] == 1.0


async def test_credibly_bad_algorithm_is_disabled_and_overrides_win(app: Running) -> None:
    report = {"algorithm": "trending", "segment": "new", "impressions": 5_000, "clicks": 3}
    await app.client.post("/algorithm-performance", json=report)
    body = await weights(app)
    assert "trending" not in body["weights"]
    assert sum(body["weights"].values()) == pytest.approx(1.0)
    (off,) = body["disabled"]
    assert off["algorithm"] == "trending" and not off["manual"]
    assert "5000 impressions" in off["reason"]

    r = await app.client.post("/algorithms/trending/enable", json={"segments": ["new"]})
    assert r.json() == {"algorithm": "trending", "enabled": True, "segments": ["new"]}
    assert "trending" in (await weights(app))["weights"]

    await app.client.post("/algorithms/trending/release", json={"segments": ["new"]})
    assert "trending" not in (await weights(app))["weights"]

    await app.client.post("/algorithms/popularity/disable")
    body = await weights(app)
    assert "popularity" not in body["weights"]
    manual = [d for d in body["disabled"] if d["algorithm"] == "popularity"]
    assert manual[0]["manual"] and manual[0]["reason"] == "disabled by hand"
    assert (await app.client.post("/algorithms/nope/disable")).status_code == 422


async def test_attributed_feedback_counts_for_the_users_segment(app: Running) -> None:
    await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
    attribution = {"algorithm": "popularity"}
    events = (
        [{"user_id": "u", "item_id": "i", "type": "impression", "attribution": attribution}] * 4
        + [{"user_id": "u", "item_id": "i", "type": "click", "attribution": attribution}]
        + [{"user_id": "u", "item_id": "i", "type": "purchase", "attribution": attribution}]
        + [
            {
                "user_id": "u",
                "item_id": "i",
                "type": "rating",
                "value": 5,
                "attribution": attribution,
            }
        ]
        + [{"user_id": "u", "item_id": "i", "type": "click"}]  # not attributed
    )
    r = await app.client.post("/feedback", json={"events": events})
    assert r.json()["accepted"] == len(events)
    await app.idle(flush=True)
    rows = (await app.client.get("/algorithms")).json()["algorithms"]
    row = stats(rows, "new", "popularity")
    assert (row["impressions"], row["clicks"], row["conversions"]) == (4, 1, 1)
    assert row["satisfaction"] == pytest.approx(1.0)
    assert sum(r["impressions"] for r in rows) == 4


async def test_strategy_reports_segment_weights_and_epsilon(app: Running) -> None:
    r = await app.client.get("/users/someone/strategy")
    body = r.json()
    assert body["segment"] == "new"
    assert body["exploration"] == {"strategy": "epsilon_greedy", "epsilon": 0.3}
    assert body["model"] == {"version": None, "slot": None}
    assert body["experiments"] == []
    assert sum(body["weights"].values()) == pytest.approx(1.0)
    assert body["preferences_updated_at"] is None


async def test_rank_logs_the_impression_and_joins_feedback(share_app: Running) -> None:
    await share_app.client.put("/items/a", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
    await share_app.client.put("/items/b", json={"vector": [0, 1, 0, 0, 0, 0, 0, 0]})
    candidates = [
        {"item_id": "a", "algorithm": "popularity", "score": 0.9},
        {"item_id": "b", "algorithm": "popularity", "score": 0.5},
        {"item_id": "c", "algorithm": "collaborative", "score": 3.0},
        {"item_id": "d"},
    ]
    r = await share_app.client.post(
        "/users/u1/rank", json={"candidates": candidates, "k": 3, "context": {"device": "tv"}}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["segment"] == "new" and body["epsilon"] == 0.3
    ranking = body["ranking"]
    assert len(ranking) == 3
    assert len({x["item_id"] for x in ranking}) == 3
    for x in ranking:
        assert 0.0 < x["propensity"] <= 1.0
    top = ranking[0]
    # exact values for every shown slot: test_rank_explores_plausible_candidates_exactly
    if top["explored"]:
        assert 0.0 < top["propensity"] < 0.3
    else:
        assert top["propensity"] == pytest.approx(0.7)

    await share_app.client.post(
        "/feedback",
        json={
            "user_id": "u1",
            "item_id": ranking[0]["item_id"],
            "type": "click",
            "attribution": {"impression_id": body["impression_id"]},
        },
    )
    logged = (await share_app.client.get(f"/impressions/{body['impression_id']}")).json()
    assert [s["item_id"] for s in logged["slate"]] == [x["item_id"] for x in ranking]
    assert logged["context"] == {"device": "tv"}
    assert [f["type"] for f in logged["feedback"]] == ["click"]
    assert (await share_app.client.get("/impressions/nope")).status_code == 404


async def test_rank_explores_plausible_candidates_exactly(share_app: Running) -> None:
    # one list of 8 scored candidates, no preferences: the greedy order is by score. A new
    # user explores at the ceiling (0.3); an exploring draw promotes one of the next
    # exploration.top (5) candidates by a softmax of their scores (temperature 0.5).
    candidates = [
        {"item_id": f"i{n}", "algorithm": "popularity", "score": 10.0 - n} for n in range(8)
    ]
    tops = set()
    for _ in range(60):
        ranking = (await rank_newcomer(share_app, candidates))["ranking"]
        greedy = sorted(ranking, key=lambda x: -x["score"])
        assert [x["item_id"] for x in greedy] == [f"i{n}" for n in range(8)]
        scores = [x["score"] for x in greedy]
        q = promotion_probabilities(scores, top=5, temperature=0.5)
        # P(M = m): the whole slate is determined by the promoted index m
        p_m = [0.7 + 0.3 * q[0]] + [0.3 * q[m] for m in range(1, 8)]
        exact: dict[tuple[str, int], float] = {}
        for m in range(8):
            slate = [greedy[m], *greedy[:m], *greedy[m + 1 :]]
            for position, x in enumerate(slate):
                key = (x["item_id"], position)
                exact[key] = exact.get(key, 0.0) + p_m[m]
        for position, x in enumerate(ranking):
            assert x["propensity"] == pytest.approx(exact[x["item_id"], position], abs=1e-12)
            assert x["explored"] == (position == 0 and x["item_id"] != "i0")
        tops.add(ranking[0]["item_id"])
    assert "i0" in tops and tops - {"i0"}  # it explores ...
    assert not tops & {"i6", "i7"}  # ... among the top set only


async def test_rank_says_who_proposed_each_item_and_their_shares(share_app: Running) -> None:
    candidates = [
        {"item_id": "x", "algorithm": "popularity", "score": 2.0},
        {"item_id": "y", "algorithm": "popularity", "score": 1.0},
        {"item_id": "y", "algorithm": "trending", "score": 5.0},
        {"item_id": "z"},
    ]
    r = await share_app.client.post("/users/u2/rank", json={"candidates": candidates})
    assert r.status_code == 200, r.text
    body = r.json()
    ranked = {x["item_id"]: x for x in body["ranking"]}
    assert ranked["x"]["algorithms"] == ["popularity"] and ranked["x"]["shares"] == [1.0]
    assert ranked["z"]["algorithms"] == [] and ranked["z"]["shares"] == []
    assert ranked["z"]["credit"] is None
    # y: popularity's second of two (its weight x 1/2), trending's first of one (x 1);
    # the weights are drawn afresh per request here (cache_seconds 0), so only the sum
    y = ranked["y"]
    assert y["algorithms"] == ["popularity", "trending"]
    assert sum(y["shares"]) == pytest.approx(1.0)
    assert all(0.0 < share < 1.0 for share in y["shares"])
    assert y["credit"] in y["algorithms"]
    logged = (await share_app.client.get(f"/impressions/{body['impression_id']}")).json()
    assert [s.get("credit") for s in logged["slate"]] == [x["credit"] for x in body["ranking"]]


@pytest.fixture
async def probe_credit_app(settings_factory: Callable[..., Settings]):  # type: ignore[no-untyped-def]
    """Probes crediting the probed algorithm alone (``exploration.credit: probe``), the
    default before session 13's inverse-propensity credit."""
    running, close = await start_app(
        settings_factory(
            bandit={"cache_seconds": 0.0, "seed": 7}, exploration={"seed": 3, "credit": "probe"}
        )
    )
    yield running
    await close()


# Two lists: popularity ranks i0 .. i7, trending ranks i3 then i0.
_TWO_LISTS = [
    *({"item_id": f"i{n}", "algorithm": "popularity", "score": 10.0 - n} for n in range(8)),
    {"item_id": "i3", "algorithm": "trending", "score": 2.0},
    {"item_id": "i0", "algorithm": "trending", "score": 1.0},
]
_PICKS = {"popularity": "i0", "trending": "i3"}


async def _probed_rankings(app: Running) -> list[tuple[list[dict], str, dict[str, float]]]:
    """80 rankings of a newcomer (ε 0.3: no evidence yet), each with its greedy top and the
    exact top-slot propensities: by default an exploring draw is a probe, an algorithm drawn
    by its weight (posterior means of the prior here: exact), its own top pick on top."""
    served = (await weights(app, "newcomer"))["weights"]
    chance = {
        a: served[a] / (served["popularity"] + served["trending"])
        for a in ("popularity", "trending")
    }
    out = []
    for _ in range(80):
        ranking = (await rank_newcomer(app, _TWO_LISTS))["ranking"]
        greedy = sorted(ranking, key=lambda x: -x["score"])[0]["item_id"]
        p_top = {greedy: 0.7}
        for a, item in _PICKS.items():
            p_top[item] = p_top.get(item, 0.0) + 0.3 * chance[a]
        top = ranking[0]
        assert top["propensity"] == pytest.approx(p_top[top["item_id"]], abs=1e-12)
        assert top["explored"] == (top["item_id"] != greedy)
        out.append((ranking, greedy, chance))
    return out


async def test_rank_probes_by_default_and_credits_by_inverse_propensity(app: Running) -> None:
    # Every visit's top slot credits each algorithm whose own pick it shows with
    # 1 / propensity (clipped at 3), probed or not; no slot names a single `credit`.
    shown = set()
    for ranking, _, _ in await _probed_rankings(app):
        top = ranking[0]
        assert all(x["credit"] is None and x["credit_probability"] == 0.0 for x in ranking)
        expected = {
            a: min(1.0 / top["propensity"], 3.0)
            for a, item in _PICKS.items()
            if item == top["item_id"]
        }
        assert top["credit_weights"] == pytest.approx(expected)
        assert all(x["credit_weights"] == {} for x in ranking[1:])
        shown.add(top["item_id"])
    assert set(_PICKS.values()) <= shown


async def test_rank_probes_credit_the_probed_algorithm_alone(probe_credit_app: Running) -> None:
    # With `credit: probe`, a probe's top slot is credited to the probed algorithm alone
    # with the chance it had of being drawn; the other visits credit none.
    credits = set()
    for ranking, greedy, chance in await _probed_rankings(probe_credit_app):
        top = ranking[0]
        if top["credit"] is None:  # not a probe: the greedy order, nothing credited
            assert top["item_id"] == greedy and top["credit_probability"] == 0.0
        else:
            assert top["item_id"] == _PICKS[top["credit"]]
            assert top["credit_probability"] == pytest.approx(chance[top["credit"]])
        assert all(x["credit"] is None for x in ranking[1:])
        assert all(x["credit_weights"] is None for x in ranking)
        credits.add(top["credit"])
    assert credits == {None, "popularity", "trending"}


@pytest.mark.parametrize(("affinity_weight", "top"), [(0.5, "b"), (None, "a")])
async def test_rank_prefers_the_users_taste_with_an_affinity_weight(
    settings_factory: Callable[..., Settings], affinity_weight: float | None, top: str
) -> None:
    """``rank.affinity_weight`` 0.5 puts the user's taste first; the default (0) leaves
    the fused lists' order alone (the affinity is still logged as a feature)."""
    rank = {} if affinity_weight is None else {"affinity_weight": affinity_weight}
    app, close = await start_app(settings_factory(rank=rank))
    try:
        await app.client.put("/items/a", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
        await app.client.put("/items/b", json={"vector": [0, 1, 0, 0, 0, 0, 0, 0]})
        likes = [{"user_id": "fan", "item_id": "b", "type": "like"}] * 20
        await app.client.post("/feedback", json={"events": likes})
        await app.idle()
        # "fan" is a regular user (ε at most .1); over 40 rankings b tops the greedy order
        # with the taste: b is second of ten in the (unscored) list, a fusion of 0.9
        # against a's 1 (rank percentiles), and 0.5 · cosine 1 outweighs the difference
        others = [{"item_id": f"o{n}"} for n in range(8)]
        candidates = [{"item_id": "a"}, {"item_id": "b"}, *others]
        tops = []
        for _ in range(40):
            r = await app.client.post("/users/fan/rank", json={"candidates": candidates})
            body = r.json()
            greedy = [x for x in body["ranking"] if not x["explored"]]
            if body["ranking"][0]["explored"]:
                continue
            tops.append(greedy[0]["item_id"])
        assert tops and set(tops) == {top}
    finally:
        await close()


async def test_an_unknown_candidate_algorithm_is_422(app: Running) -> None:
    """Issue 16: one rule for algorithm names, as for reports and overrides."""
    candidates = [{"item_id": "i", "algorithm": "popularity"}, {"item_id": "j", "algorithm": "x"}]
    r = await app.client.post("/users/u/rank", json={"candidates": candidates})
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["body", "candidates", 1, "algorithm"]
    assert detail["msg"].startswith("unknown algorithm 'x'; known: ['collaborative'")
    r = await app.client.post("/algorithms/x/enable")
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"] == detail["msg"]


async def test_too_many_candidates_is_422(settings_factory: Callable[..., Settings]) -> None:
    app, close = await start_app(settings_factory(rank={"max_candidates": 2}))
    try:
        r = await app.client.post(
            "/users/u/rank", json={"candidates": [{"item_id": str(i)} for i in range(3)]}
        )
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "candidates"]
    finally:
        await close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_counts_and_status_survive_a_restart(settings: Settings) -> None:
    app, close = await start_app(settings)
    report = {"algorithm": "trending", "segment": "new", "impressions": 5_000, "clicks": 3}
    await app.client.post("/algorithm-performance", json=report)
    await weights(app)
    await app.client.post("/algorithms/popularity/disable", json={"segments": ["power"]})
    await close()
    app, close = await start_app(settings)
    try:
        rows = (await app.client.get("/algorithms")).json()["algorithms"]
        assert stats(rows, "new", "trending")["impressions"] == 5_000
        assert not stats(rows, "new", "trending")["enabled"]
        assert not stats(rows, "power", "popularity")["enabled"]
    finally:
        await close()
