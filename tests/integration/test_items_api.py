"""Item endpoints: validation and storage."""

from __future__ import annotations

import math

import pytest

from tests.conftest import Running


async def test_put_get_item_with_vector_is_stored_unit_norm(running: Running) -> None:
    r = await running.client.put("/items/a", json={"vector": [3, 4, 0, 0, 0, 0, 0, 0]})
    assert r.status_code == 200
    got = (await running.client.get("/items/a")).json()
    assert got["vector"][:2] == pytest.approx([0.6, 0.8])
    assert got["vector_source"] == "given"


async def test_item_from_attributes_is_hashed(running: Running) -> None:
    r = await running.client.put("/items/b", json={"attributes": {"genre": "jazz", "year": 1972}})
    body = r.json()
    assert body["vector_source"] == "hashed"
    assert math.isclose(sum(x * x for x in body["vector"]), 1.0)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"vector": [1.0, 2.0]}, ["body", "vector"]),
        ({"vector": [0.0] * 8}, ["body", "vector"]),
        ({}, ["body", "attributes"]),
        ({"vector": [1] * 8, "colour": "red"}, ["body", "colour"]),
    ],
)
async def test_bad_item_is_422_naming_the_field(
    running: Running, body: dict, loc: list[str]
) -> None:
    r = await running.client.put("/items/c", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc
    assert (await running.client.get("/items/c")).status_code == 404


async def test_nan_in_vector_is_refused(running: Running) -> None:
    body = b'{"vector": [NaN, 1, 1, 1, 1, 1, 1, 1]}'
    r = await running.client.put(
        "/items/n", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


async def test_batch_with_one_bad_item_stores_none(running: Running) -> None:
    items = [
        {"item_id": "ok", "vector": [1] * 8},
        {"item_id": "bad", "vector": [1, 2, 3]},
    ]
    r = await running.client.post("/items", json={"items": items})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "items", 1, "vector"]
    assert (await running.client.get("/items/ok")).status_code == 404
    good = await running.client.post("/items", json={"items": items[:1]})
    assert good.json()["stored"] == 1
