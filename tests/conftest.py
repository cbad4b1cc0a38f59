"""Shared fixtures: settings per storage backend, a started app, service checks."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from recloop.adapters.memory import InMemoryStateStore
from recloop.api.app import create_app
from recloop.config import Settings, load_settings
from recloop.container import Container, build_container
from recloop.core.preferences import UserState

REQUIRE_SERVICES = os.environ.get("RECLOOP_REQUIRE_SERVICES") == "1"


def service_unavailable(name: str, why: str) -> None:
    """Skip (locally) or fail (CI, ``RECLOOP_REQUIRE_SERVICES=1``) for a missing service."""
    message = f"{name} is not available: {why}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (RECLOOP_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(
    tmp_path: Path, backend: str = "sqlite", url: str | None = None, **overrides: Any
) -> Settings:
    if url is None:
        url = (
            "memory://" if backend == "memory" else f"sqlite+aiosqlite:///{tmp_path / 'recloop.db'}"
        )
    storage = {"url": url, "sqlite_synchronous": "NORMAL"}
    vectors = {"dim": 8}
    # The guard scales learning rates by reliability; the learning tests check the exact
    # EMA arithmetic, so it is off here and on in tests/integration/test_guard.py.
    base: dict[str, Any] = {"storage": storage, "vectors": vectors, "spam": {"enabled": False}}
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value}
    return load_settings(None, **base)


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 10.0, interval: float = 0.01
) -> None:
    """Wait until ``check()`` is true; fail after ``within`` s (a hang guard, not a timing test)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(interval)


class Running:
    """An app with its container started, and a client talking to it through ASGI."""

    def __init__(self, container: Container, client: httpx.AsyncClient) -> None:
        self.container = container
        self.client = client

    async def idle(self, flush: bool = False) -> None:
        """Wait until everything dispatched is applied (optionally flushing implicit buffers)
        and the deferred experiment covariates are read."""
        p = self.container.processor
        if flush:
            await p.flush_implicit()

        async def settled() -> bool:
            return p.explicit_queue_depth == 0 and p.tracker.in_flight == (
                0 if flush else p.implicit_buffered
            )

        await eventually(settled)
        # and the CUPED covariates of the users exposed so far read (deferred, embedded)
        await self.container.experiments.settle_covariates()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings_factory(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    """Settings on the test's backend; a postgres backend gets a fresh database."""
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None

    def factory(**overrides: Any) -> Settings:
        return make_settings(tmp_path, backend, url, **overrides)

    return factory


async def start_app(settings: Settings) -> tuple[Running, Callable[[], Awaitable[None]]]:
    container = build_container(settings)
    app = create_app(settings, container=container)
    ctx = app.router.lifespan_context(app)
    await ctx.__aenter__()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://recloop/api/v1/learning"
    )

    async def close() -> None:
        await client.aclose()
        await ctx.__aexit__(None, None, None)

    return Running(container, client), close


@pytest.fixture
async def running(settings_factory: Callable[..., Settings]) -> AsyncIterator[Running]:
    app, close = await start_app(settings_factory())
    yield app
    await close()


# Fixtures of the real services, shared by every test.
from tests.postgres import postgres_url  # noqa: E402, F401
from tests.redis import redis_url  # noqa: E402, F401


class CountingStore(InMemoryStateStore):
    """The in-memory store, noting the users it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        self.asked.extend(user_ids)
        return await super().get_users(user_ids)
