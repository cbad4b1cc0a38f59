"""The id rule (core.ids, issue #16): ids that cannot be stored or routed are refused with a
422 naming the field, identically on every backend, and change nothing; the ids accepted
are reachable by the per-id endpoints."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from recloop.core.ids import ID_MESSAGE, PATH_ID_MESSAGE
from tests.conftest import Running

LIKE = {"user_id": "u", "item_id": "i", "type": "like"}

# (field as sent, value, the field the 422 names, the message)
REFUSED = [
    ("user_id", "a\x00b", "user_id", PATH_ID_MESSAGE),
    ("user_id", "a/b", "user_id", PATH_ID_MESSAGE),
    ("user_id", "tab\there", "user_id", PATH_ID_MESSAGE),
    ("item_id", "a\x7f", "item_id", PATH_ID_MESSAGE),
    ("item_id", "../x", "item_id", PATH_ID_MESSAGE),
    ("item_id", "end\n", "item_id", PATH_ID_MESSAGE),
    ("item_id", "..", "item_id", PATH_ID_MESSAGE),
    ("user_id", ".", "user_id", PATH_ID_MESSAGE),
    ("event_id", "e\x00", "event_id", ID_MESSAGE),
    ("event_id", "e\x1b[31m", "event_id", ID_MESSAGE),
]
ATTRIBUTION_REFUSED = [
    ("experiment_id", "x/y", PATH_ID_MESSAGE),
    ("impression_id", "x\x00", PATH_ID_MESSAGE),
    ("algorithm", "a\x00", ID_MESSAGE),
    ("variant", "v\r", ID_MESSAGE),
    ("model_version", "m\x01", ID_MESSAGE),
]


@pytest.mark.parametrize(("key", "value", "field", "message"), REFUSED)
async def test_a_single_event_with_a_bad_id_is_422_naming_it(
    running: Running, key: str, value: str, field: str, message: str
) -> None:
    r = await running.client.post("/feedback", json={**LIKE, key: value})
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert (detail["loc"], detail["msg"]) == (["body", field], message)
    assert await running.container.event_log.last_offset() == 0


@pytest.mark.parametrize(("key", "value", "message"), ATTRIBUTION_REFUSED)
async def test_attribution_ids_follow_the_rule(
    running: Running, key: str, value: str, message: str
) -> None:
    r = await running.client.post("/feedback", json={**LIKE, "attribution": {key: value}})
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert (detail["loc"], detail["msg"]) == (["body", "attribution", key], message)
    assert await running.container.event_log.last_offset() == 0


async def test_a_batch_rejects_the_events_with_bad_ids_alone(running: Running) -> None:
    events = [LIKE] + [{**LIKE, key: value} for key, value, _, _ in REFUSED]
    r = await running.client.post("/feedback", json={"events": events})
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (1, len(REFUSED))
    errors = [res.get("error") for res in body["results"]]
    assert errors == [None] + [{"field": f, "message": m} for _, _, f, m in REFUSED]
    assert await running.container.event_log.last_offset() == 1


ODD_BUT_FINE = ["a%2Fb", "...", ".x", " ", "\u200fright-to-left", "\u00e9\U0001f600", "x" * 128]


@pytest.mark.parametrize("user_id", ODD_BUT_FINE)
async def test_accepted_ids_are_stored_and_reachable(running: Running, user_id: str) -> None:
    item_id = user_id
    put = await running.client.put(f"/items/{quote(item_id, safe='')}", json={"vector": [1.0] * 8})
    assert put.status_code == 200, put.text
    assert put.json()["item_id"] == item_id
    r = await running.client.post(
        "/feedback", json={**LIKE, "user_id": user_id, "item_id": item_id}
    )
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1
    await running.idle()
    got = await running.client.get(f"/users/{quote(user_id, safe='')}/preferences")
    assert got.status_code == 200, got.text
    assert (got.json()["user_id"], got.json()["events_applied"]) == (user_id, 1)
    item = await running.client.get(f"/items/{quote(item_id, safe='')}")
    assert item.status_code == 200, item.text


async def test_put_item_refuses_a_control_character_in_its_path(running: Running) -> None:
    r = await running.client.put("/items/a%00b", json={"vector": [1.0] * 8})
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert (detail["loc"], detail["msg"]) == (["path", "item_id"], PATH_ID_MESSAGE)
    assert (await running.client.get("/items/a%00b")).status_code in (404, 422)


@pytest.mark.parametrize("item_id", ["a/b", "a\x00"])
async def test_post_items_refuses_bad_ids_and_stores_none(running: Running, item_id: str) -> None:
    items = [{"item_id": "fine", "vector": [1.0] * 8}, {"item_id": item_id, "vector": [1.0] * 8}]
    r = await running.client.post("/items", json={"items": items})
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert (detail["loc"], detail["msg"]) == (["body", "items", 1, "item_id"], PATH_ID_MESSAGE)
    assert (await running.client.get("/items/fine")).status_code == 404


@pytest.mark.parametrize("item_id", ["a/b", "a\x00"])
async def test_rank_refuses_bad_candidate_ids(running: Running, item_id: str) -> None:
    candidates = [{"item_id": "fine"}, {"item_id": item_id}]
    r = await running.client.post("/users/u/rank", json={"candidates": candidates})
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert (detail["loc"], detail["msg"]) == (["body", "candidates", 1, "item_id"], PATH_ID_MESSAGE)


@pytest.mark.parametrize("experiment_id", ["a/b", "a\x00"])
async def test_experiments_refuse_bad_ids(running: Running, experiment_id: str) -> None:
    body = {
        "experiment_id": experiment_id,
        "name": "n",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
        "metrics": [{"name": "clicks", "type": "binomial", "event": "click"}],
    }
    r = await running.client.post("/experiments", json=body)
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert (detail["loc"], detail["msg"]) == (["body", "experiment_id"], PATH_ID_MESSAGE)
    assert (await running.client.get("/experiments")).json() == []


async def test_performance_reports_refuse_bad_user_ids(running: Running) -> None:
    record = {"algorithm": "popularity", "user_id": "a/b", "impressions": 1, "clicks": 0}
    r = await running.client.post("/algorithm-performance", json=record)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == "user_id"
    assert r.json()["detail"][0]["msg"] == PATH_ID_MESSAGE


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/users/{id}/weights"),
        ("GET", "/users/{id}/strategy"),
        ("GET", "/users/{id}/preferences"),
        ("POST", "/users/{id}/rank"),
        ("GET", "/experiments/{id}"),
        ("GET", "/experiments/e/assignment/{id}"),
        ("POST", "/users/{id}/block"),
        ("GET", "/users/{id}/reliability"),
        ("DELETE", "/users/{id}"),
        ("GET", "/impressions/{id}"),
    ],
)
async def test_path_ids_follow_the_rule_on_every_route(
    running: Running, method: str, path: str
) -> None:
    """Lean or documented, a route taking an id in its path refuses one that breaks the
    rule (a NUL, percent-encoded) with a 422 naming the path parameter; nothing is stored."""
    body = {"candidates": [{"item_id": "i"}]} if path.endswith("/rank") else None
    r = await running.client.request(method, path.format(id=quote("a\x00b")), json=body)
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert detail["loc"][0] == "path" and detail["msg"] == PATH_ID_MESSAGE
    assert all(r.user_id != "a\x00b" for r in await running.container.store.get_reliability())
    assert await running.container.event_log.last_offset() == 0


async def test_rank_refuses_a_candidate_algorithm_with_a_control_character(
    running: Running,
) -> None:
    candidates = [{"item_id": "i", "algorithm": "collab\x0forative"}]
    r = await running.client.post("/users/u/rank", json={"candidates": candidates})
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert detail["loc"][-1] == "algorithm" and detail["msg"] == ID_MESSAGE
