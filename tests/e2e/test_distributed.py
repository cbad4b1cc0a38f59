"""The distributed deployment end to end: one API, two workers, Kafka (Tansu), PostgreSQL, Redis.

A worker is killed with SIGKILL mid-stream and restarted; afterwards every
accepted event is applied exactly once, preference vectors equal a
single-process replay of each user's events, and no partition's stored
position ever went backwards.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest

from recloop.adapters.sql import SqlDatabase, SqlStateStore
from recloop.config import load_settings
from recloop.core.events import is_explicit
from recloop.core.preferences import UserState
from recloop.services.feedback import ProcessorConfig
from tests.e2e.conftest import Server, Worker, wait_balanced
from tests.kafka_broker import create_topic, kafka_broker, proxied_kafka  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401
from tests.redis import redis_url  # noqa: F401
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

USERS = 2_000
EXACT_USERS = 1_500
"""Users sent explicit events only: each applies one by one, so a replay is exact. The
rest also send implicit events, summed per flush (their counts are checked)."""
ITEMS = 50
EVENTS = 20_000
BATCH = 100
SENDERS = 4
PARTITIONS = 4
DIM = 8
PACE = 0.2
"""Seconds between one sender's batches: the stream lasts ~10 s, the kill lands in it."""
EXPLICIT = ["like", "dislike", "rating", "share", "save"]
IMPLICIT = ["view", "click", "impression", "dwell"]


def _env(tmp_path: Path, pg: str, redis: str, bootstrap: str, topic: str) -> dict[str, str]:
    return {
        "RECLOOP_STORAGE__URL": pg,
        "RECLOOP_VECTORS__DIM": str(DIM),
        "RECLOOP_SPAM__ENABLED": "false",
        "RECLOOP_RATE_LIMITS__ENABLED": "false",
        "RECLOOP_FEEDBACK__IMPLICIT_FLUSH_SECONDS": "0.5",
        "RECLOOP_CACHE__SHARED_URL": redis,
        "RECLOOP_EVENT_LOG__KIND": "kafka",
        "RECLOOP_EVENT_LOG__SPOOL_PATH": str(tmp_path / "spool.db"),
        "RECLOOP_EVENT_LOG__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "RECLOOP_EVENT_LOG__KAFKA__TOPIC": topic,
        "RECLOOP_EVENT_LOG__KAFKA__GROUP_ID": f"{topic}-workers",
        "RECLOOP_EVENT_LOG__KAFKA__ENABLE_IDEMPOTENCE": "false",
        "RECLOOP_EVENT_LOG__KAFKA__SESSION_TIMEOUT_MS": "6000",
        "RECLOOP_EVENT_LOG__KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "RECLOOP_EVENT_LOG__WORKER_COMMIT_SECONDS": "0.2",
        "RECLOOP_EVENT_LOG__SEND_TIMEOUT_SECONDS": "1",
        "RECLOOP_EVENT_LOG__KAFKA__REQUEST_TIMEOUT_MS": "8000",
    }


