"""``recloop worker`` processes: their metrics endpoint, and how they stop.

A graceful stop is made slow honestly: the worker reaches PostgreSQL through a
proxy the test cuts once the worker holds implicit events in its buffers (taken from
Kafka, not applied yet, the flush far away). Its graceful stop then has to apply them,
and retries its storage calls until they succeed: forever. A second SIGTERM, or the
configured deadline, must end the process anyway; after a restart with the storage
back, every event is applied exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from recloop.adapters.kafka import KafkaConfig, KafkaEventLog
from recloop.adapters.sql import SqlDatabase, SqlStateStore
from recloop.core.events import Event
from recloop.core.items import make_item
from recloop.services.worker import DEADLINE_EXIT_STATUS, SIGNAL_EXIT_BASE
from tests.conftest import free_port
from tests.e2e.conftest import Worker
from tests.kafka_broker import create_topic, kafka_broker  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401
from tests.prometheus import Samples, samples, value
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PARTITIONS = 2
DIM = 8
USERS = [f"u{n}" for n in range(8)]
EXPLICIT = 40
"""Likes applied (and committed) before the storage goes away."""
IMPLICIT = 40
"""Views taken and buffered when it goes: the graceful stop has to apply them."""

DEADLINE = 15
"""Seconds: longer than it takes to see the stop stuck (a few, unless the machine is loaded)."""


@dataclass
class Deployment:
    worker: Worker
    proxy: TcpProxy
    """Between the worker and PostgreSQL."""
    postgres_url: str
    """Direct, for the test's own reads."""
    kafka: KafkaConfig
    metrics_port: int

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"


@pytest.fixture
async def deployment(
    tmp_path: Path,
    kafka_broker: str,  # noqa: F811
    postgres_url: str,  # noqa: F811
) -> AsyncIterator[Deployment]:
    topic = f"ops-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_broker, topic, PARTITIONS)
    db = SqlDatabase(postgres_url)
    try:
        await db.migrate()
        await SqlStateStore(db).put_items([make_item("i1", [1.0] * DIM, None, DIM, 0.0)])
    finally:
        await db.dispose()
    pg = urlsplit(postgres_url)
    assert pg.hostname is not None and pg.port is not None
    proxy = TcpProxy(pg.hostname, pg.port)
    proxy.start()
    proxied_url = postgres_url.replace(pg.netloc, f"{pg.username}@{proxy.address}")
    metrics_port = free_port()
    env = {
        "RECLOOP_STORAGE__URL": proxied_url,
        "RECLOOP_VECTORS__DIM": str(DIM),
        "RECLOOP_SPAM__ENABLED": "false",
        "RECLOOP_RATE_LIMITS__ENABLED": "false",
        # Implicit events wait in the buffers until the stop (or a restart's env) flushes.
        "RECLOOP_FEEDBACK__IMPLICIT_FLUSH_SECONDS": "3600",
        "RECLOOP_EVENT_LOG__KIND": "kafka",
        "RECLOOP_EVENT_LOG__SPOOL_PATH": str(tmp_path / "spool.db"),
        "RECLOOP_EVENT_LOG__KAFKA__BOOTSTRAP_SERVERS": kafka_broker,
        "RECLOOP_EVENT_LOG__KAFKA__TOPIC": topic,
        "RECLOOP_EVENT_LOG__KAFKA__GROUP_ID": f"{topic}-workers",
        "RECLOOP_EVENT_LOG__KAFKA__ENABLE_IDEMPOTENCE": "false",
        "RECLOOP_EVENT_LOG__KAFKA__SESSION_TIMEOUT_MS": "6000",
        "RECLOOP_EVENT_LOG__KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "RECLOOP_EVENT_LOG__KAFKA__REQUEST_TIMEOUT_MS": "8000",
        "RECLOOP_EVENT_LOG__WORKER_COMMIT_SECONDS": "0.2",
        "RECLOOP_EVENT_LOG__WORKER_METRICS_PORT": str(metrics_port),
    }
    kafka = KafkaConfig(bootstrap_servers=kafka_broker, topic=topic, enable_idempotence=False)
    worker = Worker(tmp_path, env, "worker")
    try:
        yield Deployment(worker, proxy, postgres_url, kafka, metrics_port)
    finally:
        worker.cleanup()
        proxy.stop()


def text(worker: Worker) -> str:
    return worker.log.read_text(errors="replace")


def events(kind: str, prefix: str, n: int) -> list[Event]:
    return [
        Event(f"{prefix}{k}", USERS[k % len(USERS)], "i1", kind, timestamp=1_700_000_000.0 + k)
        for k in range(n)
    ]


