"""Retries (recloop.resilience) and circuit breakers, wired into the services and the API.

Failures come from fakes: the in-memory adapters with a method that fails a given
number of times, and a SQLite database whose fast lane is handed a failing call.
The real outages (Redis killed, PostgreSQL cut off) are in test_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import text
from tenacity import AsyncRetrying, RetryCallState

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore, TtlCache
from recloop.adapters.ratelimit import MemoryRateLimiter, shared_limiter
from recloop.adapters.sql import SqlDatabase
from recloop.core.breaker import CircuitBreaker
from recloop.core.errors import CircuitOpen, TransientError
from recloop.core.events import Event
from recloop.core.items import make_item
from recloop.core.preferences import UserState
from recloop.core.state import UserRows
from recloop.ports import StateChanges
from recloop.resilience import (
    FOREVER,
    READS,
    RetryCounts,
    RetryPolicy,
    retry_forever,
    retry_read,
)
from recloop.services.feedback import Processor, ProcessorConfig, event_log_writer
from recloop.services.limits import RateLimits
from recloop.services.preferences import PreferenceService
from recloop.services.vectors import ItemVectors
from tests.conftest import eventually, free_port, make_settings, start_app


class Flaky:
    """An async call that fails ``failures`` times with ``error``, then returns ``value``."""

    def __init__(self, failures: int, error: Exception, value: Any = "ok") -> None:
        self.failures = failures
        self.error = error
        self.value = value
        self.calls = 0

    async def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.value


# -- the policies --------------------------------------------------------------------


async def test_a_read_is_retried_on_a_transient_error_and_each_retry_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    read = Flaky(2, TransientError("storage", "ConnectionResetError: reset"))
    counts = RetryCounts()
    with caplog.at_level(logging.WARNING, logger="recloop.resilience"):
        assert await retry_read("get_users", read, ["u"], counts=counts) == "ok"
    assert read.calls == 3 and counts.snapshot() == {"get_users": 2}
    messages = [r.getMessage() for r in caplog.records if r.name == "recloop.resilience"]
    assert len(messages) == 2
    assert messages[0].startswith("get_users failed (attempt 1), retrying in 0.00s")
    assert messages[1].startswith("get_users failed (attempt 2), retrying in 0.")
    assert all(r.levelno == logging.WARNING for r in caplog.records)


async def test_a_read_gives_up_after_three_attempts_within_a_second() -> None:
    read = Flaky(10, TransientError("storage", "ConnectionRefusedError: refused"))
    counts = RetryCounts()
    started = time.monotonic()
    with pytest.raises(TransientError):
        await retry_read("get_items", read, counts=counts)
    assert read.calls == 3 and counts.get("get_items") == 2
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "error", [CircuitOpen("storage", 1.0), ValueError("a bug"), KeyError("x")], ids=repr
)
async def test_a_read_is_not_retried_on_other_errors(error: Exception) -> None:
    read = Flaky(1, error)
    counts = RetryCounts()
    with pytest.raises(type(error)):
        await retry_read("get_users", read, counts=counts)
    assert read.calls == 1 and counts.snapshot() == {}


async def test_retry_forever_retries_every_error_until_it_succeeds() -> None:
    work = Flaky(5, RuntimeError("database is down"))
    seen: list[BaseException] = []
    counts = RetryCounts()
    forever = RetryPolicy(None, 0.001, 0.004, 0.001)
    result = await retry_forever(
        "state_commit", work, counts=counts, on_error=seen.append, policy=forever
    )
    assert result == "ok" and work.calls == 6
    assert len(seen) == 5 and counts.get("state_commit") == 5


async def test_retry_forever_does_not_retry_a_cancellation() -> None:
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)

    task = asyncio.create_task(retry_forever("state_commit", slow))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


def state(attempt: int) -> RetryCallState:
    s = RetryCallState(AsyncRetrying(), None, (), {})
    s.attempt_number = attempt
    return s


@pytest.mark.parametrize("policy", [READS, FOREVER], ids=["READS", "FOREVER"])
def test_waits_grow_exponentially_are_jittered_and_capped(policy: RetryPolicy) -> None:
    for attempt in range(1, 40):
        base = min(policy.initial_seconds * 2 ** (attempt - 1), policy.max_seconds)
        base = min(base, policy.max_seconds - policy.jitter_seconds)
        waits = {policy.wait(state(attempt)) for _ in range(50)}
        assert all(base <= w <= base + policy.jitter_seconds for w in waits)
        assert max(waits) <= policy.max_seconds
        assert len(waits) > 1  # jittered, at the cap too
    assert READS.retries == 2 and FOREVER.retries is None


def test_a_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(-1, 0.1, 1.0, 0.1)
    with pytest.raises(ValueError, match="jitter_seconds"):
        RetryPolicy(1, 0.1, 1.0, 2.0)


# -- in the services -------------------------------------------------------------------


class FlakyStore(InMemoryStateStore):
    """The in-memory store, whose methods named in ``failures`` fail that many times more."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: dict[str, int] = {}
        self.probe: Callable[[], Any] | None = None
        self.probed: list[Any] = []

    def _fail(self, method: str) -> None:
        left = self.failures.get(method, 0)
        if left:
            self.failures[method] = left - 1
            if self.probe is not None:
                self.probed.append(self.probe())
            raise TransientError("storage", f"ConnectionResetError in {method}")

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        self._fail("get_users")
        return await super().get_users(user_ids)

    async def commit(self, changes: StateChanges) -> None:
        self._fail("commit")
        await super().commit(changes)


