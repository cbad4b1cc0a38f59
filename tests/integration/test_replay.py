"""Replay after a crash: what the log holds past the applied state is applied exactly once.

A "crash" here is a container that logged events but never ran its processor
stop (no flush, no final watermark): the next container must finish the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from recloop.config import Settings
from recloop.container import Container, build_container
from recloop.core.events import Event
from tests.conftest import eventually, start_app


def _events(n_users: int, per_user: int) -> list[Event]:
    kinds = ["like", "click", "rating", "view", "dislike", "impression", "purchase"]
    out = []
    for u in range(n_users):
        for k in range(per_user):
            kind = kinds[(u + k) % len(kinds)]
            out.append(
                Event(
                    event_id=f"u{u}-{k}",
                    user_id=f"u{u}",
                    item_id=f"i{(u * 3 + k) % 5}",
                    type=kind,
                    timestamp=1_700_000_000.0 + k,
                    value=4.0 if kind == "rating" else None,
                )
            )
    return out


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_logged_but_unapplied_events_apply_once_after_restart(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    app, close = await start_app(settings)
    for i in range(5):
        vector = np.zeros(8)
        vector[i] = 1.0
        await app.client.put(f"/items/i{i}", json={"vector": vector.tolist()})
    # Half the events go through the service and are applied ...
    events = _events(20, 14)
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    await app.container.committer.submit(first)
    await app.idle(flush=True)
    await close()

    # ... the rest reach the log, and the process dies before applying them.
    crashed = build_container(settings)
    assert crashed.db is not None
    await crashed.db.migrate()
    offsets = await crashed.event_log.append(second)
    assert None not in offsets
    await crashed.db.dispose()

    # A new process replays exactly the unapplied events; a third replays nothing.
    app, close = await start_app(settings)
    await app.idle(flush=True)
    users = await app.container.store.get_users([f"u{u}" for u in range(20)])
    await close()
    app, close = await start_app(settings)
    replayed = app.container.processor.tracker.watermark
    again = await app.container.store.get_users([f"u{u}" for u in range(20)])
    await close()

    for u in range(20):
        mine = [e for e in events if e.user_id == f"u{u}"]
        interactions = [e for e in mine if e.type != "impression"]
        state = users[f"u{u}"]
        assert state.interactions == len(interactions)
        assert state.events_applied == len(interactions)
        assert state.impressions == len(mine) - len(interactions)
        assert np.array_equal(again[f"u{u}"].vector, state.vector)
        assert again[f"u{u}"].events_applied == state.events_applied
    assert replayed == len(events)


async def _crash(container: Container) -> None:
    """Stop every task where it stands, as kill -9 would: no flush, no final watermark."""
    processor = container.processor
    tasks = [*processor._tasks, container.committer._task]
    for task in tasks:
        assert task is not None
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert container.db is not None
    await container.db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_replay_skips_what_the_state_already_holds(
    settings_factory: Callable[..., Settings],
) -> None:
    """A buffered click holds the watermark back while a later like is committed.

    After the crash, replay starts before both: the like must not apply twice,
    the click must apply once.
    """
    settings = settings_factory()
    app, _close = await start_app(settings)
    await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
    await app.client.post("/feedback", json={"user_id": "u", "item_id": "i", "type": "click"})
    await app.client.post("/feedback", json={"user_id": "u", "item_id": "i", "type": "like"})
    await app.idle()
    committed = (await app.container.store.get_users(["u"]))["u"]
    assert (committed.events_applied, committed.explicit_offset) == (1, 2)
    assert await app.container.store.get_watermark() < 2
    await _crash(app.container)
    await app.client.aclose()

    app, close = await start_app(settings)
    await app.idle(flush=True)
    state = (await app.container.store.get_users(["u"]))["u"]
    await close()
    assert (state.events_applied, state.interactions) == (2, 2)
    # like (alpha .1) then the replayed click (signal .15 -> alpha .015)
    assert state.vector[0] == pytest.approx(0.015 + 0.985 * 0.1)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_explicit_state_survives_without_graceful_stop(
    settings_factory: Callable[..., Settings],
) -> None:
    """Explicit events are committed as they are applied: no stop() is needed to keep them."""
    settings = settings_factory()
    app, _close = await start_app(settings)
    await app.client.put("/items/i", json={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
    await app.client.post("/feedback", json={"user_id": "u", "item_id": "i", "type": "like"})
    await app.idle()
    # No close(): read the database from a fresh container, as after kill -9.
    fresh = build_container(settings)
    state = (await fresh.store.get_users(["u"]))["u"]
    assert state.events_applied == 1
    assert state.vector[0] == pytest.approx(0.1)
    assert fresh.db is not None
    await fresh.db.dispose()
    await _close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_crash_keeps_what_the_state_journal_holds(
    settings_factory: Callable[..., Settings],
) -> None:
    """With a journal of a few rows, records are compacted while events arrive; after a
    kill -9 the restart holds the journal's rows (newer than the user table's), replays
    the rest of the log, and ends with every user's state as a run that wrote each
    checkpoint's rows in place (``journal_rows=0``) and never crashed."""
    events = _events(16, 9)
    rounds = [events[k::5] for k in range(5)]  # every user's events spread over rounds

    async def run(journal_rows: int, crash: bool) -> dict[str, object]:
        settings = settings_factory(  # few users held: eviction must spare journaled rows
            feedback={"journal_rows": journal_rows, "implicit_flush_seconds": 3600},
            cache={"max_users": 12},
        )
        app, close = await start_app(settings)
        for i in range(5):
            vector = np.zeros(8)
            vector[i] = 1.0
            await app.client.put(f"/items/i{i}", json={"vector": vector.tolist()})
        store = app.container.store
        for batch in rounds:
            await app.container.committer.submit(batch)
            await app.idle()
            if crash and batch is rounds[-1]:  # the crash once the last round is journaled

                async def journaled() -> bool:
                    return any(seq > 1 for seq, _ in await store.get_journal())

                await eventually(journaled)
            else:
                await app.container.processor.checkpoint()
        if crash:
            seqs = [seq for seq, _ in await store.get_journal()]
            assert seqs[0] > 1, "the first records were compacted"
            await _crash(app.container)
            await app.client.aclose()
            app, close = await start_app(settings)
        await app.idle(flush=True)
        users = await app.container.store.get_users([f"u{u}" for u in range(16)])
        await close()
        return dict(users)

    journaled = await run(journal_rows=20, crash=True)
    in_place = await run(journal_rows=0, crash=False)
    assert set(journaled) == set(in_place) == {f"u{u}" for u in range(16)}
    for user_id, state in in_place.items():
        got = journaled[user_id]
        np.testing.assert_array_equal(got.vector, state.vector)  # type: ignore[attr-defined]
        for name in ("events_applied", "interactions", "impressions", "explicit_offset"):
            assert getattr(got, name) == getattr(state, name), (user_id, name)
