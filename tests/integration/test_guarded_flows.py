"""The API's main flows with the guard on (``spam.enabled``, the shipped default): genuine
users are still learnt from — preferences (at the guard's reliability), the optimizer's
attributed clicks, experiments' metrics — while a flood in the same stream is blocked.

The other integration suites turn the guard off (tests/conftest.py's ``make_settings``)
to check the exact EMA arithmetic; this one runs the same flows with it on.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from recloop.config import Settings
from tests.conftest import Running, start_app
from tests.integration.test_experiments_api import EXPERIMENT

ITEMS = {f"i{n}": [1.0 if k == n else 0.0 for k in range(8)] for n in range(8)}
GENUINE = [f"g{n}" for n in range(6)]


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def app(settings_factory: Callable[..., Settings]) -> AsyncIterator[Running]:
    settings = settings_factory(
        spam={"enabled": True},
        rate_limits={"enabled": False},
        bandit={"cache_seconds": 0.0, "seed": 7},
        exploration={"seed": 3},
    )
    assert settings.spam.enabled
    running, close = await start_app(settings)
    for item, vector in ITEMS.items():
        r = await running.client.put(f"/items/{item}", json={"vector": vector})
        assert r.status_code == 200, r.text
    yield running
    await close()


def stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"


def event(user: str, item: str, kind: str, at: float, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "item_id": item, "type": kind, "timestamp": stamp(at), **extra}


async def test_genuine_users_learn_at_the_guards_reliability_beside_a_blocked_flood(
    app: Running,
) -> None:
    rng = random.Random(1)
    start = time.time() - 6 * 3600
    events = []
    for n, user in enumerate(GENUINE):
        at = start + n
        for _ in range(6):  # a human pace: minutes apart, one favourite item
            at += rng.uniform(60.0, 900.0)
            events.append(event(user, f"i{n}", "like", at))
    flood = [event("bot", "i7", "like", start + k * 0.01) for k in range(40)]
    body = (await app.client.post("/feedback", json={"events": events + flood})).json()
    assert body["accepted"] == len(events) + len(flood)
    await app.idle()

    assert (await app.client.get("/users/bot/reliability")).json()["status"] == "blocked"
    refused = await app.client.post("/feedback", json=event("bot", "i7", "like", start + 9))
    assert refused.status_code == 403
    for n, user in enumerate(GENUINE):
        report = (await app.client.get(f"/users/{user}/reliability")).json()
        assert report["status"] == "trusted", report
        prefs = (await app.client.get(f"/users/{user}/preferences")).json()
        assert (prefs["events_applied"], prefs["events_held"]) == (6, 0)
        # Six likes of one unit vector, each an EMA step of base_alpha scaled by the
        # guard's reliability: the component along it is 1 - (1 - alpha)^6.
        reliability = app.container.guard.reliability(user)
        assert reliability is not None and 0 < reliability <= 100
        alpha = app.container.settings.feedback.base_alpha * reliability / 100
        assert prefs["vector"][n] == pytest.approx(1 - (1 - alpha) ** 6, rel=1e-9)
        assert sum(abs(x) for k, x in enumerate(prefs["vector"]) if k != n) == 0


async def test_the_optimizer_counts_genuine_users_attributed_clicks(app: Running) -> None:
    rng = random.Random(2)
    algorithm_of = dict(zip(ITEMS, ["popularity", "trending"] * 4, strict=True))
    clicks = []
    for n in range(24):
        user = GENUINE[n % len(GENUINE)]
        body = {
            "candidates": [{"item_id": i, "algorithm": a} for i, a in algorithm_of.items()],
            "k": 4,
        }
        r = await app.client.post(f"/users/{user}/rank", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        shown = answer["ranking"][0]["item_id"]
        if rng.random() < 0.5:
            attribution = {
                "impression_id": answer["impression_id"],
                "algorithm": algorithm_of[shown],
            }
            clicks.append(event(user, shown, "click", time.time() - 1, attribution=attribution))
    assert clicks
    r = await app.client.post("/feedback", json={"events": clicks})
    assert r.json()["accepted"] == len(clicks)
    await app.idle(flush=True)
    await app.container.processor.checkpoint()
    rows = (await app.client.get("/algorithms")).json()["algorithms"]
    credited = sum(row["clicks"] for row in rows)
    assert math.isclose(credited, len(clicks)), rows  # every genuine click credited
    assert all(
        app.container.guard.reliability(u) is not None for u in {c["user_id"] for c in clicks}
    )


async def test_experiments_measure_genuine_users(app: Running) -> None:
    assert (await app.client.post("/experiments", json=EXPERIMENT)).status_code == 201
    assert (await app.client.post("/experiments/exp-ctr/start")).status_code == 200
    variants: dict[str, str] = {}
    events = []
    for n in range(30):
        user = f"x{n}"
        body = (await app.client.get(f"/experiments/exp-ctr/assignment/{user}")).json()
        variants[user] = body["variant"]
        clicks = 3 if body["variant"] == "treatment" else 1
        at = time.time() + n * 4.0  # after the exposure (within feedback.max_future_seconds)
        for k in range(4):
            events.append(event(user, "i0", "impression", at + k * 11.0))
        for k in range(clicks):
            events.append(event(user, "i0", "click", at + 50.0 + k * 13.0))
    r = await app.client.post("/feedback", json={"events": events})
    assert r.json()["accepted"] == len(events)
    await app.idle(flush=True)
    results = (await app.client.get("/experiments/exp-ctr/results")).json()
    by_name = {m["name"]: m for m in results["metrics"]}
    clicks_by = {v["key"]: v for v in by_name["clicks"]["variants"]}
    n_treat = sum(1 for v in variants.values() if v == "treatment")
    assert clicks_by["treatment"]["users"] == n_treat
    assert clicks_by["control"]["users"] == len(variants) - n_treat
    assert clicks_by["treatment"]["mean"] == pytest.approx(3.0)
    assert clicks_by["control"]["mean"] == pytest.approx(1.0)
