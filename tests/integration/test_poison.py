"""Poison events (issue 16): a deterministic failure dead-letters the events it concerns
after a bounded number of attempts, and the stream moves on; an unavailable store is
still waited for, however long."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore, TtlCache
from recloop.config import Settings
from recloop.container import build_container, preflight
from recloop.core.errors import ConfigError, TransientError
from recloop.core.events import Event
from recloop.core.items import Item, make_item
from recloop.resilience import RetryCounts
from recloop.services.feedback import Processor, ProcessorConfig
from recloop.services.vectors import ItemVectors
from tests.conftest import eventually, make_settings


class RefusingStore(InMemoryStateStore):
    """The memory store, refusing to read some items: ``bad`` ones always (a value the
    database cannot take), and every item while ``down`` counts down (an outage)."""

    def __init__(self, bad: Callable[[str], bool]) -> None:
        super().__init__()
        self.bad = bad
        self.down = 0
        self.reads = 0

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        self.reads += 1
        if self.down:
            self.down -= 1
            raise TransientError("storage", "ConnectionError: connection lost")
        if any(self.bad(i) for i in item_ids):
            raise ValueError("invalid byte sequence for encoding UTF8: 0x00")
        return await super().get_items(item_ids)


def like(n: int, user: str, item: str) -> Event:
    return Event(f"e{n}", user, item, "like", time.time(), offset=n)


async def _processor(store: InMemoryStateStore, tmp_path: Path) -> Processor:
    vector = [1.0] + [0.0] * 7
    await store.put_items([make_item(i, vector, None, 8, time.time()) for i in ("i", "j")])
    config = ProcessorConfig.of(make_settings(tmp_path, "memory"))
    processor = Processor(
        store, TtlCache(100, 60.0), ItemVectors(store, 100, dim=8), config, retries=RetryCounts()
    )
    await processor.start(InMemoryEventLog())
    return processor


async def _settled(processor: Processor) -> None:
    async def done() -> bool:
        return processor.tracker.in_flight == 0 and processor.explicit_queue_depth == 0

    await eventually(done)


async def test_an_unreadable_item_dead_letters_its_event_and_the_rest_apply(
    tmp_path: Path,
) -> None:
    store = RefusingStore(bad=lambda item_id: item_id.startswith("x"))
    processor = await _processor(store, tmp_path)
    try:
        events = [like(1, "a", "i"), like(2, "b", "x1"), like(3, "a", "j"), like(4, "c", "i")]
        await processor.dispatch(events)
        await _settled(processor)
        assert [e.event_id for e, _ in store.dead_letters] == ["e2"]
        assert "invalid byte sequence" in store.dead_letters[0][1]
        users = await store.get_users(["a", "b", "c"])
        assert users["a"].events_applied == 2 and users["c"].events_applied == 1
        assert "b" not in users  # nothing of the poison event was applied
        assert processor.tracker.watermark == 4  # the stream moved past it
        assert processor.calls.dead_letters == 1
    finally:
        await processor.stop()


async def test_an_unavailable_store_is_waited_for_not_dead_lettered(tmp_path: Path) -> None:
    store = RefusingStore(bad=lambda item_id: False)
    processor = await _processor(store, tmp_path)
    try:
        store.down = 5  # more failures than poison_attempts: still only waited for
        await processor.dispatch([like(1, "a", "i")])
        await _settled(processor)
        assert store.dead_letters == []
        assert (await store.get_users(["a"]))["a"].events_applied == 1
    finally:
        await processor.stop()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_nul_in_an_item_id_does_not_stick_the_processor_on_postgresql(
    settings_factory: Callable[..., Settings],
) -> None:
    container = build_container(settings_factory())
    await container.start()
    try:
        vector = [1.0] + [0.0] * 7
        await container.items.put_many([{"item_id": "i", "vector": vector}])
        processor = container.processor
        await processor.dispatch([like(1, "a", "bad\x00id"), like(2, "a", "i")])
        await _settled(processor)
        assert processor.calls.dead_letters == 1
        state = (await container.store.get_users(["a"]))["a"]
        assert (state.events_applied, state.explicit_offset) == (1, 2)
        assert await container.store.count_dead_letters() == 1
    finally:
        await container.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_process_of_another_dimension_refuses_to_start(
    settings_factory: Callable[..., Settings],
) -> None:
    """Issue 16: the stored vectors' length is part of the schema; a process configured
    with another vectors.dim says what to do instead of failing on the first event."""
    container = build_container(settings_factory())  # vectors.dim 8 (tests' default)
    await container.start()
    await container.items.put_many([{"item_id": "i", "vector": [1.0] + [0.0] * 7}])
    await container.stop()
    other = settings_factory(vectors={"dim": 4})
    with pytest.raises(ConfigError, match=r"vectors\.dim is 4, but the stored vectors have 8"):
        await preflight(other)
    refused = build_container(other)
    with pytest.raises(ConfigError, match="RECLOOP_VECTORS__DIM=8"):
        await refused.start()
    assert refused.db is not None
    await refused.db.dispose()
    await preflight(settings_factory())  # the same dimension starts