def _events(rng: random.Random, sender: int) -> Iterator[list[dict[str, Any]]]:
    """Batches of one sender; each user belongs to one sender, so its order is the send order."""
    users = [u for u in range(USERS) if u % SENDERS == sender]
    for b in range(EVENTS // SENDERS // BATCH):
        batch = []
        for k in range(BATCH):
            user = rng.choice(users)
            kinds = EXPLICIT if user < EXACT_USERS else EXPLICIT + IMPLICIT
            kind = rng.choice(kinds)
            event: dict[str, Any] = {
                "event_id": f"s{sender}-b{b}-{k}",
                "user_id": f"u{user}",
                "item_id": f"i{rng.randrange(ITEMS)}",
                "type": kind,
                "timestamp": 1_700_000_000 + b + k / 1000,
            }
            if kind == "rating":
                event["value"] = rng.randint(1, 5)
            elif kind == "dwell":
                event["value"] = rng.uniform(1, 120)
            batch.append(event)
        yield batch


class PositionWatch:
    """Samples the stored partition positions while the test runs; records any step back."""

    def __init__(self, url: str) -> None:
        self._dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        self.backwards: list[tuple[str, int, int]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> PositionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        last: dict[str, int] = {}
        query = (
            "SELECT consumer, \"offset\" FROM consumer_offsets WHERE consumer LIKE 'partition:%'"
        )
        conn = await asyncpg.connect(self._dsn)
        try:
            while not self._stop.is_set():
                for consumer, offset in await conn.fetch(query):
                    if offset < last.get(consumer, 0):
                        self.backwards.append((consumer, last[consumer], offset))
                    last[consumer] = max(offset, last.get(consumer, 0))
                self.samples += 1
                await asyncio.sleep(0.05)
        finally:
            await conn.close()


async def _stored_states(url: str, users: list[str]) -> dict[str, UserState]:
    db = SqlDatabase(url)
    try:
        return await SqlStateStore(db).get_users(users)
    finally:
        await db.dispose()


def _replay(sent: list[dict[str, Any]], vectors: dict[str, np.ndarray]) -> dict[str, UserState]:
    """The same events applied in one process, one by one, in each user's send order."""
    config = ProcessorConfig.of(load_settings(None, vectors={"dim": DIM}))
    states: dict[str, UserState] = {}
    for n, e in enumerate(sent, start=1):
        state = states.setdefault(e["user_id"], UserState.new(e["user_id"], DIM))
        signal = config.signals.signal(e["type"], e.get("value"))
        state.apply_explicit(n, signal, vectors[e["item_id"]], e["timestamp"], config.rate, 0.0)
    return states


class Disruption:
    """What happens to the deployment a third of the way into the stream, and undone at two
    thirds; ``check`` runs (in the event loop) while it lasts."""

    def begin(self, api: Server, workers: list[Worker]) -> None: ...

    async def check(self, client: httpx.AsyncClient) -> None: ...

    def end(self, api: Server, workers: list[Worker]) -> None: ...


class KillWorker(Disruption):
    def begin(self, api: Server, workers: list[Worker]) -> None:
        # Mid-stream: the worker owns partitions and has applied some of them.
        assert workers[0].partitions()
        workers[0].kill()

    def end(self, api: Server, workers: list[Worker]) -> None:
        workers[0].start()


class CutBroker(Disruption):
    """Kafka unreachable for everyone: the API spools, the workers wait."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.spooled = 0

    def begin(self, api: Server, workers: list[Worker]) -> None:
        self.proxy.cut()

    async def check(self, client: httpx.AsyncClient) -> None:
        health = (await client.get("/health")).json()
        log = health["components"]["event_log"]
        if log["detail"]["spooled"]:
            assert health["status"] == "degraded" and log["status"] == "degraded"
            self.spooled = max(self.spooled, log["detail"]["spooled"])

    def end(self, api: Server, workers: list[Worker]) -> None:
        self.proxy.restore()


async def test_sigkill_a_worker_every_event_applied_once(
    tmp_path: Path,
    kafka_broker: str,  # noqa: F811
    postgres_url: str,  # noqa: F811
    redis_url: str,  # noqa: F811
) -> None:
    await _scenario(tmp_path, kafka_broker, postgres_url, redis_url, KillWorker())


@pytest.fixture(scope="module")
def proxy(proxied_kafka: TcpProxy) -> TcpProxy:  # noqa: F811
    return proxied_kafka


async def test_broker_away_for_a_while_api_spools_nothing_lost(
    tmp_path: Path,
    proxy: TcpProxy,
    postgres_url: str,  # noqa: F811
    redis_url: str,  # noqa: F811
) -> None:
    cut = CutBroker(proxy)
    await _scenario(tmp_path, proxy.address, postgres_url, redis_url, cut)
    assert cut.spooled > 0  # the API did spool, and reported it


async def _scenario(
    tmp_path: Path, bootstrap: str, pg: str, redis: str, disruption: Disruption
) -> None:
    topic = f"e2e-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, PARTITIONS)
    env = _env(tmp_path, pg, redis, bootstrap, topic)
    api = Server(tmp_path, env)
    workers = [Worker(tmp_path, env, f"w{i}") for i in range(2)]
    try:
        api.start()
        for w in workers:
            w.start()
        rng = random.Random(7)
        item_vectors = {f"i{i}": [rng.gauss(0, 1) for _ in range(DIM)] for i in range(ITEMS)}
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            r = await client.post(
                "/items",
                json={"items": [{"item_id": k, "vector": v} for k, v in item_vectors.items()]},
            )
            assert r.is_success, r.text
            await asyncio.to_thread(wait_balanced, workers, PARTITIONS)
            with PositionWatch(pg) as watch:
                sent: dict[int, list[dict[str, Any]]] = defaultdict(list)
                batches = {s: list(_events(random.Random(s), s)) for s in range(SENDERS)}
                disrupted = asyncio.Event()

                async def send(sender: int) -> None:
                    for n, batch in enumerate(batches[sender]):
                        r = await client.post("/feedback", json={"events": batch})
                        assert r.status_code == 202, r.text
                        assert r.json()["accepted"] == len(batch)
                        sent[sender].extend(batch)
                        if sender == 0 and n == len(batches[0]) // 3:
                            disruption.begin(api, workers)
                            disrupted.set()
                        if sender == 0 and n == len(batches[0]) * 2 // 3:
                            disruption.end(api, workers)
                            disrupted.clear()
                        if sender == 0 and disrupted.is_set():
                            await disruption.check(client)
                        await asyncio.sleep(PACE)

                await asyncio.gather(*(send(s) for s in range(SENDERS)))
                # A client's retries: the same events again, which must not apply twice.
                for batch in batches[1][:5]:
                    r = await client.post("/feedback", json={"events": batch})
                    assert r.status_code == 202, r.text
                everything = [e for s in range(SENDERS) for e in sent[s]]
                per_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for e in everything:
                    per_user[e["user_id"]].append(e)
                users = sorted(per_user)
                deadline = time.monotonic() + 120
                while True:
                    states = await _stored_states(pg, users)
                    applied = {u: s.interactions + s.impressions for u, s in states.items()}
                    if all(applied.get(u) == len(per_user[u]) for u in users):
                        break
                    if time.monotonic() > deadline:
                        short = {u: (applied.get(u), len(per_user[u])) for u in users}
                        wrong = {u: v for u, v in short.items() if v[0] != v[1]}
                        sample = list(wrong.items())[:5]
                        pytest.fail(f"{len(wrong)} users not applied exactly once: {sample}")
                    await asyncio.sleep(0.5)
                # Settled: nothing more arrives later (a duplicate applied late would show).
                await asyncio.sleep(2.0)
                states = await _stored_states(pg, users)
        assert watch.samples > 10
        assert watch.backwards == []
        for u in users:
            s = states[u]
            assert s.interactions + s.impressions == len(per_user[u]), u
            assert s.events_skipped == 0
        exact = [e for e in everything if int(e["user_id"][1:]) < EXACT_USERS]
        assert all(is_explicit(e["type"]) for e in exact)
        vectors = {k: np.asarray(v, dtype=np.float64) for k, v in item_vectors.items()}
        stored_items = await _item_vectors(pg, list(vectors))
        replayed = _replay(exact, stored_items)
        for u, expected in replayed.items():
            assert states[u].events_applied == expected.events_applied, u
            np.testing.assert_allclose(states[u].vector, expected.vector, rtol=0, atol=1e-9)
        for w in workers:
            # A worker restarted late in the scenario may still be starting (imports take
            # seconds here): a SIGTERM before it handles signals would kill it outright.
            await asyncio.to_thread(w.wait_assigned)
            assert w.terminate() == 0, w.log.read_text()[-3000:]
            assert "Traceback" not in w.log.read_text()
        assert "Traceback" not in api.log.read_text()
    finally:
        for proc in (api, *workers):
            proc.cleanup()


async def _item_vectors(url: str, item_ids: list[str]) -> dict[str, np.ndarray]:
    db = SqlDatabase(url)
    try:
        items = await SqlStateStore(db).get_items(item_ids)
    finally:
        await db.dispose()
    return {k: item.vector for k, item in items.items()}
