"""Experiments end to end through the API: create, start, expose, send events, read results."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from growthbook.core import chooseVariation, gbhash, getBucketRanges, inNamespace

from recloop.config import Settings
from tests.conftest import Running, start_app

EXPERIMENT = {
    "experiment_id": "exp-ctr",
    "name": "New ranking blend",
    "variants": [
        {"key": "control", "weight": 0.5},
        {
            "key": "treatment",
            "weight": 0.5,
            "config": {"epsilon": 0.0, "weights": {"popularity": 1.0}},
        },
    ],
    "metrics": [
        {"name": "purchased", "type": "binomial", "event": "purchase"},
        {"name": "clicks", "type": "continuous", "event": "click", "aggregate": "count"},
        {"name": "ctr", "type": "ratio", "numerator": "click", "denominator": "impression"},
    ],
}


def _treated(config: dict) -> dict:
    return {"key": "b", "weight": 0.5, "config": config}


@pytest.fixture
async def app(settings_factory: Callable[..., Settings]):  # type: ignore[no-untyped-def]
    running, close = await start_app(settings_factory())
    yield running
    await close()


async def create_and_start(app: Running, body: dict = EXPERIMENT) -> None:
    r = await app.client.post("/experiments", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "draft"
    r = await app.client.post(f"/experiments/{body['experiment_id']}/start")
    assert r.json()["status"] == "running"


async def test_lifecycle_and_reshuffle_protection(app: Running) -> None:
    await create_and_start(app)
    # State refusals are 409s naming the state; an invalid body stays a 422.
    r = await app.client.post("/experiments/exp-ctr/start")
    assert r.status_code == 409, r.text
    assert r.json() == {"detail": "cannot start an experiment that is running", "state": "running"}
    r = await app.client.post("/experiments", json=EXPERIMENT)
    assert (r.status_code, r.json()["state"]) == (409, "exists"), r.text
    r = await app.client.patch("/experiments/exp-ctr", json={"seed": "other"})
    assert (r.status_code, r.json()["state"]) == (409, "running"), r.text
    assert "cannot change seed" in r.json()["detail"]
    r = await app.client.patch("/experiments/exp-ctr", json={"traffic_allocation": 2})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "traffic_allocation"]
    ramp = await app.client.patch("/experiments/exp-ctr", json={"traffic_allocation": 0.5})
    assert ramp.json()["traffic_allocation"] == 0.5
    assert (await app.client.post("/experiments/exp-ctr/stop")).json()["status"] == "stopped"
    r = await app.client.post("/experiments/exp-ctr/stop")
    assert (r.status_code, r.json()["state"]) == (409, "stopped"), r.text
    assert (await app.client.get("/experiments/exp-ctr")).json()["status"] == "stopped"
    listed = (await app.client.get("/experiments")).json()
    assert [e["experiment_id"] for e in listed] == ["exp-ctr"]
    assert (await app.client.get("/experiments/nope")).status_code == 404


async def test_a_null_in_a_patch_is_refused_naming_the_field(app: Running) -> None:
    # schemathesis' stateful run found PATCH {"alpha": null} answering 500
    r = await app.client.post("/experiments", json=EXPERIMENT)
    assert r.status_code == 201, r.text
    before = r.json()
    for field in ("alpha", "name", "variants", "traffic_allocation", "seed", "metrics",
                  "guardrails", "hash_version", "sequential"):  # fmt: skip
        r = await app.client.patch("/experiments/exp-ctr", json={field: None})
        assert r.status_code == 422, (field, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", field]
    assert (await app.client.get("/experiments/exp-ctr")).json() == before
    # the hypothesis has a null: cleared
    r = await app.client.patch("/experiments/exp-ctr", json={"hypothesis": "faster"})
    assert r.json()["hypothesis"] == "faster"
    r = await app.client.patch("/experiments/exp-ctr", json={"hypothesis": None})
    assert r.status_code == 200, r.text
    assert r.json()["hypothesis"] is None


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"variants": [{"key": "a", "weight": 1.0}]}, ["body", "variants"]),
        (
            {"variants": [{"key": "a", "weight": 0.5}, {"key": "a", "weight": 0.5}]},
            ["body", "variants"],
        ),
        (
            {"variants": [{"key": "a", "weight": 0.6}, {"key": "b", "weight": 0.6}]},
            ["body", "variants"],
        ),
        ({"metrics": [{"name": "m", "type": "binomial"}]}, ["body", "metrics", 0, "event"]),
        ({"traffic_allocation": 1.5}, ["body", "traffic_allocation"]),
        (
            {"variants": [{"key": "a", "weight": 0.5}, _treated({"weights": {"deep": 1.0}})]},
            ["body", "variants", 1, "config", "weights", "deep"],
        ),
        (
            {"variants": [{"key": "a", "weight": 0.5}, _treated({"weights": {"trending": 0.0}})]},
            ["body", "variants", 1, "config", "weights"],
        ),
        (
            {"variants": [{"key": "a", "weight": 0.5}, _treated({"weights": {"trending": -1}})]},
            ["body", "variants", 1, "config", "weights", "trending"],
        ),
        (
            {
                "variants": [
                    {"key": "a", "weight": 0.5},
                    _treated(
                        {"weights": {"trending": 0.7, "popularity": 0.4}, "mode": "override_some"}
                    ),
                ]
            },
            ["body", "variants", 1, "config", "weights"],
        ),
        (
            {"variants": [{"key": "a", "weight": 0.5}, _treated({"mode": "override_some"})]},
            ["body", "variants", 1, "config", "mode"],
        ),
        (
            {"variants": [{"key": "a", "weight": 0.5}, _treated({"mode": "replace"})]},
            ["body", "variants", 1, "config", "mode"],
        ),
        (
            {"variants": [{"key": "a", "weight": 0.5}, _treated({"epsilon": 1.5})]},
            ["body", "variants", 1, "config", "epsilon"],
        ),
        (
            {"variants": [{"key": "a", "weight": 0.5}, _treated({"model_slot": "red"})]},
            ["body", "variants", 1, "config", "model_slot"],
        ),
    ],
)
async def test_bad_definitions_are_422_naming_the_field(
    app: Running, change: dict, loc: list
) -> None:
    r = await app.client.post("/experiments", json={**EXPERIMENT, **change})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][: len(loc)] == loc
    assert (await app.client.get("/experiments")).json() == []


@pytest.mark.parametrize(
    ("metric", "loc", "kind"),
    [
        ({"name": "m", "type": "binomial"}, ["body", "metrics", 0, "event"], "missing"),
        (
            {"name": "m", "type": "ratio", "numerator": "click"},
            ["body", "metrics", 0, "denominator"],
            "missing",
        ),
        (
            {"name": "m", "type": "ratio", "numerator": "click", "denominator": "view",
             "event": "click"},
            ["body", "metrics", 0, "event"],
            "extra_forbidden",
        ),
        (
            {"name": "m", "type": "binomial", "event": "click", "aggregate": "sum"},
            ["body", "metrics", 0, "aggregate"],
            "extra_forbidden",
        ),
        ({"name": "m", "event": "click"}, ["body", "metrics", 0, "type"], "union_tag_not_found"),
        (
            {"name": "m", "type": "mean", "event": "click"},
            ["body", "metrics", 0, "type"],
            "union_tag_invalid",
        ),
    ],
)  # fmt: skip
async def test_a_metric_takes_the_fields_of_its_type_and_the_422_names_the_field(
    app: Running, metric: dict, loc: list, kind: str
) -> None:
    r = await app.client.post("/experiments", json={**EXPERIMENT, "metrics": [metric]})
    assert r.status_code == 422, r.text
    assert [(e["loc"], e["type"]) for e in r.json()["detail"]] == [(loc, kind)]
    assert (await app.client.get("/experiments")).json() == []


async def test_the_document_states_each_metric_type_s_fields(app: Running) -> None:
    document = (await app.client.get(str(app.client.base_url.join("/openapi.json")))).json()
    schemas = document["components"]["schemas"]
    metrics = schemas["ExperimentIn"]["properties"]["metrics"]["items"]
    mapping = metrics["discriminator"]["mapping"]
    assert metrics["discriminator"]["propertyName"] == "type"
    fields = {
        kind: (
            set(schemas[ref.rsplit("/", 1)[1]]["properties"]),
            set(schemas[ref.rsplit("/", 1)[1]]["required"]),
        )
        for kind, ref in mapping.items()
    }
    common = {"name", "type", "higher_is_better", "margin"}
    assert fields == {
        "binomial": (common | {"event"}, {"name", "type", "event"}),
        "continuous": (common | {"event", "aggregate"}, {"name", "type", "event"}),
        "ratio": (
            common | {"numerator", "denominator"},
            {"name", "type", "numerator", "denominator"},
        ),
    }
    # what GET returns is a valid definition again: metrics round-trip
    await create_and_start(app)
    current = (await app.client.get("/experiments/exp-ctr")).json()
    r = await app.client.patch("/experiments/exp-ctr", json={"metrics": current["metrics"]})
    assert r.status_code == 200, r.text


async def test_assignment_matches_growthbook(app: Running) -> None:
    await create_and_start(app)
    ranges = getBucketRanges(2, 1.0, [0.5, 0.5])
    rng = random.Random(5)
    for _ in range(50):
        user = f"user-{rng.randrange(10**9)}"
        body = (await app.client.get(f"/experiments/exp-ctr/assignment/{user}")).json()
        expected = chooseVariation(gbhash("exp-ctr", user, 2), ranges)
        assert body["variant"] == ["control", "treatment"][expected]
        assert body["in_experiment"]


async def test_strategy_applies_the_variants_overrides(app: Running) -> None:
    await create_and_start(app)
    seen = set()
    for n in range(40):
        body = (await app.client.get(f"/users/s{n}/strategy")).json()
        (membership,) = body["experiments"]
        seen.add(membership["variant"])
        if membership["variant"] == "treatment":
            assert body["exploration"]["epsilon"] == 0.0
            # override_all: the omitted algorithms get 0, every one of them named
            assert body["weights"] == {
                "collaborative": 0.0,
                "content_based": 0.0,
                "popularity": 1.0,
                "trending": 0.0,
            }
        else:
            assert body["exploration"]["epsilon"] == 0.3
    assert seen == {"control", "treatment"}
    results = (await app.client.get("/experiments/exp-ctr/results")).json()
    assert sum(results["srm"]["observed"].values()) == 40
    assert any("retraining pool" in w for w in results["warnings"])


async def test_results_follow_events_after_exposure_only(app: Running) -> None:
    await create_and_start(app)
    await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
    variants: dict[str, str] = {}
    for n in range(60):
        user = f"u{n}"
        # an event before exposure never counts
        await app.client.post("/feedback", json={"user_id": user, "item_id": "i", "type": "click"})
        await app.idle(flush=True)
        body = (await app.client.get(f"/experiments/exp-ctr/assignment/{user}")).json()
        variants[user] = body["variant"]
    events = []
    for user, variant in variants.items():
        clicks = 3 if variant == "treatment" else 1
        events += [{"user_id": user, "item_id": "i", "type": "impression"}] * 4
        events += [{"user_id": user, "item_id": "i", "type": "click"}] * clicks
        if variant == "treatment" and int(user[1:]) % 2 == 0:
            events.append({"user_id": user, "item_id": "i", "type": "purchase"})
    for start in range(0, len(events), 500):
        r = await app.client.post("/feedback", json={"events": events[start : start + 500]})
        assert r.json()["rejected"] == 0
    await app.idle(flush=True)

    results = (await app.client.get("/experiments/exp-ctr/results")).json()
    by_name = {m["name"]: m for m in results["metrics"]}
    n_treat = sum(1 for v in variants.values() if v == "treatment")
    n_ctrl = len(variants) - n_treat
    clicks = {v["key"]: v for v in by_name["clicks"]["variants"]}
    assert clicks["control"]["users"] == n_ctrl and clicks["treatment"]["users"] == n_treat
    assert clicks["control"]["mean"] == pytest.approx(1.0)
    assert clicks["treatment"]["mean"] == pytest.approx(3.0)
    (cmp,) = by_name["clicks"]["comparisons"]
    assert cmp["absolute_effect"] == pytest.approx(2.0)
    ctr = {v["key"]: v for v in by_name["ctr"]["variants"]}
    assert ctr["treatment"]["mean"] == pytest.approx(0.75)
    assert ctr["control"]["mean"] == pytest.approx(0.25)
    purchased = {v["key"]: v for v in by_name["purchased"]["variants"]}
    assert purchased["control"]["conversions"] == 0
    assert purchased["treatment"]["conversions"] == sum(
        1 for u, v in variants.items() if v == "treatment" and int(u[1:]) % 2 == 0
    )
    for metric in results["metrics"]:
        for c in metric["comparisons"]:
            assert c["p_value_adjusted"] is None or c["p_value_adjusted"] >= c["p_value"]
    assert results["srm"]["flagged"] is False


async def test_empty_experiment_results_have_reasons_not_errors(app: Running) -> None:
    await create_and_start(app)
    r = await app.client.get("/experiments/exp-ctr/results")
    assert r.status_code == 200
    for metric in r.json()["metrics"]:
        for c in metric["comparisons"]:
            assert c["reason"] is not None
            assert c["significant"] is False


async def test_power_calculation(app: Running) -> None:
    r = await app.client.post(
        "/experiments/power", json={"baseline": 0.1, "mde": 0.1, "alpha": 0.05, "power": 0.8}
    )
    assert r.status_code == 200
    n = r.json()["users_per_variant"]
    assert 10_000 < n < 20_000  # ~14,750 for 10% -> 11% at 80% power
    bad = await app.client.post(
        "/experiments/power", json={"baseline": 1.0, "mde": 0.1, "metric": "continuous"}
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "stddev"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_exposures_and_statistics_survive_a_restart(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    app, close = await start_app(settings)
    await create_and_start(app)
    await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
    for n in range(10):
        await app.client.get(f"/experiments/exp-ctr/assignment/r{n}")
    events = [{"user_id": f"r{n}", "item_id": "i", "type": "click"} for n in range(10)]
    await app.client.post("/feedback", json={"events": events})
    await app.idle(flush=True)
    before = (await app.client.get("/experiments/exp-ctr/results")).json()
    await close()
    app, close = await start_app(settings)
    try:
        # A restart reads again the covariates that may not have been read (every one
        # still 0), in the background: once read, the results are those before.
        assert app.container.experiments.covariates_due("exp-ctr") in (0, 10)
        await app.container.experiments.settle_covariates()
        after = (await app.client.get("/experiments/exp-ctr/results")).json()
        assert after == before
    finally:
        await close()


def _with_treatment(config: dict, experiment_id: str = "exp-w") -> dict:
    return {
        **EXPERIMENT,
        "experiment_id": experiment_id,
        "variants": [
            {"key": "control", "weight": 0.5},
            {"key": "treatment", "weight": 0.5, "config": config},
        ],
    }


async def _users_in(app: Running, experiment_id: str, variant: str, n: int) -> list[str]:
    found = []
    for i in range(400):
        body = (await app.client.get(f"/users/u{i}/strategy?expose=false")).json()
        if {"experiment_id": experiment_id, "variant": variant} in body["experiments"]:
            found.append(f"u{i}")
            if len(found) == n:
                return found
    raise AssertionError(f"fewer than {n} users in {variant}")


async def test_a_weight_of_zero_switches_an_algorithm_off_and_omitted_ones_are_not_boosted(
    app: Running,
) -> None:
    """override_all: ``trending`` at 0 and ``collaborative`` omitted both weigh 0 in rank;
    before, an omitted algorithm got the mean weight (and 0 was refused)."""
    config = {"epsilon": 0.0, "weights": {"popularity": 1.0, "trending": 0.0}}
    r = await app.client.post("/experiments", json=_with_treatment(config))
    assert r.status_code == 201, r.text
    stored = r.json()["variants"][1]["config"]["weights"]
    assert stored == {
        "popularity": 1.0,
        "trending": 0.0,
        "collaborative": 0.0,
        "content_based": 0.0,
    }
    await app.client.post("/experiments/exp-w/start")
    (user,) = await _users_in(app, "exp-w", "treatment", 1)
    candidates = [
        {"item_id": "c1", "algorithm": "collaborative", "score": 9.0},
        {"item_id": "t1", "algorithm": "trending", "score": 9.0},
        {"item_id": "p1", "algorithm": "popularity", "score": 1.0},
        {"item_id": "p2", "algorithm": "popularity", "score": 0.5},
    ]
    r = await app.client.post(f"/users/{user}/rank", json={"candidates": candidates})
    assert r.status_code == 200, r.text
    ranking = r.json()["ranking"]
    scores = {row["item_id"]: row["score"] for row in ranking}
    assert [row["item_id"] for row in ranking[:2]] == ["p1", "p2"]
    assert scores["c1"] == 0.0
    assert scores["t1"] == 0.0
    assert scores["p2"] > 0.0


async def test_override_some_keeps_the_segments_weights_for_the_rest(app: Running) -> None:
    config = {"weights": {"popularity": 0.6}, "mode": "override_some"}
    r = await app.client.post("/experiments", json=_with_treatment(config))
    assert r.status_code == 201, r.text
    assert r.json()["variants"][1]["config"] == config  # shares are stored as given
    await app.client.post("/experiments/exp-w/start")
    (user,) = await _users_in(app, "exp-w", "treatment", 1)
    weights = (await app.client.get(f"/users/{user}/strategy")).json()["weights"]
    assert weights["popularity"] == pytest.approx(0.6)
    assert sum(weights.values()) == pytest.approx(1.0)
    others = {a: w for a, w in weights.items() if a != "popularity"}
    assert set(others) == {"collaborative", "content_based", "trending"}
    assert all(w > 0 for w in others.values())
    assert sum(others.values()) == pytest.approx(0.4)


async def test_an_epsilon_of_zero_means_no_exploration_in_rank(app: Running) -> None:
    r = await app.client.post("/experiments", json=_with_treatment({"epsilon": 0.0}))
    assert r.status_code == 201, r.text
    await app.client.post("/experiments/exp-w/start")
    users = await _users_in(app, "exp-w", "treatment", 5)
    candidates = [
        {"item_id": f"i{j}", "algorithm": "popularity", "score": float(10 - j)} for j in range(8)
    ]
    for user in users:
        body = (
            await app.client.post(f"/users/{user}/rank", json={"candidates": candidates})
        ).json()
        assert body["epsilon"] == 0.0
        assert [row["item_id"] for row in body["ranking"]] == [f"i{j}" for j in range(8)]
        assert all(row["propensity"] == 1.0 and not row["explored"] for row in body["ranking"])


async def test_strategy_with_expose_false_looks_without_recording(app: Running) -> None:
    await create_and_start(app)
    for _ in range(2):
        looked = (await app.client.get("/users/look/strategy?expose=false")).json()
        (membership,) = looked["experiments"]
    results = (await app.client.get("/experiments/exp-ctr/results")).json()
    assert sum(results["srm"]["observed"].values()) == 0
    served = (await app.client.get("/users/look/strategy")).json()
    assert served["experiments"] == [membership]
    assert served["weights"] == looked["weights"] or membership["variant"] == "control"
    results = (await app.client.get("/experiments/exp-ctr/results")).json()
    assert results["srm"]["observed"] == {
        "control": int(membership["variant"] == "control"),
        "treatment": int(membership["variant"] == "treatment"),
    }
    r = await app.client.get("/users/look/strategy?expose=maybe")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "expose"]


async def test_starting_an_experiment_whose_overrides_collide_is_refused_naming_it(
    app: Running,
) -> None:
    await create_and_start(app)  # exp-ctr overrides epsilon and weights, no namespace
    clash = _with_treatment({"epsilon": 0.5}, "exp-eps")
    assert (await app.client.post("/experiments", json=clash)).status_code == 201
    r = await app.client.post("/experiments/exp-eps/start")
    assert r.status_code == 409
    refusal = r.json()
    assert refusal["state"] == "running experiment 'exp-ctr'"
    assert "exp-ctr" in refusal["detail"] and "epsilon" in refusal["detail"]
    assert (await app.client.get("/experiments/exp-eps")).json()["status"] == "draft"
    # An experiment overriding nothing the running one does may run beside it.
    quiet = _with_treatment({"model_slot": "green"}, "exp-slot")
    assert (await app.client.post("/experiments", json=quiet)).status_code == 201
    assert (await app.client.post("/experiments/exp-slot/start")).status_code == 200


async def test_disjoint_ranges_of_one_namespace_run_side_by_side_as_growthbook_splits(
    app: Running,
) -> None:
    left = {
        **_with_treatment({"epsilon": 0.0}, "left"),
        "namespace": {"name": "ns", "range": [0, 0.3]},
    }
    right = {
        **_with_treatment({"epsilon": 0.5}, "right"),
        "namespace": {"name": "ns", "range": [0.3, 1]},
    }
    over = {
        **_with_treatment({"epsilon": 0.9}, "over"),
        "namespace": {"name": "ns", "range": [0.2, 0.4]},
    }
    for body in (left, right):
        await create_and_start(app, body)
    assert (await app.client.get("/experiments/left")).json()["namespace"] == {
        "name": "ns",
        "range": [0.0, 0.3],
    }
    assert (await app.client.post("/experiments", json=over)).status_code == 201
    r = await app.client.post("/experiments/over/start")
    assert r.status_code == 409
    assert "'left'" in r.json()["detail"] and r.json()["state"] == "running experiment 'left'"
    r = await app.client.patch(
        "/experiments/left", json={"namespace": {"name": "ns", "range": [0, 1]}}
    )
    assert (r.status_code, r.json()["state"]) == (409, "running")
    assert "cannot change namespace" in r.json()["detail"]
    for n in range(60):
        user = f"ns-user-{n}"
        body = (await app.client.get(f"/users/{user}/strategy")).json()
        (membership,) = body["experiments"]
        expected = "left" if inNamespace(user, ("ns", 0.0, 0.3)) else "right"
        assert membership["experiment_id"] == expected
    results = [
        (await app.client.get(f"/experiments/{e}/results")).json() for e in ("left", "right")
    ]
    assert sum(sum(r["srm"]["observed"].values()) for r in results) == 60


@pytest.mark.parametrize(
    ("namespace", "loc"),
    [
        ({"name": "ns", "range": [0.5, 0.5]}, ["body", "namespace", "range"]),
        ({"name": "ns", "range": [0.6, 0.2]}, ["body", "namespace", "range"]),
        ({"name": "ns", "range": [0, 1.5]}, ["body", "namespace", "range", 1]),
        ({"name": "", "range": [0, 1]}, ["body", "namespace", "name"]),
    ],
)
async def test_bad_namespaces_are_422_naming_the_field(
    app: Running, namespace: dict, loc: list
) -> None:
    r = await app.client.post("/experiments", json={**EXPERIMENT, "namespace": namespace})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][: len(loc)] == loc


async def test_results_count_buffered_events_and_mark_metrics_provisional(app: Running) -> None:
    """Clicks and impressions wait for the implicit flush (300 s): before it, the results
    say how many are waiting and which metrics will move; after it, nothing is."""
    await create_and_start(app)
    users = [f"b{n}" for n in range(6)]
    for user in users:
        await app.client.get(f"/experiments/exp-ctr/assignment/{user}")
    events = [
        {"user_id": u, "item_id": "i", "type": t} for u in users for t in ("impression", "click")
    ]
    events.append({"user_id": "stranger", "item_id": "i", "type": "click"})  # not exposed
    assert (await app.client.post("/feedback", json={"events": events})).json()["rejected"] == 0
    await app.idle(flush=False)
    results = (await app.client.get("/experiments/exp-ctr/results")).json()
    assert results["buffered"] == {"events": 12, "complete": True, "as_of": None}
    provisional = {m["name"]: m["provisional"] for m in results["metrics"]}
    assert provisional == {"purchased": False, "clicks": True, "ctr": True}
    ctr = next(m for m in results["metrics"] if m["name"] == "ctr")
    assert ctr["comparisons"][0]["reason"] is not None  # nothing applied yet
    assert any("not applied yet" in w for w in results["warnings"])

    await app.idle(flush=True)
    await app.container.processor.checkpoint()
    results = (await app.client.get("/experiments/exp-ctr/results")).json()
    assert results["buffered"] == {"events": 0, "complete": True, "as_of": None}
    assert not any(m["provisional"] for m in results["metrics"])
    clicks = next(m for m in results["metrics"] if m["name"] == "clicks")
    assert sum(v["users"] for v in clicks["variants"]) == len(users)


async def test_a_rollout_step_due_is_taken_with_the_next_request(app: Running) -> None:
    body = {
        **EXPERIMENT,
        "traffic_allocation": 0.01,
        "rollout": [{"at": 1.0, "traffic_allocation": 0.05}, {"at": 4e9, "traffic_allocation": 1}],
        "guardrails": [
            {"name": "skips", "type": "binomial", "event": "skip", "higher_is_better": False}
        ],
    }
    await create_and_start(app, body)
    await app.client.get("/users/r1/strategy")
    exp = (await app.client.get("/experiments/exp-ctr")).json()
    assert (exp["traffic_allocation"], exp["rollout_step"], exp["rollout_halted"]) == (
        0.05,
        1,
        None,
    )
    assert exp["guardrails"][0]["higher_is_better"] is False
    bad = {**body, "experiment_id": "bad", "rollout": [{"at": 1.0, "traffic_allocation": 0.001}]}
    r = await app.client.post("/experiments", json=bad)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "rollout", 0, "traffic_allocation"]
