"""FeedbackBuffer and AsyncFeedbackBuffer against a real server that goes away.

Every test counts what the server logged (the users' exports list each logged event
with its ``event_id``) against what ``track`` returned: nothing lost, nothing twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from client_testing import ADMIN_KEY, Server, free_port, logged_event_ids
from recloop_client import (
    AsyncFeedbackBuffer,
    BufferFull,
    Client,
    EventOutcome,
    FeedbackBuffer,
    RecloopError,
    new_event_id,
)
from recloop_client._spool import Spool

FAST_RETRIES: dict[str, Any] = {"backoff_base": 0.05, "backoff_max": 0.5}


def users(tag: str, n: int) -> list[str]:
    return [f"{tag}-u{k}" for k in range(n)]


def wait_until(check: Any, within: float = 120.0) -> None:
    """Until ``check()``; fail after ``within`` s (a hang guard, not a timing test)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        time.sleep(0.02)


def dead_url() -> str:
    """A URL where nothing listens: every request is refused."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_server_gone_mid_stream_loses_and_duplicates_nothing(
    server: Server, client: Client, tmp_path: Path, sig: signal.Signals
) -> None:
    who = users(f"stream-{sig.name}", 200)  # 10 events each: no user looks like a bot
    tracked: list[str] = []
    buffer = FeedbackBuffer(
        server.root,
        api_key=ADMIN_KEY,
        max_batch=50,
        flush_interval=0.02,
        max_queue=100_000,
        max_attempts=1_000,  # outlasts the restart; were it spent, the spool would keep them
        spool_path=tmp_path / "spool.jsonl",
        close_at_exit=False,
        **FAST_RETRIES,
    )

    def produce() -> None:
        for n in range(2_000):
            tracked.append(buffer.track(who[n % len(who)], f"stream-i{n % 7}", "view"))
            if n % 10 == 9:
                time.sleep(0.005)  # a stream of a second or more: it goes on through the outage

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_until(lambda: buffer.stats.accepted >= 400)
        server.kill(sig)  # mid-stream: batches in flight, more being tracked
        time.sleep(0.5)
        server.start()
        producer.join(120)
        assert not producer.is_alive()
        assert buffer.flush(timeout=120)
    finally:
        producer.join(120)
        buffer.close()

    assert buffer.stats.retries > 0  # the outage was seen
    assert buffer.stats.spooled == 0
    assert len(tracked) == 2_000
    assert sorted(logged_event_ids(client, who)) == sorted(tracked)
    assert buffer.stats.accepted + buffer.stats.duplicates >= 2_000


def test_spool_when_retries_are_spent_and_replay_on_next_start(
    server: Server, client: Client, tmp_path: Path
) -> None:
    who = users("spool", 50)
    spool = tmp_path / "spool.jsonl"
    first = FeedbackBuffer(
        dead_url(),  # the server is away for longer than the retries last
        max_batch=40,
        max_attempts=2,
        spool_path=spool,
        close_at_exit=False,
        **FAST_RETRIES,
    )
    tracked = [first.track(who[n % 50], "spool-i1", "click") for n in range(200)]
    assert first.flush(timeout=60)
    first.close()
    assert Spool(spool).pending() == 200  # all on disk, none twice
    assert first.stats.accepted == 0 and first.stats.retries > 0
    tracked_by = time.time()

    time.sleep(1.5)  # a later start: the events must keep the time they were tracked
    second = FeedbackBuffer(
        server.root, api_key=ADMIN_KEY, spool_path=spool, close_at_exit=False, **FAST_RETRIES
    )
    assert second.flush(timeout=60)
    second.close()
    assert second.stats.replayed == 200
    assert Spool(spool).pending() == 0
    assert sorted(logged_event_ids(client, who)) == sorted(tracked)
    logged = [e for u in who for e in client.export_user(u).events]
    assert max(e["timestamp"] for e in logged) <= tracked_by


def test_burst_over_the_queue_blocks_then_raises_and_keeps_what_it_took(
    server: Server, client: Client, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    buffer = FeedbackBuffer(
        dead_url(),
        max_batch=10,
        max_queue=100,
        full_timeout=0.2,
        max_attempts=1_000,
        spool_path=spool,
        close_at_exit=False,
        **FAST_RETRIES,
    )
    tracked: list[str] = []
    with pytest.raises(BufferFull):
        for n in range(1_000):
            started = time.monotonic()
            tracked.append(buffer.track(f"burst-u{n % 10}", "burst-i1", "view", event_id=f"b-{n}"))
    waited = time.monotonic() - started
    assert waited >= 0.2  # it waited for room before giving up
    assert 100 <= len(tracked) <= 110  # the queue, and the batch being retried
    assert len(tracked) - buffer.queued <= 10  # at most one batch out of the queue

    buffer.close(grace=0.5)  # the server never came: everything taken goes to the spool
    assert Spool(spool).pending() == len(tracked)
    with FeedbackBuffer(server.root, api_key=ADMIN_KEY, spool_path=spool, close_at_exit=False):
        pass  # replays at start, flushes at exit
    logged = logged_event_ids(client, users("burst", 10))
    assert sorted(logged) == sorted(tracked)
    assert f"b-{len(tracked)}" not in logged  # the refused event: the caller was told


def test_burst_over_the_queue_spools_without_waiting(
    server: Server, client: Client, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    buffer = FeedbackBuffer(
        dead_url(),
        max_batch=10,
        max_queue=50,
        when_full="spool",
        max_attempts=1_000,
        spool_path=spool,
        close_at_exit=False,
        **FAST_RETRIES,
    )
    tracked = [buffer.track(f"sburst-u{n % 60}", "sburst-i1", "view") for n in range(600)]
    assert 40 <= buffer.queued <= 50
    assert buffer.stats.spooled >= 600 - 60
    buffer.close(grace=0.5)
    assert Spool(spool).pending() == 600

    with FeedbackBuffer(server.root, api_key=ADMIN_KEY, spool_path=spool, close_at_exit=False):
        pass
    assert sorted(logged_event_ids(client, users("sburst", 60))) == sorted(tracked)


def test_rate_limited_events_of_a_batch_are_sent_again(
    server: Server, client: Client, tmp_path: Path
) -> None:
    # The server takes 20 implicit events a second per user: of 60 in one batch, 40 are
    # refused as rate_limited and must be sent again. (Their timestamps are a minute of
    # history, 0.2 s apart: the guard would block a user with 60 in one second.)
    start = time.time() - 60
    with FeedbackBuffer(
        server.root,
        api_key=ADMIN_KEY,
        flush_interval=0.05,
        max_attempts=30,
        backoff_base=0.2,
        backoff_max=1.0,
        spool_path=tmp_path / "spool.jsonl",
        close_at_exit=False,
    ) as buffer:
        tracked = [
            buffer.track("rl-batch-u1", "rl-batch-i1", "view", timestamp=start + n * 0.2)
            for n in range(60)
        ]
    assert buffer.stats.retries >= 1
    assert buffer.stats.accepted == 60
    assert buffer.stats.spooled == 0
    assert sorted(logged_event_ids(client, ["rl-batch-u1"])) == sorted(tracked)


def test_refused_events_go_to_on_rejected(server: Server, client: Client, tmp_path: Path) -> None:
    client.feedback("rej-blocked", "rej-i1", "view")
    client.block_user("rej-blocked", reason="client test")
    refused: list[tuple[dict[str, Any], EventOutcome]] = []
    with FeedbackBuffer(
        server.root,
        api_key=ADMIN_KEY,
        spool_path=tmp_path / "spool.jsonl",
        on_rejected=refused.extend,
        close_at_exit=False,
    ) as buffer:
        good = buffer.track("rej-u1", "rej-i1", "view")
        bad = buffer.track("rej-u1", "rej-i1", "rating", 9)
        blocked = buffer.track("rej-blocked", "rej-i1", "view")
    by_id = {event["event_id"]: outcome for event, outcome in refused}
    assert set(by_id) == {bad, blocked}
    assert by_id[bad].status == "rejected"
    assert by_id[bad].error is not None and by_id[bad].error.field == "value"
    assert by_id[blocked].status == "blocked"
    assert buffer.stats.rejected == 2
    assert logged_event_ids(client, ["rej-u1"]) == [good]


def test_a_body_too_large_is_split_and_bad_json_refused_at_track(
    server: Server, client: Client, tmp_path: Path
) -> None:
    who = users("large", 100)
    with FeedbackBuffer(
        server.root,
        api_key=ADMIN_KEY,
        flush_interval=3_600,  # one flush: one batch of 1,000 events, about 5 MB
        spool_path=tmp_path / "spool.jsonl",
        close_at_exit=False,
    ) as buffer:
        with pytest.raises(ValueError, match="not valid JSON"):
            buffer.track("large-u0", "large-i1", "dwell", float("nan"))
        with pytest.raises(TypeError, match="not valid JSON"):
            buffer.track("large-u0", "large-i1", "view", context={"at": object()})
        tracked = [
            buffer.track(who[n % 100], "large-i1", "view", text="x" * 5_000) for n in range(1_000)
        ]
    assert buffer.stats.splits >= 1  # the server's 413 (over 2 MiB), then halves that fit
    assert buffer.stats.accepted == 1_000
    assert buffer.stats.rejected == buffer.stats.spooled == 0
    assert sorted(logged_event_ids(client, who)) == sorted(tracked)


def test_async_buffer_delivers_in_batches_and_hands_failures_to_the_callback(
    server: Server, client: Client
) -> None:
    failed: list[dict[str, Any]] = []
    errors: list[Exception] = []

    def on_failure(events: list[dict[str, Any]], error: Exception) -> None:
        failed.extend(events)
        errors.append(error)

    async def main() -> tuple[list[str], list[str]]:
        async with AsyncFeedbackBuffer(
            server.root,
            api_key=ADMIN_KEY,
            flush_interval=0.05,
            spool_path=None,
            on_failure=on_failure,
        ) as live:
            sent = [
                await live.track(f"async-b-u{n % 150}", "async-b-i1", "view") for n in range(1_500)
            ]
            await live.flush()
            assert live.stats.accepted == 1_500
        async with AsyncFeedbackBuffer(
            dead_url(), max_attempts=2, spool_path=None, on_failure=on_failure, **FAST_RETRIES
        ) as dead:
            lost = [await dead.track("async-b-dead", "async-b-i1", "view") for _ in range(30)]
        assert dead.stats.failed == 30
        return sent, lost

    sent, lost = asyncio.run(main())
    assert sorted(logged_event_ids(client, users("async-b", 150))) == sorted(sent)
    assert [e["event_id"] for e in failed] == lost
    assert all(isinstance(e, RecloopError) and e.retryable for e in errors)


def test_atexit_flushes_the_sync_buffer(server: Server, client: Client, tmp_path: Path) -> None:
    script = (
        "from recloop_client import FeedbackBuffer\n"
        "buffer = FeedbackBuffer(flush_interval=3600, spool_path='spool.jsonl')\n"
        "for n in range(50):\n"
        "    buffer.track(f'exit-u{n % 10}', 'exit-i1', 'view', event_id=f'exit-{n}')\n"
        "# no flush, no close: the interpreter's exit sends them\n"
    )
    env = {**os.environ, "RECLOOP_URL": server.root, "RECLOOP_API_KEY": ADMIN_KEY}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    logged = logged_event_ids(client, users("exit", 10))
    assert sorted(logged) == sorted(f"exit-{n}" for n in range(50))
    assert not (tmp_path / "spool.jsonl").exists()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        FeedbackBuffer(dead_url(), max_batch=1001, close_at_exit=False)
    with pytest.raises(ValueError, match="undeliverable"):
        FeedbackBuffer(dead_url(), spool_path=None, close_at_exit=False)


def test_event_ids_are_uuid7_and_flush_after_close_returns() -> None:
    ids = [new_event_id() for _ in range(1_000)]
    assert len(set(ids)) == 1_000
    assert {uuid.UUID(i).version for i in ids} == {7}
    assert ids[0][:13] <= ids[-1][:13]  # the leading 48 bits are the time in ms
    buffer = FeedbackBuffer(
        dead_url(), close_at_exit=False, max_attempts=1, on_failure=print, spool_path=None
    )
    buffer.close()
    assert buffer.flush(timeout=5)
    with pytest.raises(RecloopError, match="closed"):
        buffer.track("u", "i", "view")


def test_async_burst_over_the_queue_waits_then_raises_and_spools_on_close(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool.jsonl"

    async def main() -> list[str]:
        buffer = AsyncFeedbackBuffer(
            dead_url(),
            max_batch=10,
            max_queue=20,
            full_timeout=0.2,
            max_attempts=1_000,
            spool_path=spool,
            **FAST_RETRIES,
        )
        tracked: list[str] = []
        with pytest.raises(BufferFull):
            for n in range(1_000):
                tracked.append(await buffer.track(f"aburst-u{n}", "aburst-i1", "view"))
        assert 20 <= len(tracked) <= 30  # the queue, and the batch being retried
        await buffer.close(grace=0.5)
        return tracked

    tracked = asyncio.run(main())
    assert sorted(e["event_id"] for e in Spool.read(spool)) == sorted(tracked)