class LostAnswerLog(InMemoryEventLog):
    """The in-memory log; the next ``lose`` appends commit, then fail as if the
    connection dropped before the answer."""

    lose = 0

    async def append(self, events: Sequence[Event]) -> list[int | None]:
        offsets = await super().append(events)
        if self.lose:
            self.lose -= 1
            raise TransientError("storage", "ConnectionError: connection lost")
        return offsets


class LostCommitStore(InMemoryStateStore):
    """The in-memory store; the next ``lose`` commits go through, then fail as if the
    connection dropped before the answer."""

    lose = 0

    async def commit(self, changes: StateChanges) -> None:
        await super().commit(changes)
        if self.lose and (changes.users or changes.journal):
            self.lose -= 1
            raise TransientError("storage", "ConnectionError: connection lost")


def like(event_id: str, user_id: str) -> Event:
    return Event(
        event_id=event_id, user_id=user_id, item_id="i", type="like", timestamp=time.time()
    )


async def test_preferences_are_read_through_a_blip_and_503_on_an_outage() -> None:
    store = FlakyStore()
    await store.commit(StateChanges(users=UserRows.of([UserState.new("u", 8)])))
    retries = RetryCounts()
    service = PreferenceService(store, TtlCache(100, 60.0), retries)
    store.failures["get_users"] = 2
    assert (await service.get("u")).user_id == "u"
    assert retries.snapshot() == {"get_users": 2}
    store.failures["get_users"] = 3
    with pytest.raises(TransientError):
        await PreferenceService(store, TtlCache(100, 60.0), retries).get("u")


async def processor_over(
    store: InMemoryStateStore, log: InMemoryEventLog, tmp_path: Path, retries: RetryCounts
) -> Processor:
    await store.put_items([make_item("i", [1.0] + [0.0] * 7, None, 8, time.time())])
    config = ProcessorConfig.of(make_settings(tmp_path, "memory"))
    vectors = ItemVectors(store, 100, retries)
    processor = Processor(store, TtlCache(100, 60.0), vectors, config, retries=retries)
    await processor.start(log)
    return processor


async def settle(processor: Processor) -> None:
    async def applied() -> bool:
        return processor.tracker.in_flight == 0 and processor.explicit_queue_depth == 0

    await eventually(applied)


async def test_the_processor_retries_a_commit_until_it_succeeds(tmp_path: Path) -> None:
    store, log, retries = FlakyStore(), InMemoryEventLog(), RetryCounts()
    processor = await processor_over(store, log, tmp_path, retries)
    writer = event_log_writer(log, processor, 1000)
    writer.start()
    try:
        store.failures["commit"] = 3
        store.probe = lambda: processor.calls.failing
        assert await writer.submit([like("e1", "u")]) == [1]
        await settle(processor)
        assert (await store.get_users(["u"]))["u"].events_applied == 1
        assert retries.get("state_commit") == 3
        assert store.probed == [0, 1, 1]  # failing from the first failure on ...
        assert processor.calls.failing == 0  # ... until the commit went through
        assert "TransientError" in (processor.calls.last_error or "")
    finally:
        await writer.stop()
        await processor.stop()


async def test_events_of_an_append_whose_answer_was_lost_are_applied_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, log, retries = FlakyStore(), LostAnswerLog(), RetryCounts()
    processor = await processor_over(store, log, tmp_path, retries)
    writer = event_log_writer(log, processor, 1000)
    writer.start()
    try:
        log.lose = 1
        with pytest.raises(TransientError):  # the client is told 503 ...
            await writer.submit([like("e1", "u"), like("e2", "v")])
        assert await log.last_offset() == 2  # ... though the events were logged
        # The client sends them again, with the same ids: duplicates now, but applied.
        with caplog.at_level(logging.WARNING, logger="recloop.services.feedback"):
            again = await writer.submit([like("e1", "u"), like("e2", "v"), like("e3", "w")])
        assert again == [None, None, 3]
        assert any("2 events of a failed append" in r.getMessage() for r in caplog.records)
        await settle(processor)
        users = await store.get_users(["u", "v", "w"])
        assert [users[u].events_applied for u in ("u", "v", "w")] == [1, 1, 1]
    finally:
        await writer.stop()
        await processor.stop()


