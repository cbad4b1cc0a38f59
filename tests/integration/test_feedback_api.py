"""The feedback and preferences endpoints through the ASGI app, over memory and SQLite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recloop.config import Settings
from tests.conftest import Running, start_app

DIM = 8


def unit(i: int) -> list[float]:
    v = [0.0] * DIM
    v[i] = 1.0
    return v


async def put_item(app: Running, item_id: str, vector: list[float]) -> None:
    r = await app.client.put(f"/items/{item_id}", json={"vector": vector})
    assert r.status_code == 200, r.text


async def prefs(app: Running, user_id: str) -> dict:
    r = await app.client.get(f"/users/{user_id}/preferences")
    assert r.status_code == 200, r.text
    return r.json()


async def test_like_moves_vector_by_base_alpha(running: Running) -> None:
    await put_item(running, "i1", unit(0))
    r = await running.client.post(
        "/feedback", json={"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "like"}
    )
    assert r.status_code == 202
    assert r.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": 0,
        "rate_limited": 0,
        "blocked": 0,
        "results": [{"event_id": "e1", "status": "accepted"}],
    }
    await running.idle()
    p = await prefs(running, "u1")
    assert p["vector"] == pytest.approx([0.1, 0, 0, 0, 0, 0, 0, 0])
    assert (p["events_applied"], p["events_skipped"], p["interactions"]) == (1, 0, 1)
    assert p["dim"] == DIM


async def test_ratings_follow_the_ema_rule(running: Running) -> None:
    await put_item(running, "a", unit(0))
    await put_item(running, "b", unit(1))
    events = [
        {"user_id": "u", "item_id": "a", "type": "rating", "value": 5},  # signal +1 -> alpha .1
        {"user_id": "u", "item_id": "b", "type": "rating", "value": 1},  # signal -1 -> alpha .1
        {"user_id": "u", "item_id": "a", "type": "rating", "value": 4},  # +.5 -> alpha .05
    ]
    r = await running.client.post("/feedback", json={"events": events})
    assert r.json()["accepted"] == 3
    await running.idle()
    p = np.zeros(DIM)
    for v, s, a in ((unit(0), 1, 0.1), (unit(1), -1, 0.1), (unit(0), 1, 0.05)):
        p = a * s * np.array(v) + (1 - a) * p
    assert (await prefs(running, "u"))["vector"] == pytest.approx(p.tolist(), abs=1e-12)


async def test_duplicate_event_id_is_applied_once(running: Running) -> None:
    await put_item(running, "i1", unit(2))
    event = {"event_id": "dup", "user_id": "u1", "item_id": "i1", "type": "like"}
    first = await running.client.post("/feedback", json=event)
    again = await running.client.post("/feedback", json={"events": [event, event]})
    assert first.json()["accepted"] == 1
    assert again.json()["duplicates"] == 2
    await running.idle()
    assert (await prefs(running, "u1"))["events_applied"] == 1


async def test_one_bad_event_in_a_batch_is_rejected_alone(running: Running) -> None:
    await put_item(running, "i1", unit(0))
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    events = [
        {"user_id": "u1", "item_id": "i1", "type": "like"},
        {"user_id": "u1", "item_id": "i1", "type": "rating", "value": 7},
        {"user_id": "u1", "item_id": "i1", "type": "teleport"},
        {"user_id": "", "item_id": "i1", "type": "like"},
        {"user_id": "u1", "item_id": "i1", "type": "like", "timestamp": future},
        {"user_id": "u1", "item_id": "i1", "type": "dwell"},
        {"user_id": "u1", "item_id": "i1", "type": "click", "surprise": 1},
    ]
    body = (await running.client.post("/feedback", json={"events": events})).json()
    assert (body["accepted"], body["rejected"]) == (1, 6)
    fields = [r.get("error", {}).get("field") for r in body["results"]]
    assert fields == [None, "value", "type", "user_id", "timestamp", "value", "surprise"]
    await running.idle()
    assert (await prefs(running, "u1"))["events_applied"] == 1


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b"{not json", ["body"]),
        (b"[1, 2]", ["body"]),
        (b'{"user_id": "u", "type": "like"}', ["body", "item_id"]),
        (b'{"user_id": "u", "item_id": "i", "type": "rating", "value": 0}', ["body", "value"]),
        (b'{"events": []}', ["body", "events"]),
        (b'{"events": "x"}', ["body", "events"]),
        (b'{"events": [{}, 5]}', ["body", "events", 1]),
        # Issue 16: a type that takes no value refuses one; an algorithm must be configured.
        (b'{"user_id": "u", "item_id": "i", "type": "like", "value": -50}', ["body", "value"]),
        (b'{"user_id": "u", "item_id": "i", "type": "skip", "value": 0}', ["body", "value"]),
        (
            b'{"user_id": "u", "item_id": "i", "type": "click", "attribution": {"algorithm": "x"}}',
            ["body", "attribution", "algorithm"],
        ),
        (
            b'{"user_id": "u", "item_id": "i", "type": "view", "timestamp": -1e12}',
            ["body", "timestamp"],
        ),
    ],
)
async def test_malformed_body_is_422_naming_the_field(
    running: Running, body: bytes, loc: list[str]
) -> None:
    r = await running.client.post(
        "/feedback", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc
    assert await running.container.event_log.last_offset() == 0


async def test_values_and_algorithms_where_they_are_taken(running: Running) -> None:
    """The types that take a value (an amount, for experiment metrics) and a configured
    algorithm in attribution are accepted; in a batch the others are rejected alone."""
    events = [
        {"user_id": "u", "item_id": "i", "type": "purchase", "value": 19.99},
        {"user_id": "u", "item_id": "i", "type": "click", "value": 1.0},
        {"user_id": "u", "item_id": "i", "type": "like", "value": None},
        {
            "user_id": "u",
            "item_id": "i",
            "type": "like",
            "attribution": {"algorithm": "popularity"},
        },
        {"user_id": "u", "item_id": "i", "type": "dislike", "value": 1},
        {
            "user_id": "u",
            "item_id": "i",
            "type": "save",
            "attribution": {"algorithm": "Popularity"},
        },
    ]
    body = (await running.client.post("/feedback", json={"events": events})).json()
    assert [r["status"] for r in body["results"]] == ["accepted"] * 4 + ["rejected"] * 2
    assert body["results"][4]["error"]["field"] == "value"
    assert body["results"][5]["error"] == {
        "field": "attribution.algorithm",
        "message": "unknown algorithm 'Popularity'; known: "
        "['collaborative', 'content_based', 'popularity', 'trending']",
    }


async def test_credit_weights_name_known_algorithms_with_positive_weights(
    running: Running,
) -> None:
    """``attribution.credit_weights`` (inverse-propensity credit, issue 15): each key a
    configured algorithm, each weight in (0, 1e9]; the event alone is refused otherwise."""

    def event(weights: object) -> dict[str, object]:
        return {
            "user_id": "u",
            "item_id": "i",
            "type": "impression",
            "attribution": {"credit_weights": weights},
        }

    events = [
        event({"popularity": 1.25, "trending": 1.25}),
        event({"Popularity": 1.25}),
        event({"popularity": 0.0}),
        event({"popularity": 2e9}),
    ]
    body = (await running.client.post("/feedback", json={"events": events})).json()
    assert [r["status"] for r in body["results"]] == ["accepted"] + ["rejected"] * 3
    assert body["results"][1]["error"] == {
        "field": "attribution.credit_weights",
        "message": "unknown algorithm 'Popularity'; known: "
        "['collaborative', 'content_based', 'popularity', 'trending']",
    }
    assert body["results"][2]["error"]["field"].startswith("attribution.credit_weights")
    assert body["results"][3]["error"]["field"].startswith("attribution.credit_weights")


async def test_batch_over_the_limit_is_refused_whole(
    settings_factory: Callable[..., Settings],
) -> None:
    app, close = await start_app(settings_factory(feedback={"max_batch_events": 3}))
    try:
        events = [{"user_id": "u", "item_id": "i", "type": "view"}] * 4
        r = await app.client.post("/feedback", json={"events": events})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "events"]
        assert await app.container.event_log.last_offset() == 0
    finally:
        await close()


async def test_implicit_events_wait_for_the_flush_and_apply_as_one_update(
    running: Running,
) -> None:
    await put_item(running, "i1", unit(3))
    clicks = [{"user_id": "u1", "item_id": "i1", "type": "click"}] * 5
    impressions = [{"user_id": "u1", "item_id": "i1", "type": "impression"}] * 2
    r = await running.client.post("/feedback", json={"events": clicks + impressions})
    assert r.json()["accepted"] == 7
    await running.idle()
    assert running.container.processor.implicit_buffered == 7
    assert (await running.client.get("/users/u1/preferences")).status_code == 404
    await running.idle(flush=True)
    p = await prefs(running, "u1")
    # five clicks: signal 5 * 0.3 * 0.5 = 0.75 -> alpha 0.075, one step
    assert p["vector"][3] == pytest.approx(0.075)
    assert (p["events_applied"], p["interactions"], p["impressions"]) == (5, 5, 2)


async def test_implicit_buffer_flushes_on_its_timer(
    settings_factory: Callable[..., Settings],
) -> None:
    app, close = await start_app(settings_factory(feedback={"implicit_flush_seconds": 0.05}))
    try:
        await put_item(app, "i1", unit(0))
        await app.client.post("/feedback", json={"user_id": "u", "item_id": "i1", "type": "view"})
        await app.idle()
        from tests.conftest import eventually

        async def applied() -> bool:
            r = await app.client.get("/users/u/preferences")
            return r.status_code == 200 and r.json()["events_applied"] == 1

        await eventually(applied)
    finally:
        await close()


async def test_implicit_buffer_flushes_when_full(
    settings_factory: Callable[..., Settings],
) -> None:
    app, close = await start_app(settings_factory(feedback={"implicit_max_buffer": 10}))
    try:
        await put_item(app, "i1", unit(0))
        views = [{"user_id": "u", "item_id": "i1", "type": "view"}] * 10
        await app.client.post("/feedback", json={"events": views})
        from tests.conftest import eventually

        async def applied() -> bool:
            r = await app.client.get("/users/u/preferences")
            return r.status_code == 200 and r.json()["events_applied"] == 10

        await eventually(applied)
    finally:
        await close()


async def test_events_on_items_without_vector_are_kept_and_counted(running: Running) -> None:
    r = await running.client.post(
        "/feedback", json={"user_id": "u1", "item_id": "unknown", "type": "like"}
    )
    assert r.json()["accepted"] == 1
    await running.idle()
    p = await prefs(running, "u1")
    assert (p["events_applied"], p["events_skipped"], p["interactions"]) == (0, 1, 1)
    assert p["vector"] == [0.0] * DIM
    assert await running.container.event_log.last_offset() == 1


async def test_item_registered_later_is_used_by_later_events(running: Running) -> None:
    await running.client.post("/feedback", json={"user_id": "u", "item_id": "x", "type": "like"})
    await running.idle()
    await put_item(running, "x", unit(1))
    await running.client.post("/feedback", json={"user_id": "u", "item_id": "x", "type": "like"})
    await running.idle()
    p = await prefs(running, "u")
    assert (p["events_applied"], p["events_skipped"]) == (1, 1)
    assert p["vector"][1] == pytest.approx(0.1)


async def test_unknown_user_is_404_with_message(running: Running) -> None:
    r = await running.client.get("/users/nobody/preferences")
    assert r.status_code == 404
    assert "nobody" in r.json()["detail"]


async def test_health_reports_components(running: Running) -> None:
    r = await running.client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert set(body["components"]) == {"storage", "event_log", "workers", "rate_limits"}
    assert body["components"]["event_log"]["detail"]["lag"] == 0


async def test_many_users_concurrently_each_applied_exactly(running: Running) -> None:
    import asyncio

    await put_item(running, "i", unit(0))

    async def user(n: int) -> None:
        events = [{"user_id": f"u{n}", "item_id": "i", "type": "like"} for _ in range(n % 7 + 1)]
        r = await running.client.post("/feedback", json={"events": events})
        assert r.json()["accepted"] == len(events)

    await asyncio.gather(*(user(n) for n in range(60)))
    await running.idle()
    for n in range(60):
        assert (await prefs(running, f"u{n}"))["events_applied"] == n % 7 + 1
