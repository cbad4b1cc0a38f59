"""GET /health/live: liveness for orchestrators; no key, no dependency."""

from __future__ import annotations

from pathlib import Path

import httpx

from recloop.api.app import create_app
from recloop.core.auth import new_key
from tests.conftest import make_settings, start_app


async def test_live_needs_no_key(tmp_path: Path) -> None:
    _, sha = new_key()
    keys = [{"name": "ops", "sha256": sha, "roles": ["admin"]}]
    running, close = await start_app(make_settings(tmp_path, "memory", auth={"keys": keys}))
    try:
        r = await running.client.get("/health/live")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
    finally:
        await close()


async def test_live_answers_before_anything_is_started(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, "memory"))  # no lifespan: no container at all
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://recloop") as client:
        r = await client.get("/api/v1/learning/health/live")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