async def test_a_state_commit_whose_answer_was_lost_is_not_counted_twice(
    tmp_path: Path,
) -> None:
    """The retry of a commit that went through must not add its optimizer counts again:
    the same events through a store that loses the first answer end with the same counts
    as through one that does not."""

    async def counts_after(store: LostCommitStore) -> list[tuple[str, str, Any]]:
        log, retries = InMemoryEventLog(), RetryCounts()
        processor = await processor_over(store, log, tmp_path, retries)
        writer = event_log_writer(log, processor, 1000)
        writer.start()
        try:
            events = [
                msgspec.structs.replace(
                    like(f"e{n}", f"u{n % 3}"), attribution={"algorithm": "popularity"}
                )
                for n in range(6)
            ]
            await writer.submit(events)
            await settle(processor)
            assert store.lose == 0
            if retries.get("state_commit"):
                users = await store.get_users(["u0", "u1", "u2"])
                assert sorted(u.events_applied for u in users.values()) == [2, 2, 2]
        finally:
            await writer.stop()
            await processor.stop()
        counted = await store.get_algorithm_counts(0.0)
        return sorted((c.segment, c.algorithm, c.counts) for c in counted)

    lossless = await counts_after(LostCommitStore())
    lossy_store = LostCommitStore()
    lossy_store.lose = 1
    assert lossless  # the events were attributed: there are counts to double
    assert await counts_after(lossy_store) == lossless


# -- the breakers in the adapters ---------------------------------------------------------


async def test_the_storage_breaker_counts_unreachable_calls_only(tmp_path: Path) -> None:
    breaker = CircuitBreaker("storage", failure_threshold=2, open_seconds=60.0)
    db = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", breaker=breaker)

    def unreachable(_: Any) -> None:
        raise ConnectionResetError("reset by peer")

    def own_error(_: Any) -> None:
        raise ValueError("the database answered: no")

    try:
        with pytest.raises(TransientError, match="storage: ConnectionResetError") as caught:
            await db.run_read(unreachable)
        assert isinstance(caught.value.__cause__, ConnectionResetError)
        assert breaker.failures == 1
        with pytest.raises(ValueError):
            await db.run_write(own_error)
        assert breaker.failures == 0  # it answered: a success
        for _ in range(2):
            with pytest.raises(TransientError):
                await db.run_read(unreachable)
        assert breaker.state == "open"
        for call in (db.ping(), db.run_read(lambda c: 1)):
            with pytest.raises(CircuitOpen, match="storage is unavailable"):
                await call
    finally:
        await db.dispose()


