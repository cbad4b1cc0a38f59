"""Faults with real processes: Redis killed under load, PostgreSQL cut off behind a proxy.

Each test runs an app under a steady stream of feedback, breaks one dependency,
mends it, and checks that the service kept its promises throughout (what it
accepted is applied, once), reported the outage in ``/health`` while it lasted,
and recovered by itself.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import (
    Running,
    eventually,
    free_port,
    make_settings,
    service_unavailable,
    start_app,
)
from tests.integration.test_redis_cache import kill, start_redis, wait_until_serving
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

USERS = 8
FAST_BREAKERS = {"breaker_failures": 3, "breaker_open_seconds": 0.5}
UNLIMITED = {"explicit": "1000000/minute", "implicit": "1000000/minute"}


async def health(app: Running) -> tuple[int, dict[str, Any]]:
    r = await app.client.get("/health")
    return r.status_code, r.json()


async def put_item(app: Running) -> None:
    vector = [1.0] + [0.0] * 7
    r = await app.client.put("/items/i", json={"vector": vector})
    assert r.status_code == 200, r.text


class Load:
    """Posts one ``like`` at a time, round robin over ``USERS`` users, until stopped.

    A request answered 503 is sent again, with the same ``event_id``, until it gets
    an answer that is not a 503 (a client retrying, as the 503's Retry-After asks).
    """

    def __init__(self, app: Running, pause: float = 0.005) -> None:
        self.app = app
        self.pause = pause
        self.statuses: Counter[int] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()  # user -> events answered 202
        self.refusals: set[str] = set()  # the details of the 503s
        self.sent = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def until_sent(self, n: int) -> None:
        target = self.sent + n

        async def sent() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()  # the load failed: raise its error here
                raise AssertionError("the load stopped")
            return self.sent >= target

        await eventually(sent, within=20.0)

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            user = f"u{n % USERS}"
            event = {"event_id": f"e{n}", "user_id": user, "item_id": "i", "type": "like"}
            while True:
                r = await self.app.client.post("/feedback", json=event)
                self.statuses[r.status_code] += 1
                if r.status_code != 503:
                    break
                self.refusals.add(r.json()["detail"])
                await asyncio.sleep(0.02)
            assert r.status_code == 202, r.text
            status = r.json()["results"][0]["status"] if "results" in r.json() else "accepted"
            self.outcomes[status] += 1
            self.answered[user] += 1
            self.sent += 1
            n += 1
            await asyncio.sleep(self.pause)


async def applied(app: Running, user: str) -> int:
    r = await app.client.get(f"/users/{user}/preferences")
    assert r.status_code == 200, r.text
    return int(r.json()["events_applied"])


async def check_all_applied(app: Running, load: Load) -> None:
    """Every event answered 202 is applied, exactly once."""
    await app.idle()
    for user, n in load.answered.items():
        assert await applied(app, user) == n, user
    assert sum(load.answered.values()) == load.sent


# -- Redis --------------------------------------------------------------------------------


@pytest.fixture
def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        service_unavailable("redis-server", "not on PATH")
    return str(found)


async def test_redis_killed_under_load_loses_nothing_and_recovers(
    tmp_path: Path, redis_server_binary: str
) -> None:
    """Redis holds the rate-limit counters and the shared cache's invalidations; while
    it is gone, limits count in process and reads go to the database."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    prefix = f"recloop-faults-{uuid.uuid4().hex[:8]}"
    server = start_redis(port)
    app: Running | None = None
    close: Callable[[], Any] | None = None
    try:
        await wait_until_serving(url)
        settings = make_settings(
            tmp_path,
            "sqlite",
            rate_limits={**UNLIMITED, "storage": f"async+{url}", "key_prefix": prefix},
            cache={"shared_url": url},
            resilience=FAST_BREAKERS,
        )
        app, close = await start_app(settings)
        await put_item(app)
        status, body = await health(app)
        assert status == 200 and body["status"] == "ok", body
        assert {b["state"] for b in body["breakers"].values()} == {"closed"}
        assert {"rate_limits", "cache", "storage"} <= set(body["breakers"])

        load = Load(app)
        load.start()
        await load.until_sent(30)
        kill(server)

        async def outage_reported() -> bool:
            _, body = await health(app)
            c, b = body["components"], body["breakers"]
            return (
                c["rate_limits"]["status"] == "degraded"
                and c["cache"]["status"] == "degraded"
                and b["rate_limits"]["state"] != "closed"
                and b["cache"]["state"] != "closed"
            )

        await eventually(outage_reported, within=10.0, interval=0.02)
        status, body = await health(app)
        assert status == 200 and body["status"] == "degraded"  # degraded, not down
        assert body["components"]["rate_limits"]["detail"]["fallback"] is True
        samples = (await app.client.get("http://recloop/metrics")).text
        assert 'recloop_breaker_open{dependency="rate_limits"} 1.0' in samples
        assert 'recloop_breaker_open{dependency="cache"} 1.0' in samples
        await load.until_sent(30)  # served all along, limits counted in process
        await app.idle()
        before = await applied(app, "u0")  # reads are served (from the database)
        assert not app.container.shared_cache.connected
        await load.until_sent(USERS)
        await app.idle()
        assert await applied(app, "u0") > before

        server = start_redis(port)
        await wait_until_serving(url)

        async def recovered() -> bool:
            status, body = await health(app)
            breakers = {b["state"] for b in body["breakers"].values()}
            return status == 200 and body["status"] == "ok" and breakers == {"closed"}

        await eventually(recovered, within=20.0, interval=0.05)
        assert app.container.ingest.limits is not None
        assert not app.container.ingest.limits.degraded
        assert app.container.shared_cache.connected
        await load.until_sent(10)
        await load.stop()

        assert set(load.statuses) == {202}, load.statuses  # no request failed
        await check_all_applied(app, load)
    finally:
        if close is not None:
            await close()
        kill(server)


# -- PostgreSQL ---------------------------------------------------------------------------


async def test_postgres_cut_off_loses_nothing_acknowledged_and_recovers(
    tmp_path: Path, postgres_url: str
) -> None:
    """The state store goes away for ~2 s: new events are refused (503) and sent again;
    events accepted before are applied once it is back (the processor retried its
    commits); the service recovers without a restart."""
    target = make_url(postgres_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    proxy.start()
    proxied = target.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    settings = make_settings(
        tmp_path, "postgres", proxied, rate_limits=UNLIMITED, resilience=FAST_BREAKERS
    )
    app, close = await start_app(settings)
    try:
        await put_item(app)
        # Implicit events wait in the processor's buffers for their flush ...
        clicks = [
            {"event_id": f"c{u}-{k}", "user_id": f"u{u}", "item_id": "i", "type": "click"}
            for u in range(USERS)
            for k in range(3)
        ]
        r = await app.client.post("/feedback", json={"events": clicks})
        assert r.status_code == 202 and r.json()["accepted"] == len(clicks)
        load = Load(app)
        load.start()
        await load.until_sent(30)

        proxy.cut()
        cut_at = time.monotonic()
        # ... which comes during the cut: its commit fails, and is retried.
        processor = app.container.processor
        flush = asyncio.create_task(processor.flush_implicit())

        async def storage_down() -> bool:
            status, body = await health(app)
            return status == 503 and body["components"]["storage"]["status"] == "down"

        await eventually(storage_down, within=5.0, interval=0.02)
        _, body = await health(app)
        assert body["breakers"]["storage"]["state"] != "closed"

        async def processor_retrying() -> bool:
            _, body = await health(app)
            return body["components"]["workers"]["status"] == "degraded"

        await eventually(processor_retrying, within=5.0, interval=0.02)
        assert not flush.done()
        refused = load.statuses[503]
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - cut_at)))
        assert load.statuses[503] > refused  # clients were refused, and retried
        proxy.restore()

        async def recovered() -> bool:
            status, body = await health(app)
            return (
                status == 200
                and body["status"] == "ok"
                and body["breakers"]["storage"]["state"] == "closed"
            )

        await eventually(recovered, within=20.0, interval=0.05)
        await asyncio.wait_for(flush, 10.0)
        assert app.container.retries.get("state_commit") > 0
        await load.until_sent(20)
        await load.stop()

        assert set(load.statuses) <= {202, 503}, load.statuses  # refused, never a 500
        # Refused as unreachable, or at once by the open breaker; no driver details.
        assert load.refusals and all(
            d.startswith("storage is unavailable") for d in load.refusals
        ), load.refusals
        for u in range(USERS):
            load.answered[f"u{u}"] += 3  # the clicks
        load.sent += len(clicks)
        await check_all_applied(app, load)
        _, body = await health(app)
        assert body["components"]["workers"]["status"] == "ok"
        assert body["components"]["workers"]["detail"]["failing"] == 0
    finally:
        await close()
        proxy.stop()
