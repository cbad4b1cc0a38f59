"""api.max_body_bytes: a larger body is a 413 with the API's error shape, whether announced
by Content-Length or streamed without one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from recloop.core.auth import new_key
from tests.conftest import Running, make_settings, start_app

LIMIT = 4096
KEY, KEY_SHA = new_key()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Running]:
    running, close = await start_app(
        make_settings(tmp_path, "memory", api={"max_body_bytes": LIMIT})
    )
    yield running
    await close()


def batch(n: int) -> bytes:
    events = [{"user_id": f"u{i}", "item_id": "item", "type": "view"} for i in range(n)]
    return json.dumps({"events": events}).encode()


def fill(size: int) -> bytes:
    """A JSON batch of exactly ``size`` bytes (padded inside an event id)."""
    body = {"events": [{"event_id": "", "user_id": "u", "item_id": "i", "type": "view"}]}
    pad = size - len(json.dumps(body, separators=(",", ":")))
    body["events"][0]["event_id"] = "e" * pad
    data = json.dumps(body, separators=(",", ":")).encode()
    assert len(data) == size
    return data


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


JSON = {"content-type": "application/json"}


def assert_413(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": f"request body larger than api.max_body_bytes = {LIMIT} bytes"}
    assert r.headers["x-request-id"]


async def test_content_length_over_the_limit_is_413(app: Running) -> None:
    big = batch(100)
    assert len(big) > LIMIT
    assert_413(await app.client.post("/feedback", content=big, headers=JSON))
    assert_413(await app.client.post("/items", content=big, headers=JSON))
    assert await app.container.event_log.last_offset() == 0


async def test_a_body_at_the_limit_passes(app: Running) -> None:
    r = await app.client.post("/feedback", content=fill(LIMIT), headers=JSON)
    assert r.status_code == 202, r.text
    assert_413(await app.client.post("/feedback", content=fill(LIMIT + 1), headers=JSON))


async def test_streamed_bodies_are_cut_at_the_limit(app: Running) -> None:
    big = batch(100)
    # No Content-Length: the body is counted as it arrives.
    assert_413(await app.client.post("/feedback", content=chunks(big), headers=JSON))
    assert_413(await app.client.put("/items/i1", content=chunks(big), headers=JSON))
    small = batch(2)
    r = await app.client.post("/feedback", content=chunks(small, 10), headers=JSON)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 2


async def test_the_limit_comes_before_authentication(tmp_path: Path) -> None:
    keys = [{"name": "k", "sha256": KEY_SHA, "roles": ["ingest"]}]
    running, close = await start_app(
        make_settings(tmp_path, "memory", api={"max_body_bytes": LIMIT}, auth={"keys": keys})
    )
    try:
        big = batch(100)
        assert_413(await running.client.post("/feedback", content=big, headers=JSON))
        r = await running.client.post("/feedback", content=batch(1), headers=JSON)
        assert r.status_code == 401
    finally:
        await close()


async def test_the_default_limit_is_two_mebibytes(tmp_path: Path) -> None:
    running, close = await start_app(make_settings(tmp_path, "memory"))
    try:
        assert running.container.settings.api.max_body_bytes == 2 * 1024 * 1024
        r = await running.client.post(
            "/feedback", content=b" " * (2 * 1024 * 1024 + 1), headers=JSON
        )
        assert r.status_code == 413
    finally:
        await close()
