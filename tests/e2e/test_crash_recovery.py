"""kill -9 of a real server loses nothing accepted and applies every event exactly once."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

USERS = 200
ITEMS = 20
KINDS = ["like", "dislike", "rating", "click", "view", "impression", "purchase", "dwell", "skip"]


def _batch(rng: random.Random, tag: str, size: int) -> list[dict]:
    events = []
    for k in range(size):
        kind = rng.choice(KINDS)
        event = {
            "event_id": f"{tag}-{k}",
            "user_id": f"u{rng.randrange(USERS)}",
            "item_id": f"i{rng.randrange(ITEMS)}",
            "type": kind,
        }
        if kind == "rating":
            event["value"] = rng.randint(1, 5)
        elif kind == "dwell":
            event["value"] = rng.uniform(0, 120)
        events.append(event)
    return events


async def _send_until(
    client: httpx.AsyncClient,
    rng: random.Random,
    sender: int,
    enough: asyncio.Event,
    done: list[list[dict]],
    unknown: list[list[dict]],
) -> None:
    """Send batches until the server dies under us (bounded: 10,000 batches)."""
    for n in range(10_000):
        batch = _batch(rng, f"s{sender}-b{n}", 50)
        try:
            r = await client.post("/feedback", json={"events": batch})
        except httpx.TransportError:
            unknown.append(batch)  # may or may not have been logged: the client retries it
            return
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == len(batch)
        done.append(batch)
        if len(done) >= 40:
            enough.set()


def test_sigkill_mid_stream_loses_nothing_and_applies_once(
    tmp_path: Path, server_factory: type[Server]
) -> None:
    server = server_factory(
        tmp_path,
        {
            "RECLOOP_VECTORS__DIM": "8",
            "RECLOOP_FEEDBACK__IMPLICIT_FLUSH_SECONDS": "0.5",
        },
    )
    server.start()
    vectors = {f"i{i}": [float((i >> b) & 1) + 0.1 for b in range(8)] for i in range(ITEMS)}
    httpx.post(
        f"{server.url}/items",
        json={"items": [{"item_id": k, "vector": v} for k, v in vectors.items()]},
    ).raise_for_status()

    done: list[list[dict]] = []
    unknown: list[list[dict]] = []

    async def load_then_kill() -> None:
        enough = asyncio.Event()
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            senders = [
                asyncio.create_task(_send_until(client, random.Random(s), s, enough, done, unknown))
                for s in range(4)
            ]
            await asyncio.wait_for(enough.wait(), 60)
            server.kill()
            await asyncio.gather(*senders)

    asyncio.run(load_then_kill())
    assert len(done) >= 40

    server.start()
    # The kill left logged events unapplied (the implicit buffer, at least): replay found them.
    assert "replayed" in server.log.read_text()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for batch in unknown:  # what a client does with an unanswered request: send it again
            body = client.post("/feedback", json={"events": batch}).json()
            assert body["accepted"] + body["duplicates"] == len(batch)
        sent = [e for batch in done + unknown for e in batch]

        def settled() -> bool:
            detail = client.get("/health").json()["components"]
            return (
                detail["event_log"]["detail"]["lag"] == 0
                and detail["workers"]["detail"]["in_flight"] == 0
            )

        for _ in range(600):
            if settled():
                break
            asyncio.run(asyncio.sleep(0.05))
        assert settled()

        interactions = Counter(e["user_id"] for e in sent if e["type"] != "impression")
        impressions = Counter(e["user_id"] for e in sent if e["type"] == "impression")
        for user in interactions.keys() | impressions.keys():
            p = client.get(f"/users/{user}/preferences").json()
            # Every event exactly once: learnt from (an interaction or an impression), or
            # held, if the guard judged the user unreliable by then.
            total = interactions[user] + impressions[user]
            assert p["interactions"] + p["impressions"] + p["events_held"] == total, user
            assert p["events_applied"] == p["interactions"], user
            assert p["events_skipped"] == 0
            if p["events_held"] == 0:
                assert p["interactions"] == interactions[user], user
                assert p["impressions"] == impressions[user], user
    # SIGTERM is graceful: uvicorn re-raises the signal once shutdown is done, and by
    # then the applied watermark has reached the end of the log.
    assert server.terminate() in (0, -signal.SIGTERM)
    with sqlite3.connect(tmp_path / "data" / "recloop.db") as db:
        (last,) = db.execute('SELECT max("offset") FROM events').fetchone()
        (watermark,) = db.execute('SELECT "offset" FROM consumer_offsets').fetchone()
    assert watermark == last
    assert "Traceback" not in server.log.read_text()
