"""Rate limits per user and class and per API key: refused events are never half-applied."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from recloop.adapters.ratelimit import MemoryRateLimiter
from recloop.config import Settings
from tests.conftest import Running, start_app
from tests.redis import flush_prefix


@pytest.fixture
async def app(settings_factory: Callable[..., Settings]) -> AsyncIterator[Running]:
    limits = {"explicit": "3/minute;5/day", "implicit": "4/minute", "per_key": "100/minute"}
    running, close = await start_app(settings_factory(rate_limits=limits))
    yield running
    await close()


def likes(user: str, n: int) -> list[dict]:
    return [{"user_id": user, "item_id": "i", "type": "like"} for _ in range(n)]


async def test_over_limit_events_in_a_batch_are_refused_alone(app: Running) -> None:
    events = likes("u", 5) + [{"user_id": "u", "item_id": "i", "type": "view"}] * 5 + likes("v", 2)
    body = (await app.client.post("/feedback", json={"events": events})).json()
    statuses = [r["status"] for r in body["results"]]
    assert (
        statuses
        == ["accepted"] * 3
        + ["rate_limited"] * 2
        + ["accepted"] * 4
        + ["rate_limited"]
        + ["accepted"] * 2
    )
    assert (body["accepted"], body["rate_limited"]) == (9, 3)
    assert "3 per 1 minute" in body["results"][3]["error"]["message"]
    # each refused event says which limit and when to send it again, as a 429's headers do
    limited = [r for r in body["results"] if r["status"] == "rate_limited"]
    assert [r["limit"] for r in limited] == ["3 per 1 minute"] * 2 + ["4 per 1 minute"]
    assert all(1 <= r["retry_after"] <= 60 for r in limited)
    assert all("retry_after" not in r for r in body["results"] if r["status"] == "accepted")
    await app.idle(flush=True)
    prefs = (await app.client.get("/users/u/preferences")).json()
    assert prefs["interactions"] == 3 + 4  # nothing refused was applied
    assert await app.container.event_log.last_offset() == 9


async def test_single_event_over_the_limit_is_429_with_headers(app: Running) -> None:
    for _ in range(3):
        r = await app.client.post("/feedback", json=likes("w", 1)[0])
        assert r.status_code == 202
    r = await app.client.post("/feedback", json=likes("w", 1)[0])
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-limit"] == "3 per 1 minute"
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert int(r.headers["x-ratelimit-reset"]) >= time.time()


async def test_refused_events_consume_no_quota(app: Running) -> None:
    await app.client.post("/feedback", json={"events": likes("q", 10)})
    # the day limit (5) has seen only the 3 admitted, so after the minute passes two remain
    limits = app.container.ingest.limits
    assert limits is not None and isinstance(limits.local, MemoryRateLimiter)
    (minute, _, _), (day, remaining, _) = limits.local.stats("explicit", "q")
    assert (minute, day, remaining) == ("3 per 1 minute", "5 per 1 day", 2)


async def test_per_key_limit(settings_factory: Callable[..., Settings]) -> None:
    app, close = await start_app(settings_factory(rate_limits={"per_key": "4/minute"}))
    try:
        events = [{"user_id": f"u{n}", "item_id": "i", "type": "view"} for n in range(6)]
        body = (await app.client.post("/feedback", json={"events": events})).json()
        assert (body["accepted"], body["rate_limited"]) == (4, 2)
        assert "API key" in body["results"][5]["error"]["message"]
    finally:
        await close()


async def test_limits_can_be_turned_off(settings_factory: Callable[..., Settings]) -> None:
    app, close = await start_app(
        settings_factory(rate_limits={"enabled": False, "explicit": "1/minute"})
    )
    try:
        body = (await app.client.post("/feedback", json={"events": likes("u", 5)})).json()
        assert body["accepted"] == 5
    finally:
        await close()


async def test_shared_redis_storage_counts_across_instances(
    settings_factory: Callable[..., Settings], redis_url: str
) -> None:
    """Two API instances sharing Redis share the limit; the keys live under the prefix."""
    prefix = f"recloop-test-{uuid.uuid4().hex[:8]}"
    limits = {"explicit": "3/minute", "storage": f"async+{redis_url}", "key_prefix": prefix}
    first, close_first = await start_app(settings_factory(rate_limits=limits))
    second, close_second = await start_app(settings_factory(rate_limits=limits))
    try:
        a = (await first.client.post("/feedback", json={"events": likes("r", 2)})).json()
        b = (await second.client.post("/feedback", json={"events": likes("r", 2)})).json()
        assert (a["accepted"], b["accepted"], b["rate_limited"]) == (2, 1, 1)
        health = (await first.client.get("/health")).json()["components"]["rate_limits"]
        assert health["status"] == "ok"
    finally:
        await close_first()
        await close_second()
        await flush_prefix(redis_url, prefix)


async def test_redis_down_falls_back_to_in_process_limits(
    settings_factory: Callable[..., Settings],
) -> None:
    # A port bound and never listening: a connection is refused at once, and no client
    # gets it as its own ephemeral port (a client connecting from the very port it
    # connects to meets itself, and waits for an answer until its timeout).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        dead = f"async+redis://127.0.0.1:{held.getsockname()[1]}"
        app, close = await start_app(
            settings_factory(rate_limits={"explicit": "3/minute", "storage": dead})
        )
        try:
            body = (await app.client.post("/feedback", json={"events": likes("d", 5)})).json()
            assert (body["accepted"], body["rate_limited"]) == (3, 2)  # enforced, locally
            health = (await app.client.get("/health")).json()
            assert health["status"] == "degraded"
            assert health["components"]["rate_limits"]["detail"]["fallback"] is True
        finally:
            await close()
