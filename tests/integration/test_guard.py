"""The guard through the API: floods are blocked, the unreliable are not learnt from."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from recloop.api.schemas import ReliabilityOut
from recloop.config import Settings
from tests.conftest import Running, eventually, start_app


@pytest.fixture
async def app(settings_factory: Callable[..., Settings]) -> AsyncIterator[Running]:
    running, close = await start_app(
        settings_factory(spam={"enabled": True}, rate_limits={"enabled": False})
    )
    await running.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
    yield running
    await close()


def like(user: str, at: float, item: str = "i") -> dict:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"
    return {"user_id": user, "item_id": item, "type": "like", "timestamp": stamp}


async def test_a_flood_is_blocked_and_not_learnt_from(app: Running) -> None:
    now = time.time() - 60
    flood = [like("bot", now + k * 0.01) for k in range(40)]  # 40 likes in 0.4 s
    body = (await app.client.post("/feedback", json={"events": flood})).json()
    assert body["accepted"] == 40
    # The processor takes the evidence after the 202, in the round that applies the
    # events, before it learns from them: the verdict lags by at most that round.
    await app.idle()
    report = (await app.client.get("/users/bot/reliability")).json()
    assert report["status"] == "blocked"
    assert report["score"] < 20
    r = await app.client.post("/feedback", json=like("bot", now + 1))
    assert r.status_code == 403
    assert "blocked" in r.json()["detail"]
    assert r.json()["reason"] == "blocked"  # not "role": the user, not the key
    batch = (await app.client.post("/feedback", json={"events": [like("bot", now + 2)]})).json()
    assert batch["results"][0]["status"] == "blocked"
    await app.idle()
    prefs = (await app.client.get("/users/bot/preferences")).json()
    assert prefs["events_held"] + prefs["events_applied"] == 40
    assert prefs["events_held"] > 0
    suspects = (await app.client.get("/spam/suspects", params={"limit": 5})).json()
    assert suspects[0]["user_id"] == "bot"


async def test_an_ordinary_user_is_trusted_and_learnt_from(app: Running) -> None:
    now = time.time() - 3600
    events = [like("ann", now + k * 97.0, item="i") for k in range(3)]
    await app.client.post("/feedback", json={"events": events})
    await app.idle()
    report = (await app.client.get("/users/ann/reliability")).json()
    assert report["status"] == "trusted"
    assert report["score"] >= 50
    # Issue 16: a signal without enough evidence has no value, and the document says so.
    assert any(s["value"] is None for s in report["signals"].values()), report
    ReliabilityOut.model_validate(report)
    prefs = (await app.client.get("/users/ann/preferences")).json()
    assert (prefs["events_applied"], prefs["events_held"]) == (3, 0)
    assert (await app.client.get("/users/nobody/reliability")).status_code == 404


async def test_a_user_due_is_judged_soon_after_the_rounds_pause(app: Running) -> None:
    """A few users due wait for the next apply round to be judged with its users; when
    none comes, the apply task judges them as soon as it rests (not at the sweep, every
    15 s)."""
    now = time.time() - 3600
    events = [like("bea", now + k * 97.0, item="i") for k in range(20)]  # due at 20
    assert (await app.client.post("/feedback", json={"events": events})).status_code == 202
    guard = app.container.guard

    async def judged() -> bool:  # the events folded as evidence, and nothing unjudged
        held = guard.evidence("bea")
        return held is not None and held.events == 20 and guard.pending() == 0

    await eventually(judged, within=5.0)
    assert len(guard.scores()) == 1  # bea's verdict


async def test_manual_block_and_unblock(app: Running) -> None:
    r = await app.client.post("/users/eve/block", json={"reason": "chargeback fraud"})
    assert r.json()["status"] == "blocked" and r.json()["manual"]
    r = await app.client.post("/feedback", json=like("eve", time.time()))
    assert r.status_code == 403
    assert "chargeback fraud" in r.json()["detail"]
    await app.client.post("/users/eve/unblock")
    r = await app.client.post("/feedback", json=like("eve", time.time()))
    assert r.status_code == 202
    report = (await app.client.get("/users/eve/reliability")).json()
    assert report["status"] == "trusted" and report["manual"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_blocks_survive_a_restart(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(spam={"enabled": True})
    app, close = await start_app(settings)
    await app.client.post("/users/mallory/block")
    await close()
    app, close = await start_app(settings)
    try:
        r = await app.client.post("/feedback", json=like("mallory", time.time()))
        assert r.status_code == 403
    finally:
        await close()


async def test_a_quiet_attacker_is_judged_without_anyone_asking(
    settings_factory: Callable[..., Settings],
) -> None:
    # 11 ratings, under the 20 events of the count schedule; nobody reads their reliability
    settings = settings_factory(
        spam={"enabled": True, "judge_within_seconds": 0.2}, rate_limits={"enabled": False}
    )
    app, close = await start_app(settings)
    try:
        now = time.time() - 600
        events = [
            {**like("mallory", now + 3.0 * k, item=f"i{k}"), "type": "rating", "value": 5}
            for k in range(10)
        ]
        events.append({**like("mallory", now + 40, item="t"), "type": "rating", "value": 1})
        assert (await app.client.post("/feedback", json={"events": events})).status_code == 202
        await app.idle()
        listed: list[str] = []
        for _ in range(100):  # at most 5 s; due within 0.15 s of the events
            suspects = (await app.client.get("/spam/suspects", params={"limit": 5})).json()
            listed = [s["user_id"] for s in suspects]
            if "mallory" in listed:
                break
            await asyncio.sleep(0.05)
        assert "mallory" in listed
    finally:
        await close()


async def test_reliability_with_the_guard_off_answers_for_a_known_user(
    settings_factory: Callable[..., Settings],
) -> None:
    running, close = await start_app(
        settings_factory(spam={"enabled": False}, rate_limits={"enabled": False})
    )
    try:
        await running.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
        await running.client.post("/feedback", json=like("ann", time.time() - 60))
        await running.idle()
        r = await running.client.get("/users/ann/reliability")
        assert r.status_code == 200, r.text
        assert r.json() == {
            "user_id": "ann",
            "score": 100.0,
            "status": "trusted",
            "signals": {},
            "since": None,
            "manual": False,
            "reason": "not judged: spam.enabled is false",
        }
        assert (await running.client.get("/users/nobody/reliability")).status_code == 404
    finally:
        await close()


@pytest.mark.parametrize(("limit", "blocked"), [(25.0, False), (5.0, True)])
async def test_the_burst_rule_is_a_setting(
    settings_factory: Callable[..., Settings], limit: float, blocked: bool
) -> None:
    # 8 views in 0.4 s: within the default 25 actions a second, over a limit of 5
    settings = settings_factory(
        spam={"enabled": True, "max_actions_per_second": limit}, rate_limits={"enabled": False}
    )
    running, close = await start_app(settings)
    try:
        now = time.time() - 60
        views = [{**like("burst", now + k * 0.05), "type": "view"} for k in range(8)]
        assert (await running.client.post("/feedback", json={"events": views})).status_code == 202
        await running.idle()
        status = (await running.client.get("/users/burst/reliability")).json()["status"]
        assert (status == "blocked") is blocked
    finally:
        await close()
