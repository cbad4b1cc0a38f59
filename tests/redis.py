"""The Redis server at 127.0.0.1:6379 for adapter tests; every test uses its own key prefix."""

from __future__ import annotations

import os

import pytest

from tests.conftest import service_unavailable

REDIS_URL = os.environ.get("RECLOOP_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis_url() -> str:
    """The server's URL, after checking it answers."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        service_unavailable("Redis", f"{REDIS_URL}: {exc}")
    finally:
        await client.aclose()
    return REDIS_URL


async def flush_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (tests clean up after themselves)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
