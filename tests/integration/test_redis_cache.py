"""SharedCache: instances' local caches kept coherent through Redis pub/sub, and Redis outages."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from recloop.adapters.memory import TtlCache
from recloop.adapters.redis import SharedCache
from recloop.adapters.redis.cache import MAX_KEYS_PER_MESSAGE
from recloop.core.errors import ConfigError
from tests.conftest import eventually, free_port

FAST_RETRY = {"retry_seconds": 0.05, "max_retry_seconds": 0.2}


def unique_channel() -> str:
    return f"recloop-test:invalidate:{uuid.uuid4().hex}"


@pytest.fixture
async def caches() -> AsyncIterator[Callable[..., Any]]:
    """Start SharedCaches; every one is stopped when the test ends."""
    async with AsyncExitStack() as stack:

        async def make(url: str, channel: str, **kwargs: Any) -> SharedCache:
            return await stack.enter_async_context(SharedCache(url, channel, **kwargs))

        yield make


async def test_a_write_invalidates_other_instances_but_not_itself(
    redis_url: str, caches: Callable[..., Any]
) -> None:
    channel = unique_channel()
    api: SharedCache = await caches(redis_url, channel)
    worker: SharedCache = await caches(redis_url, channel)
    assert api.connected and worker.connected and not api.degraded

    api.add("prefs:u", "v1")
    worker.set("prefs:u", "v2")
    assert api.get("prefs:u") == "v1"  # until the invalidation arrives
    assert worker.get("prefs:u") == "v2"

    async def invalidated() -> bool:
        return api.get("prefs:u") is None

    await eventually(invalidated)
    assert worker.get("prefs:u") == "v2"  # its own message left its fresh value alone

    # The api instance's own write reaches the worker and is not undone at home.
    worker.add("prefs:w", "old")
    api.set("prefs:w", "new")

    async def worker_invalidated() -> bool:
        return worker.get("prefs:w") is None

    await eventually(worker_invalidated)
    # A later message from the worker arrives at the api instance after its own one did.
    api.add("barrier", 1)
    worker.delete("barrier")

    async def barrier_passed() -> bool:
        return api.get("barrier") is None

    await eventually(barrier_passed)
    assert api.get("prefs:w") == "new"


async def test_add_does_not_overwrite_and_reads_refill(
    redis_url: str, caches: Callable[..., Any]
) -> None:
    channel = unique_channel()
    api: SharedCache = await caches(redis_url, channel)
    worker: SharedCache = await caches(redis_url, channel)
    api.add("k", 1)
    api.add("k", 2)
    assert api.get("k") == 1
    worker.set("k", 3)

    async def invalidated() -> bool:
        return api.get("k") is None

    await eventually(invalidated)
    api.add("k", 3)  # the reader refills from the database
    assert api.get("k") == 3


async def test_delete_propagates(redis_url: str, caches: Callable[..., Any]) -> None:
    channel = unique_channel()
    api: SharedCache = await caches(redis_url, channel)
    other_api: SharedCache = await caches(redis_url, channel)
    worker: SharedCache = await caches(redis_url, channel)
    for cache in (api, other_api, worker):
        cache.add("item:1", {"title": "old"})
    worker.delete("item:1")
    assert worker.get("item:1") is None

    async def gone_everywhere() -> bool:
        return api.get("item:1") is None and other_api.get("item:1") is None

    await eventually(gone_everywhere)


async def test_writes_are_published_in_batches(redis_url: str, caches: Callable[..., Any]) -> None:
    """Keys written together go out in one message each of MAX_KEYS_PER_MESSAGE, with the sender."""
    channel = unique_channel()
    listener = Redis.from_url(redis_url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(channel)
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
        worker: SharedCache = await caches(redis_url, channel)
        keys = [f"k{n}" for n in range(MAX_KEYS_PER_MESSAGE + 5)]
        for key in keys:  # no await in between: one batch
            worker.set(key, 1)
        worker.set("k0", 2)  # a repeated key is sent once
        messages = []
        while len(messages) < 2:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert message is not None, "no invalidation published"
            messages.append(orjson.loads(message["data"]))
        assert {m["sender"] for m in messages} == {worker.instance_id}
        sizes = sorted(len(m["keys"]) for m in messages)
        assert sizes == [5, MAX_KEYS_PER_MESSAGE]
        assert sorted(k for m in messages for k in m["keys"]) == sorted(keys)
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def test_an_unreadable_message_clears_the_local_cache(
    redis_url: str, caches: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    channel = unique_channel()
    api: SharedCache = await caches(redis_url, channel)
    api.add("k", 1)
    client = Redis.from_url(redis_url)
    try:
        await client.publish(channel, b'{"format": 2}')
    finally:
        await client.aclose()

    async def cleared() -> bool:
        return api.get("k") is None

    await eventually(cleared)
    assert "unreadable message" in caplog.text
    api.add("k", 2)  # and it keeps serving
    assert api.get("k") == 2 and api.connected


async def test_stop_publishes_what_is_queued(redis_url: str, caches: Callable[..., Any]) -> None:
    channel = unique_channel()
    api: SharedCache = await caches(redis_url, channel)
    worker = SharedCache(redis_url, channel, publish_interval=60.0)
    await worker.start()
    api.add("k", 1)
    worker.set("k", 2)
    await worker.stop()
    assert not worker.connected and worker.get("k") is None

    async def invalidated() -> bool:
        return api.get("k") is None

    await eventually(invalidated)


# -- Redis unavailable ------------------------------------------------------------------


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A private, memory-only redis-server on ``port``."""
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return subprocess.Popen(
        ["redis-server", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill(server: subprocess.Popen[bytes]) -> None:
    server.kill()
    server.wait(timeout=10)


async def wait_until_serving(url: str) -> None:
    async def answers() -> bool:
        client = Redis.from_url(url)
        try:
            return bool(await client.ping())
        except Exception:
            return False
        finally:
            await client.aclose()

    await eventually(answers)


def outage_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        r.name == "recloop.adapters.redis.cache"
        and r.levelno == logging.WARNING
        and "Redis unavailable" in r.getMessage()
        for r in caplog.records
    )


async def test_redis_down_serves_nothing_and_clears_on_reconnect(
    caches: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    channel = unique_channel()
    server = start_redis(port)
    try:
        await wait_until_serving(url)
        api: SharedCache = await caches(url, channel, **FAST_RETRY)
        worker: SharedCache = await caches(url, channel, **FAST_RETRY)
        assert api.connected and worker.connected
        api.add("kept", "before")
        assert api.get("kept") == "before"

        kill(server)

        async def both_degraded() -> bool:
            return api.degraded and worker.degraded

        await eventually(both_degraded)
        assert not api.connected and api.last_error is not None
        assert api.get("kept") is None  # every read goes to the database
        api.set("written", "during")
        api.add("added", "during")
        worker.delete("kept")  # its invalidation is dropped, not queued
        assert api.get("written") is None and api.get("added") is None
        await asyncio.sleep(0.5)  # several reconnection attempts fail meanwhile
        assert outage_warnings(caplog) == 2  # once per instance, not per attempt

        server = start_redis(port)

        async def both_back() -> bool:
            return api.connected and worker.connected

        await eventually(both_back)
        assert not api.degraded and not worker.degraded
        assert "Connection" in (api.last_error or "")
        # Invalidations may have been missed: nothing from before is served.
        for key in ("kept", "written", "added"):
            assert api.get(key) is None
        api.add("kept", "after")
        assert api.get("kept") == "after"
        worker.set("kept", "newer")

        async def invalidated() -> bool:
            return api.get("kept") is None

        await eventually(invalidated)
        assert outage_warnings(caplog) == 2
    finally:
        kill(server)


async def test_starting_while_redis_is_down_is_degraded_until_it_is_up(
    caches: Callable[..., Any],
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    cache: SharedCache = await caches(url, unique_channel(), **FAST_RETRY)
    assert cache.degraded and not cache.connected
    assert cache.last_error is not None and "ConnectionError" in cache.last_error
    cache.add("k", 1)
    assert cache.get("k") is None
    server = start_redis(port)
    try:

        async def up() -> bool:
            return cache.connected

        await eventually(up)
        assert not cache.degraded and cache.get("k") is None
        cache.add("k", 1)
        assert cache.get("k") == 1
    finally:
        kill(server)


async def test_a_hung_server_is_noticed_by_its_silence(caches: Callable[..., Any]) -> None:
    """A server that stops answering (SIGSTOP: connections stay open) counts as down."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(port)
    try:
        await wait_until_serving(url)
        cache: SharedCache = await caches(url, unique_channel(), ping_interval=0.05, **FAST_RETRY)
        await asyncio.sleep(0.5)  # idle for many ping intervals: the answers keep it up
        assert cache.connected and cache.last_error is None
        cache.add("k", 1)
        server.send_signal(signal.SIGSTOP)
        try:

            async def degraded() -> bool:
                return cache.degraded

            await eventually(degraded)
            assert "PING" in (cache.last_error or "") and cache.get("k") is None
        finally:
            server.send_signal(signal.SIGCONT)

        async def back() -> bool:
            return cache.connected

        await eventually(back)
        assert cache.get("k") is None
    finally:
        kill(server)


async def test_an_instance_cut_off_alone_reconnects_and_clears(
    redis_url: str, caches: Callable[..., Any]
) -> None:
    """Redis closes one instance's connections (as after a network cut); the other carries on."""
    channel = unique_channel()
    api: SharedCache = await caches(redis_url, channel, **FAST_RETRY)
    worker: SharedCache = await caches(redis_url, channel, **FAST_RETRY)
    api.add("k", 1)
    worker.add("w", 1)
    await kill_connections(redis_url, api)

    async def reconnected_and_cleared() -> bool:
        return api.connected and api.get("k") is None

    await eventually(reconnected_and_cleared)
    assert api.last_error is not None
    assert worker.connected and worker.get("w") == 1  # never lost its connection


async def kill_connections(url: str, cache: SharedCache) -> None:
    admin = Redis.from_url(url)
    try:
        name = f"recloop-cache-{cache.instance_id}"
        clients = [c for c in await admin.client_list() if c["name"] == name]
        assert len(clients) == 2  # its publisher and its subscription
        for c in clients:
            await admin.client_kill_filter(_id=c["id"])
    finally:
        await admin.aclose()


# -- staleness bounded by the local TTL --------------------------------------------------


async def test_a_missed_invalidation_lasts_until_the_entry_expires(
    redis_url: str, caches: Callable[..., Any]
) -> None:
    """The worker loses its connection alone: its write while cut off never reaches the api
    instance, which stayed connected. The stale entry is served until the local TTL ends it."""
    now = [0.0]
    channel = unique_channel()
    local = TtlCache(100, ttl=30.0, clock=lambda: now[0])
    api: SharedCache = await caches(redis_url, channel, local=local)
    worker: SharedCache = await caches(redis_url, channel)  # reconnects after 1 s
    api.add("k", "old")
    await kill_connections(redis_url, worker)

    async def worker_degraded() -> bool:
        return worker.degraded

    await eventually(worker_degraded)
    worker.set("k", "new")  # committed to the database; the invalidation is dropped

    async def worker_back() -> bool:
        return worker.connected

    await eventually(worker_back)
    api.add("barrier", 1)
    worker.delete("barrier")

    async def barrier_passed() -> bool:
        return api.get("barrier") is None

    await eventually(barrier_passed)
    assert api.connected and api.get("k") == "old"  # stale: nobody told it
    now[0] += 29.0
    assert api.get("k") == "old"
    now[0] += 1.0
    assert api.get("k") is None  # the TTL bounds the staleness


async def test_ttl_seconds_sets_the_lifetime_of_local_entries(
    redis_url: str, caches: Callable[..., Any]
) -> None:
    cache: SharedCache = await caches(redis_url, unique_channel(), ttl_seconds=0.05)
    cache.add("k", 1)

    async def expired() -> bool:
        return cache.get("k") is None

    await eventually(expired)


# -- lifecycle and configuration ---------------------------------------------------------


async def test_unstarted_or_stopped_cache_serves_nothing(redis_url: str) -> None:
    cache = SharedCache(redis_url, unique_channel())
    cache.add("k", 1)
    assert cache.get("k") is None and not cache.connected and not cache.degraded
    await cache.start()
    with pytest.raises(RuntimeError, match="already started"):
        await cache.start()
    cache.add("k", 1)
    assert cache.get("k") == 1
    await cache.stop()
    await cache.stop()  # idempotent
    assert cache.get("k") is None and not cache.connected and not cache.degraded


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"channel": ""}, "channel"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"max_entries": 0}, "max_entries"),
        ({"publish_interval": -1}, "publish_interval"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        SharedCache("redis://127.0.0.1:6379/0", **kwargs)
