"""Privacy and data lifecycle on every backend: erasure, retention, export, pseudonymous ids."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sqlalchemy import select

from recloop.adapters.redis import SharedCache
from recloop.adapters.sql.tables import metadata
from recloop.config import Settings
from recloop.container import Container, build_container
from recloop.core.errors import ConfigError
from recloop.core.events import Event
from recloop.core.privacy import DAY, pseudonym
from recloop.services.feedback import preferences_key
from tests.conftest import Running, eventually, make_settings, start_app
from tests.integration.test_experiments_api import EXPERIMENT
from tests.redis import flush_prefix

VICTIM = "victim-3f9a"
KEY = "a-secret-key-of-32-characters!!!"


# -- what the storage holds ------------------------------------------------------------


async def holders_of(container: Container, needle: str) -> list[str]:
    """Where ``needle`` is stored: SQL, every table and every string, bytes or JSON
    column; in memory, every value reachable from the log and the stores."""
    if container.db is None:
        found: list[str] = []
        privacy = container.privacy
        roots = {
            "log": container.event_log,
            "store": container.store,
            "privacy": getattr(privacy, "_store", None),
        }
        for name, root in roots.items():
            _walk(root, needle, name, found, set())
        return found
    hits = []
    async with container.db.read() as conn:
        for table in metadata.sorted_tables:
            for row in (await conn.execute(select(table))).mappings():
                for column, value in row.items():
                    if _holds(value, needle):
                        hits.append(f"{table.name}.{column}")
    return hits


def _holds(value: Any, needle: str) -> bool:
    if isinstance(value, str):
        return needle in value
    if isinstance(value, bytes | memoryview):
        return needle.encode() in bytes(value)
    if isinstance(value, dict | list):
        return needle.encode() in orjson.dumps(value)
    return False


def _walk(obj: Any, needle: str, path: str, found: list[str], seen: set[int]) -> None:
    if id(obj) in seen or obj is None or isinstance(obj, int | float | np.ndarray):
        return
    seen.add(id(obj))
    if isinstance(obj, str | bytes):
        if _holds(obj, needle):
            found.append(path)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _walk(k, needle, f"{path}[key]", found, seen)
            _walk(v, needle, f"{path}[{k!r}]", found, seen)
    elif isinstance(obj, list | tuple | set | frozenset):
        for v in obj:
            _walk(v, needle, f"{path}[]", found, seen)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _walk(getattr(obj, f.name), needle, f"{path}.{f.name}", found, seen)
    elif hasattr(obj, "__dict__"):
        for k, v in vars(obj).items():
            _walk(v, needle, f"{path}.{k}", found, seen)


# -- a scenario: items, a running experiment, users acting before and after exposure -------


async def prepare(app: Running) -> None:
    for i in range(4):
        vector = np.zeros(8)
        vector[i] = 1.0
        r = await app.client.put(f"/items/i{i}", json={"vector": vector.tolist()})
        assert r.status_code in (200, 201), r.text
    r = await app.client.post("/experiments", json=EXPERIMENT)
    assert r.status_code == 201, r.text
    assert (await app.client.post("/experiments/exp-ctr/start")).status_code == 200


async def play(app: Running, user: str, n: int) -> None:
    """What one user does: a click before exposure (the CUPED covariate), exposure, a
    ranking, then impressions, clicks, a like, a rating and maybe a purchase."""
    send = app.client.post
    await send("/feedback", json={"user_id": user, "item_id": "i0", "type": "click"})
    await app.idle(flush=True)
    r = await app.client.get(f"/experiments/exp-ctr/assignment/{user}")
    assert r.status_code == 200, r.text
    candidates = [{"item_id": f"i{k}", "algorithm": "popularity", "score": 1.0} for k in range(4)]
    r = await send(f"/users/{user}/rank", json={"candidates": candidates, "k": 3})
    assert r.status_code == 200, r.text
    impression_id = r.json()["impression_id"]
    events: list[dict[str, Any]] = [
        {"user_id": user, "item_id": f"i{k % 4}", "type": "impression"} for k in range(4 + n % 3)
    ]
    events += [
        {
            "user_id": user,
            "item_id": f"i{k % 4}",
            "type": "click",
            "attribution": {"impression_id": impression_id, "algorithm": "popularity"},
        }
        for k in range(1 + n % 4)
    ]
    events.append({"user_id": user, "item_id": f"i{n % 4}", "type": "like"})
    events.append({"user_id": user, "item_id": "i1", "type": "rating", "value": 1 + n % 5})
    if n % 2:
        events.append({"user_id": user, "item_id": "i2", "type": "purchase"})
    r = await send("/feedback", json={"events": events})
    assert r.json()["accepted"] == len(events), r.text
    await app.idle(flush=True)


def close_to(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            close_to(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            close_to(x, y, f"{path}[{n}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


async def results(app: Running) -> dict[str, Any]:
    body: dict[str, Any] = (await app.client.get("/experiments/exp-ctr/results")).json()
    return body


# -- erasure ---------------------------------------------------------------------------------


async def test_erasure_removes_every_row_of_the_user_and_their_share_of_the_statistics(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    app, close = await start_app(settings_factory())
    try:
        await prepare(app)
        for n in range(8):
            await play(app, f"u{n}", n)
        await play(app, VICTIM, 5)
        # ... and a manual block (a stored reliability record) and a dead letter.
        assert (await app.client.post(f"/users/{VICTIM}/block")).status_code == 200
        poison = Event("poison", VICTIM, "i0", "rating", time.time(), offset=10**9)
        await app.container.store.add_dead_letter(poison, "ValueError: test")
        assert await holders_of(app.container, VICTIM)

        r = await app.client.delete(f"/users/{VICTIM}")
        assert r.status_code == 200, r.text
        removed = r.json()["removed"]
        assert removed["events"] == 1 + 6 + 2 + 1 + 1 + 1  # every event of play(5)
        assert removed["impressions"] == 1
        assert removed["state"] == removed["exposures"] == removed["reliability"] == 1
        assert removed["metric_values"] == 3  # one per metric of the experiment
        assert removed["dead_letters"] == 1
        assert removed["spooled"] == 0
        assert await holders_of(app.container, VICTIM) == []
        assert await holders_of(app.container, "u3")  # the others are untouched

        again = await app.client.delete(f"/users/{VICTIM}")
        assert set(again.json()["removed"].values()) == {0}
        assert (await app.client.get(f"/users/{VICTIM}/preferences")).status_code == 404
        reliability = await app.client.get(f"/users/{VICTIM}/reliability")
        assert reliability.status_code == 404
        after = await results(app)
        # The service's memory and the store agree.
        stored = await app.container.store.get_experiment_stats("exp-ctr")
        memory = app.container.experiments._stats["exp-ctr"]
        for variant, metric, stats in stored:
            close_to(dataclasses.asdict(stats), dataclasses.asdict(memory[(variant, metric)]))
    finally:
        await close()

    # The same story without the victim gives the same statistics.
    reference, close = await start_app(make_settings(tmp_path / "ref", "memory"))
    try:
        await prepare(reference)
        for n in range(8):
            await play(reference, f"u{n}", n)
        expected = await results(reference)
    finally:
        await close()
    close_to(after["metrics"], expected["metrics"])
    assert after["srm"]["observed"] == expected["srm"]["observed"]


async def test_events_accepted_before_the_erasure_do_not_bring_the_user_back(
    settings_factory: Callable[..., Settings], backend: str
) -> None:
    settings = settings_factory(feedback={"implicit_flush_seconds": 3600})
    app, close = await start_app(settings)
    try:
        await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
        send = app.client.post
        await send("/feedback", json={"user_id": VICTIM, "item_id": "i", "type": "like"})
        # Implicit events wait in the aggregator's buffer: accepted, not yet applied.
        clicks = [{"user_id": VICTIM, "item_id": "i", "type": "click"}] * 5
        await send("/feedback", json={"events": clicks})
        await app.idle()
        assert app.container.processor.implicit_buffered == 5
        removed = (await app.client.delete(f"/users/{VICTIM}")).json()["removed"]
        assert (removed["events"], removed["state"]) == (6, 1)
        assert app.container.processor.implicit_buffered == 0
        await app.idle(flush=True)
        assert await holders_of(app.container, VICTIM) == []
        # The log's watermark went past them: nothing is left to replay.
        tracker = app.container.processor.tracker
        assert tracker.in_flight == 0 and tracker.watermark == tracker.last_begun == 6
    finally:
        await close()
    if backend != "memory":
        app, close = await start_app(settings)  # replay after a restart
        try:
            await app.idle(flush=True)
            assert await holders_of(app.container, VICTIM) == []
        finally:
            await close()
        app, close = await start_app(settings)
    else:
        app, close = await start_app(settings)
    try:
        # A user may come back: new events are theirs again.
        await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
        r = await app.client.post(
            "/feedback", json={"user_id": VICTIM, "item_id": "i", "type": "like"}
        )
        assert r.status_code == 202
        await app.idle()
        prefs = (await app.client.get(f"/users/{VICTIM}/preferences")).json()
        assert prefs["events_applied"] == 1
        assert prefs["vector"][0] == pytest.approx(0.1)
    finally:
        await close()


async def test_logged_events_handed_on_after_the_erasure_are_skipped(
    settings_factory: Callable[..., Settings],
) -> None:
    app, close = await start_app(settings_factory())
    try:
        await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
        # In the log, not yet with the processor (as between a commit and its dispatch).
        events = [
            Event(f"x{n}", VICTIM, "i", kind, time.time())
            for n, kind in enumerate(["like", "click", "rating"])
        ]
        events[2].value = 5.0
        offsets = await app.container.event_log.append(events)
        for event, offset in zip(events, offsets, strict=True):
            assert offset is not None
            event.offset = offset
        removed = (await app.client.delete(f"/users/{VICTIM}")).json()["removed"]
        assert removed["events"] == 3
        await app.container.processor.dispatch(events)
        await app.idle(flush=True)
        assert app.container.processor.tracker.in_flight == 0
        assert (await app.client.get(f"/users/{VICTIM}/preferences")).status_code == 404
        assert await holders_of(app.container, VICTIM) == []
    finally:
        await close()


async def test_a_retried_old_event_of_an_erased_user_is_not_applied(
    settings_factory: Callable[..., Settings],
) -> None:
    app, close = await start_app(settings_factory())
    try:
        await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
        old = {
            "event_id": "e-old",
            "user_id": VICTIM,
            "item_id": "i",
            "type": "like",
            "timestamp": time.time() - 60,
        }
        await app.client.post("/feedback", json=old)
        await app.idle()
        await app.client.delete(f"/users/{VICTIM}")
        # The client retries the same (old) event after the erasure: its log row is gone,
        # so it is accepted again, but the user acted before the erasure.
        r = await app.client.post("/feedback", json=old)
        assert r.json()["accepted"] == 1
        await app.idle()
        assert (await app.client.get(f"/users/{VICTIM}/preferences")).status_code == 404
    finally:
        await close()


# -- retention ------------------------------------------------------------------------------


async def test_purge_keeps_what_was_learnt_and_replay_works_after_it(
    settings_factory: Callable[..., Settings], backend: str
) -> None:
    settings = settings_factory(feedback={"implicit_flush_seconds": 3600}, privacy={})
    app, close = await start_app(settings)
    users = [f"u{n}" for n in range(6)]
    try:
        await prepare(app)
        for n, user in enumerate(users):
            await play(app, user, n)
        # One implicit event waits in the buffer: the stored watermark stays below it.
        await app.client.post("/feedback", json={"user_id": "u0", "item_id": "i0", "type": "view"})
        await app.idle()
        store, log_ = app.container.store, app.container.event_log
        watermark = await store.get_watermark()
        last = await log_.last_offset()
        assert watermark < last
        states = await store.get_users(users)
        counts = await store.get_algorithm_counts(0.0)
        before = await results(app)

        assert app.container.privacy is not None
        assert set((await app.container.privacy.purge()).values()) == {0}  # all young
        deleted = await app.container.privacy.purge(now=time.time() + 200 * DAY)
        assert deleted["events"] == watermark  # everything at or below the watermark
        assert deleted["impressions"] == len(users)
        left = await log_.read(0, 10_000)
        assert [e.offset for e in left] == list(range(watermark + 1, last + 1))

        close_to(await results(app), before)
        assert sorted(await store.get_algorithm_counts(0.0), key=repr) == sorted(counts, key=repr)
        for user, state in (await store.get_users(users)).items():
            assert np.array_equal(state.vector, states[user].vector)
            assert state.events_applied == states[user].events_applied
        assert await store.get_impressions(0.0, time.time() + 1) == []
    finally:
        await close()
    if backend == "memory":
        return

    # Events logged after the purge but never applied (the process died): replayed once.
    crashed = build_container(settings)
    assert crashed.db is not None
    late = [Event(f"late-{n}", "u1", "i1", "like", time.time()) for n in range(3)]
    offsets = await crashed.event_log.append(late)
    assert all(o is not None and o > last for o in offsets)  # offsets are never reused
    await crashed.db.dispose()
    app, close = await start_app(settings)
    try:
        await app.idle(flush=True)
        state = (await app.container.store.get_users(["u1"]))["u1"]
        assert state.events_applied == states["u1"].events_applied + 3
        await app.container.privacy.purge(now=time.time() + 200 * DAY)  # type: ignore[union-attr]
    finally:
        await close()
    app, close = await start_app(settings)  # and again: nothing left to replay twice
    try:
        again = (await app.container.store.get_users(["u1"]))["u1"]
        assert again.events_applied == state.events_applied
        assert np.array_equal(again.vector, state.vector)
    finally:
        await close()


# -- export ------------------------------------------------------------------------------------


async def test_export_returns_what_was_ingested(settings_factory: Callable[..., Settings]) -> None:
    app, close = await start_app(settings_factory(privacy={"keep_review_text": True}))
    try:
        await prepare(app)
        await play(app, "u1", 1)
        sent = {
            "event_id": "rev-1",
            "user_id": "u1",
            "item_id": "i3",
            "type": "review",
            "timestamp": 1_700_000_000.5,
            "text": "a thoughtful review of item three",
            "context": {"device": "tv", "position": 2},
            "attribution": {"algorithm": "popularity", "propensity": 0.25},
        }
        headers = {"X-Request-ID": "export-trace"}
        assert (await app.client.post("/feedback", json=sent, headers=headers)).status_code == 202
        await app.idle(flush=True)
        r = await app.client.get("/users/u1/export")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user_id"] == body["stored_user_id"] == "u1"
        exported = {e["event_id"]: e for e in body["events"]}
        review = exported["rev-1"]
        review.pop("offset")
        assert review == {**sent, "request_id": "export-trace"}  # what is held, all of it
        assert len(body["events"]) == 11 + 1  # play(1) and the review
        assert [e["type"] for e in body["events"]].count("click") == 3
        (impression,) = body["impressions"]
        assert len(impression["slate"]) == 3
        clicked = [e for e in body["events"] if e.get("attribution", {}).get("impression_id")]
        assert {e["attribution"]["impression_id"] for e in clicked} == {impression["impression_id"]}
        (exposure,) = body["exposures"]
        assert exposure["experiment_id"] == "exp-ctr"
        assert {m["metric"] for m in body["metric_values"]} == {"purchased", "clicks", "ctr"}
        clicks = next(m for m in body["metric_values"] if m["metric"] == "clicks")
        assert clicks["y"] == 2.0 and clicks["x"] == 1.0  # 2 clicks after, 1 before exposure
        prefs = (await app.client.get("/users/u1/preferences")).json()
        assert body["state"]["vector"] == prefs["vector"]
        assert body["state"]["events_applied"] == prefs["events_applied"]
        assert body["reliability"] is None and body["dead_letters"] == []
        nobody = (await app.client.get("/users/nobody/export")).json()
        assert nobody["state"] is None and nobody["events"] == []
    finally:
        await close()


# -- review text --------------------------------------------------------------------------------


async def test_review_text_is_scored_but_not_kept(
    settings_factory: Callable[..., Settings],
) -> None:
    app, close = await start_app(settings_factory(spam={"enabled": True}))
    try:
        await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
        text = "Best deal ever, visit http://spam.example for more!!!!!"
        review = {"user_id": "u1", "item_id": "i", "type": "review", "text": text}
        assert (await app.client.post("/feedback", json=review)).status_code == 202
        await app.idle()
        (logged,) = await app.container.event_log.read(0, 10)
        assert logged.type == "review" and logged.text is None
        assert await holders_of(app.container, "spam.example") == []
        held = app.container.guard.evidence("u1")
        assert held is not None
        assert (held.reviews, held.reviews_with_links) == (1, 1)
        assert held.review_keys  # the text's evidence, not the text
    finally:
        await close()


# -- pseudonymous ids -------------------------------------------------------------------------


async def test_pseudonymized_ids_never_appear_raw_and_raw_reads_work(
    settings_factory: Callable[..., Settings],
) -> None:
    raw = "alice@example.com"
    settings = settings_factory(privacy={"pseudonymize_user_ids": True, "id_key": KEY})
    app, close = await start_app(settings)
    stored = pseudonym(KEY.encode(), raw)
    try:
        await prepare(app)
        await play(app, raw, 3)
        await app.client.post(f"/users/{raw}/block", json={"reason": "testing"})
        await app.client.post(f"/users/{raw}/unblock")
        for path in ("preferences", "weights", "strategy", "reliability"):
            r = await app.client.get(f"/users/{raw}/{path}")
            assert r.status_code == 200, (path, r.text)
        assert (await app.client.get(f"/users/{raw}/preferences")).json()["user_id"] == stored
        assert await holders_of(app.container, raw) == []
        assert await holders_of(app.container, stored)
        assert app.container.user_key(raw) == stored
        body = (await app.client.get(f"/users/{raw}/export")).json()
        assert body["stored_user_id"] == stored and len(body["events"]) == 12
        removed = (await app.client.delete(f"/users/{raw}")).json()["removed"]
        assert removed["state"] == 1 and removed["events"] == 12
        assert await holders_of(app.container, stored) == []
    finally:
        await close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_changed_id_key_with_data_refuses_to_start(
    settings_factory: Callable[..., Settings],
) -> None:
    first = settings_factory(privacy={"pseudonymize_user_ids": True, "id_key": KEY})
    app, close = await start_app(first)
    try:
        await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
        await app.client.post("/feedback", json={"user_id": "u", "item_id": "i", "type": "like"})
        await app.idle()
    finally:
        await close()
    other = settings_factory(privacy={"pseudonymize_user_ids": True, "id_key": KEY[::-1]})
    plain = settings_factory()
    for settings, says in ((other, "privacy.id_key is not the key"), (plain, "is off")):
        container = build_container(settings)
        try:
            with pytest.raises(ConfigError, match=says) as caught:
                await container.start()
            assert "erase the data" in str(caught.value)
        finally:
            assert container.db is not None
            await container.db.dispose()
    app, close = await start_app(first)  # the same key starts
    await close()


async def test_pseudonymization_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"privacy\.id_key is required"):
        make_settings(tmp_path, privacy={"pseudonymize_user_ids": True})
    short = make_settings(tmp_path, privacy={"pseudonymize_user_ids": True, "id_key": "short"})
    with pytest.raises(ConfigError, match="at least 16 characters"):
        build_container(short)
    with pytest.raises(ConfigError, match=r"learning\.training_days"):
        build_container(make_settings(tmp_path, privacy={"event_retention_days": 7}))


# -- Redis: other processes' cached reads, shared rate-limit counters ----------------------------


async def test_erasure_reaches_other_instances_caches_and_redis_keys(
    tmp_path: Path, redis_url: str
) -> None:
    prefix = f"recloop-test-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        tmp_path,
        cache={"shared_url": redis_url},
        rate_limits={"storage": f"async+{redis_url}", "key_prefix": prefix},
    )
    app, close = await start_app(settings)
    other = SharedCache(redis_url)  # another instance, on the container's channel
    await other.start()
    try:
        await eventually(lambda: _true(other.connected))
        await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
        r = await app.client.post(
            "/feedback", json={"user_id": VICTIM, "item_id": "i", "type": "like"}
        )
        assert r.status_code == 202
        await app.idle()
        # Wait for the app's earlier invalidations to reach the other instance (in order).
        other.add("barrier", 1)
        app.container.cache.delete("barrier")
        await eventually(lambda: _true(other.get("barrier") is None))
        key = preferences_key(VICTIM)
        other.add(key, "cached preferences")
        assert other.get(key) == "cached preferences"
        assert await _redis_keys_with(redis_url, VICTIM)  # the rate-limit counters
        await app.client.delete(f"/users/{VICTIM}")
        await eventually(lambda: _true(other.get(key) is None))
        assert await _redis_keys_with(redis_url, VICTIM) == []
    finally:
        await other.stop()
        await close()
        await flush_prefix(redis_url, prefix)


async def _true(value: bool) -> bool:
    return value


async def _redis_keys_with(url: str, needle: str) -> list[bytes]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        return [key async for key in client.scan_iter(match=f"*{needle}*")]
    finally:
        await client.aclose()