async def test_sqlite_locked_past_its_busy_timeout_is_a_transient_error(tmp_path: Path) -> None:
    """A lock held elsewhere is no fault of the data: retried, never quarantined."""
    db = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")

    def locked(_: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    try:
        with pytest.raises(TransientError, match="storage: OperationalError"):
            await db.run_write(locked)
        assert db.breaker.failures == 1
    finally:
        await db.dispose()


async def test_a_write_cancelled_midway_leaves_sqlite_as_it_found_it(tmp_path: Path) -> None:
    """A background loop stopped while its write waits behind another, or is on its way to
    the driver: its transaction is rolled back (or committed whole) and SQLite's write
    lock is free at once. (Through SQLAlchemy's async layer alone, a few of these
    cancellations left the connection in its transaction, holding the lock for good.)"""

    def slow(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (0)")
        time.sleep(0.003)

    async def cancelled_write(db: SqlDatabase) -> None:
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t VALUES (:a)"), [{"a": 1}] * 50)

    for attempt in range(60):
        path = tmp_path / f"{attempt}.db"
        db = SqlDatabase(f"sqlite+aiosqlite:///{path}")
        try:
            async with db.write() as conn:
                await conn.execute(text("CREATE TABLE t (a INTEGER)"))
            first = asyncio.create_task(db.run_write(slow))
            await asyncio.sleep(0.001)
            write = asyncio.create_task(cancelled_write(db))
            await first
            await asyncio.sleep((attempt % 10) * 0.0001)
            write.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await write
            other = sqlite3.connect(path, timeout=2.0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # "database is locked" after 2 s if held
                rows = dict(other.execute("SELECT a, count(*) FROM t GROUP BY a").fetchall())
                other.execute("ROLLBACK")
            finally:
                other.close()
            assert rows[0] == 1
            assert rows.get(1, 0) in (0, 50), rows  # the cancelled write: whole or not there
        finally:
            await db.dispose()


async def test_an_unreachable_postgresql_is_a_transient_error() -> None:
    db = SqlDatabase(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere")
    try:
        with pytest.raises(TransientError):
            await db.ping()
        assert db.breaker.failures == 1
    finally:
        await db.dispose()


async def test_rate_limits_stop_calling_redis_once_the_breaker_opens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker = CircuitBreaker("rate_limits", failure_threshold=2, open_seconds=60.0)
    dead = f"async+redis://127.0.0.1:{free_port()}"
    spec = {"explicit": "3/minute"}
    limits = RateLimits(MemoryRateLimiter(spec), shared_limiter(spec, dead, "recloop"), breaker)
    try:
        with caplog.at_level(logging.WARNING, logger="recloop.services.limits"):
            admitted = [(await limits.admit("explicit", "u", 1)).admitted for _ in range(6)]
        assert admitted == [1, 1, 1, 0, 0, 0]  # enforced in process all along
        assert breaker.state == "open" and breaker.failures == 2  # not tried once open
        assert limits.degraded and (limits.last_error or "").startswith("StorageError")
        assert sum("counting in process" in r.getMessage() for r in caplog.records) == 1
    finally:
        await limits.close()


# -- through the API ------------------------------------------------------------------------


async def test_an_open_storage_breaker_is_a_503_and_shows_in_health_and_metrics(
    tmp_path: Path,
) -> None:
    # open for 6 s: the checks below must all see it open, on however slow a machine (at
    # 2 s, a loaded machine's stall let the breaker's trial call through first)
    settings = make_settings(
        tmp_path, "sqlite", resilience={"breaker_failures": 2, "breaker_open_seconds": 6.0}
    )
    # "u" is stored before this server starts: a read of them needs the store (a user
    # the server has never stored is unknown without it)
    app, close = await start_app(settings)
    try:
        r = await app.client.post(
            "/feedback", json={"user_id": "u", "item_id": "i", "type": "like"}
        )
        assert r.status_code == 202
        await app.container.processor.flush_implicit()
        await app.container.processor.checkpoint()
    finally:
        await close()
    app, close = await start_app(settings)
    try:
        client = app.client
        body = (await client.get("/health")).json()
        assert body["breakers"] == {
            "storage": {"state": "closed", "failures": 0, "opened_at": None}
        }
        db = app.container.db
        assert db is not None

        def unreachable(_: Any) -> None:
            raise ConnectionRefusedError("refused")

        breaker = db.breaker
        # two calls that cannot reach the database open it; a background task's call that
        # succeeds between them clears the first (the threshold counts failures with no
        # success between), so on a loaded machine it may take a few more
        for _ in range(50):
            with pytest.raises(TransientError):
                await db.run_read(unreachable)
            if breaker.state == "open":
                break
        assert breaker.state == "open" and breaker.failures >= 2
        r = await client.get("/users/u/preferences")
        assert r.status_code == 503 and 1 <= int(r.headers["retry-after"]) <= 6
        assert "circuit open" in r.json()["detail"]
        r = await client.post("/feedback", json={"user_id": "u", "item_id": "i", "type": "like"})
        assert r.status_code == 503
        r = await client.get("/health")
        body = r.json()
        assert r.status_code == 503 and body["components"]["storage"]["status"] == "down"
        assert body["breakers"]["storage"]["state"] == "open"
        assert body["breakers"]["storage"]["failures"] == breaker.failures
        assert body["breakers"]["storage"]["opened_at"] == pytest.approx(time.time(), abs=5)
        assert 'recloop_breaker_open{dependency="storage"} 1.0' in await metrics(client)

        async def recovered() -> bool:  # the health check's ping is the trial call
            return (await client.get("/health")).status_code == 200

        await eventually(recovered, within=20.0, interval=0.05)
        assert (await client.get("/health")).json()["breakers"]["storage"]["state"] == "closed"
        text = await metrics(client)
        assert 'recloop_breaker_open{dependency="storage"} 0.0' in text
    finally:
        await close()


async def metrics(client: Any) -> str:
    r = await client.get("http://recloop/metrics")
    assert r.status_code == 200
    return str(r.text)


async def test_retries_are_counted_in_metrics(tmp_path: Path) -> None:
    app, close = await start_app(make_settings(tmp_path, "memory"))
    try:
        app.container.retries.add("get_users", 2)
        assert 'recloop_retries_total{operation="get_users"} 2.0' in await metrics(app.client)
    finally:
        await close()