async def send(d: Deployment, batch: list[Event]) -> None:
    async with KafkaEventLog(d.kafka) as log:
        await log.append(batch)


def scrape(d: Deployment) -> Samples:
    r = httpx.get(f"{d.metrics_url}/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return samples(r.text)


def live(d: Deployment) -> httpx.Response:
    return httpx.get(f"{d.metrics_url}/health/live", timeout=30)


def wait_for(what: str, check: Callable[[], bool], d: Deployment, timeout: float = 60.0) -> None:
    """Until ``check()`` (a hang guard, not a timing test); fails with the worker's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert d.worker.proc is not None
        if d.worker.proc.poll() is not None:
            pytest.fail(f"worker exited with {d.worker.proc.returncode}:\n{text(d.worker)}")
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout}s:\n{text(d.worker)}")


def applied(d: Deployment, kind: str) -> float:
    return value(scrape(d), "recloop_worker_events_total", type=kind, status="applied") or 0.0


async def stored(d: Deployment) -> tuple[int, dict[str, int]]:
    """The stored positions' sum, and each user's events in the state."""
    db = SqlDatabase(d.postgres_url)
    try:
        store = SqlStateStore(db)
        positions = await store.get_positions()
        states = await store.get_users(USERS)
    finally:
        await db.dispose()
    return sum(positions.values()), {u: s.interactions + s.impressions for u, s in states.items()}


def exited_within(worker: Worker, timeout: float) -> int:
    assert worker.proc is not None
    try:
        return worker.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker still running {timeout}s later:\n{text(worker)}")


async def stuck_in_its_graceful_stop(d: Deployment) -> float:
    """Start, apply likes, buffer views, lose the storage, SIGTERM: the stop retries.
    Returns when the SIGTERM was sent (``time.monotonic()``)."""
    d.worker.start()
    d.worker.wait_assigned()
    await send(d, events("like", "a", EXPLICIT))
    wait_for("likes applied", lambda: applied(d, "like") == EXPLICIT, d)
    deadline = time.monotonic() + 60
    while (await stored(d))[0] != EXPLICIT:  # their positions too (the next checkpoint)
        assert time.monotonic() < deadline, text(d.worker)
        await asyncio.sleep(0.1)
    await send(d, events("view", "b", IMPLICIT))
    wait_for("views buffered", lambda: applied(d, "view") == IMPLICIT, d)
    samples = scrape(d)
    assert value(samples, "recloop_implicit_buffered") == IMPLICIT
    assert value(samples, "recloop_event_log_lag") == IMPLICIT  # taken, not committed
    d.proxy.cut()
    assert d.worker.proc is not None
    d.worker.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    wait_for(
        "the graceful stop retrying its storage calls",
        lambda: (
            "stopping gracefully" in (log := text(d.worker))
            and "failed (attempt 3)" in log.split("stopping gracefully", 1)[1]
        ),
        d,
    )
    # Still there: the stop cannot finish. Its metrics say so meanwhile.
    await asyncio.sleep(2.0)
    assert d.worker.proc.poll() is None, text(d.worker)
    samples = scrape(d)
    assert value(samples, "recloop_worker_stopping") == 1
    assert value(samples, "recloop_dependency_up", dependency="storage") == 0
    assert live(d).json()["stopping"] is True
    return signalled


async def restarted_everything_applied_once(d: Deployment) -> None:
    d.proxy.restore()
    d.worker.env["RECLOOP_FEEDBACK__IMPLICIT_FLUSH_SECONDS"] = "0.2"
    d.worker.start()  # the old member is dropped after its session timeout
    d.worker.wait_assigned()
    expected = {u: 0 for u in USERS}
    for e in events("like", "a", EXPLICIT) + events("view", "b", IMPLICIT):
        expected[e.user_id] += 1
    deadline = time.monotonic() + 120
    while (now := await stored(d)) != (EXPLICIT + IMPLICIT, expected):
        if time.monotonic() > deadline:
            pytest.fail(f"not applied exactly once: {now} != {expected}\n{text(d.worker)}")
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # settled: nothing applied twice later
    assert await stored(d) == (EXPLICIT + IMPLICIT, expected)
    # The views are read again and applied now: the forced exit had not applied them.
    samples = scrape(d)
    assert value(samples, "recloop_worker_events_total", type="view", status="applied") == IMPLICIT
    # Likes read again (none: their positions were stored) would be passed over.
    redelivered = value(samples, "recloop_worker_redelivered_total")
    assert redelivered == (applied(d, "like") or 0.0)
    assert d.worker.terminate() == 0, text(d.worker)


async def test_a_worker_serves_metrics_and_stops_gracefully(deployment: Deployment) -> None:
    d = deployment
    d.worker.env["RECLOOP_FEEDBACK__IMPLICIT_FLUSH_SECONDS"] = "0.2"
    d.worker.start()
    d.worker.wait_assigned()
    wait_for("metrics served", lambda: applied(d, "like") == 0, d)
    await send(d, events("like", "a", EXPLICIT))
    wait_for("likes counted", lambda: applied(d, "like") == EXPLICIT, d)
    await send(d, events("like", "a", 5))  # a client's retry: the same ids again
    await send(d, events("like", "c", 10))
    wait_for("more likes counted", lambda: applied(d, "like") == EXPLICIT + 10, d)
    wait_for(
        "duplicates counted",
        lambda: (
            value(scrape(d), "recloop_worker_events_total", type="like", status="duplicate") == 5
        ),
        d,
    )
    samples = scrape(d)
    assert value(samples, "recloop_worker_partitions") == PARTITIONS
    assert value(samples, "recloop_dependency_up", dependency="storage") == 1
    assert (value(samples, "recloop_event_loop_lag_seconds_count") or 0) >= 1  # its probe runs
    answer = live(d)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "stopping": False, "partitions": [0, 1]}
    # One SIGTERM: the graceful stop, as before.
    assert d.worker.terminate() == 0, text(d.worker)
    log = text(d.worker)
    assert "stopped: everything taken is applied and committed" in log
    assert "Traceback" not in log
    assert (await stored(d))[0] == EXPLICIT + 15


async def test_a_second_sigterm_ends_a_stuck_graceful_stop_nothing_lost(
    deployment: Deployment,
) -> None:
    d = deployment
    d.worker.env["RECLOOP_EVENT_LOG__WORKER_SHUTDOWN_SECONDS"] = "600"  # not the deadline
    await stuck_in_its_graceful_stop(d)
    assert d.worker.proc is not None
    d.worker.proc.send_signal(signal.SIGTERM)
    status = exited_within(d.worker, 15)
    assert status == SIGNAL_EXIT_BASE + signal.SIGTERM, text(d.worker)
    log = text(d.worker)
    assert f"exiting now, status {status}: SIGTERM during the graceful stop" in log
    assert "Abandoned:" in log
    await restarted_everything_applied_once(d)


async def test_a_graceful_stop_past_its_deadline_exits_nothing_lost(
    deployment: Deployment,
) -> None:
    d = deployment
    d.worker.env["RECLOOP_EVENT_LOG__WORKER_SHUTDOWN_SECONDS"] = str(DEADLINE)
    signalled = await stuck_in_its_graceful_stop(d)  # one SIGTERM only
    status = exited_within(d.worker, DEADLINE + 60)
    took = time.monotonic() - signalled
    assert status == DEADLINE_EXIT_STATUS, text(d.worker)
    assert took >= DEADLINE  # not before it; how long after: the machine's load
    log = text(d.worker)
    assert f"the graceful stop took longer than {DEADLINE}s" in log
    assert "Abandoned:" in log
    await restarted_everything_applied_once(d)


async def test_a_worker_waits_for_an_unreachable_broker_and_stops_on_sigterm(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    """Issue 16: no broker listens at the configured address. The worker neither exits
    nor prints a traceback: it says what it waits for, again and again with growing
    pauses, and a SIGTERM still stops it cleanly."""
    nobody = f"127.0.0.1:{free_port()}"
    env = {
        "RECLOOP_STORAGE__URL": postgres_url,
        "RECLOOP_VECTORS__DIM": str(DIM),
        "RECLOOP_LOGGING__FORMAT": "json",
        "RECLOOP_EVENT_LOG__KIND": "kafka",
        "RECLOOP_EVENT_LOG__SPOOL_PATH": str(tmp_path / "spool.db"),
        "RECLOOP_EVENT_LOG__KAFKA__BOOTSTRAP_SERVERS": nobody,
        "RECLOOP_EVENT_LOG__KAFKA__TOPIC": "nowhere",
    }
    worker = Worker(tmp_path, env, "worker")
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while text(worker).count("waiting for the Kafka broker") < 3:
            assert worker.proc is not None
            assert worker.proc.poll() is None, f"the worker exited:\n{text(worker)}"
            assert time.monotonic() < deadline, f"no waiting logged:\n{text(worker)}"
            await asyncio.sleep(0.2)
        assert worker.terminate() == 0
    finally:
        worker.cleanup()
    written = text(worker)
    assert "Traceback" not in written
    waits = [line for line in written.splitlines() if "waiting for the Kafka broker" in line]
    assert nobody in waits[0]
    assert "stopped" in written.splitlines()[-1]
