"""The embedded processor is the one writer of users' state: it asks the store only about
users the store may hold (stored when it started, or let go of since), and a new user's
first event costs no read."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from recloop.adapters.memory import InMemoryEventLog, TtlCache
from recloop.core.errors import NotFound
from recloop.core.events import Event
from recloop.core.items import make_item
from recloop.core.preferences import UserState
from recloop.core.state import UserRows
from recloop.ports import StateChanges
from recloop.services.apply import ProcessorConfig
from recloop.services.feedback import Processor, event_log_writer
from recloop.services.preferences import PreferenceService
from recloop.services.vectors import ItemVectors
from tests.conftest import CountingStore, eventually, make_settings


def like(n: int, user_id: str) -> Event:
    return Event(f"e{n}", user_id, "i", "like", time.time())


async def started(store: CountingStore, tmp_path: Path, max_users: int) -> Processor:
    await store.put_items([make_item("i", [1.0] + [0.0] * 7, None, 8, time.time())])
    settings = make_settings(tmp_path, "memory", cache={"max_users": max_users})
    config = ProcessorConfig.of(settings)
    processor = Processor(store, TtlCache(100, 60.0), ItemVectors(store, 100), config)
    await processor.start(InMemoryEventLog())
    return processor


async def test_only_users_the_store_may_hold_are_looked_up(tmp_path: Path) -> None:
    store = CountingStore()
    await store.commit(StateChanges(users=UserRows.of([UserState.new("old", 8)])))
    processor = await started(store, tmp_path, max_users=10)
    log = InMemoryEventLog()
    writer = event_log_writer(log, processor, 1000)
    writer.start()
    try:
        await writer.submit([like(0, "old"), like(1, "new")])
        await processor.flush_implicit()
        assert store.asked == ["old"]  # stored before the start; "new" is made, unasked
        # 30 more users through a table of 10: the first ones are let go of, then come back
        for n in range(30):
            await writer.submit([like(10 + n, f"u{n}")])
            await processor.flush_implicit()
            await processor.checkpoint()
        assert set(store.asked) == {"old"}
        await writer.submit([like(100, "u0"), like(101, "old"), like(102, "new")])
        await processor.flush_implicit()
        await processor.checkpoint()

        async def applied() -> bool:
            found = await store.get_users(["u0", "old", "new"])
            return all(found[u].events_applied == 2 for u in ("u0", "old", "new"))

        await eventually(applied)  # what each learnt before it was let go of is kept
        assert "u0" in store.asked
        assert not processor.never_stored("u0") and not processor.never_stored("old")
        assert processor.never_stored("nobody")
    finally:
        await writer.stop()
        await processor.stop()


async def test_a_read_of_a_user_never_stored_does_not_ask_the_store(tmp_path: Path) -> None:
    store = CountingStore()
    await store.commit(StateChanges(users=UserRows.of([UserState.new("old", 8)])))
    processor = await started(store, tmp_path, max_users=10)
    try:
        preferences = PreferenceService(
            store,
            TtlCache(100, 60.0),
            live=processor.preferences,
            never_stored=processor.never_stored,
        )
        with pytest.raises(NotFound):
            await preferences.get("nobody")
        assert store.asked == []
        assert (await preferences.get("old")).user_id == "old"
        assert store.asked == ["old"]
    finally:
        await processor.stop()
