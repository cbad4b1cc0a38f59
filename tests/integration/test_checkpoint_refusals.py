"""Checkpoint rows the store refuses for good (issue 16): the refused row is quarantined
with its reason and counted, the checkpoint's other rows and its log position commit,
and the stream moves on; an unavailable store is still waited for, however long. On the
memory backend with a fault-injecting store, and on PostgreSQL with a real constraint."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path

import pytest
from sqlalchemy import text

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore, TtlCache
from recloop.config import Settings
from recloop.core.errors import TransientError
from recloop.core.events import Event
from recloop.core.items import make_item
from recloop.core.privacy import user_digest
from recloop.ports import StateChanges
from recloop.resilience import RetryCounts
from recloop.services.feedback import Processor, ProcessorConfig
from recloop.services.refusals import _reason
from recloop.services.vectors import ItemVectors
from tests.conftest import eventually, make_settings, start_app
from tests.prometheus import samples, value

VECTOR = [1.0] + [0.0] * 7


class RefusingStore(InMemoryStateStore):
    """The memory store, refusing every commit holding a row of a ``poisoned`` user (as
    a database refuses a transaction with a row breaking a constraint: nothing of it is
    written), and every commit while ``down`` counts down (an outage)."""

    def __init__(self, poisoned: Collection[str]) -> None:
        super().__init__()
        self.poisoned = set(poisoned)
        self.down = 0
        self.refusals = 0

    async def commit(self, changes: StateChanges) -> None:
        if self.down:
            self.down -= 1
            raise TransientError("storage", "ConnectionError: connection lost")
        if self.poisoned & set(changes.users.user_ids):
            self.refusals += 1
            raise ValueError(
                'new row for relation "user_state" violates check constraint "sane"\n'
                "DETAIL: Failing row contains (secret-body-values)"
            )
        await super().commit(changes)


def like(n: int, user: str) -> Event:
    return Event(f"e{n}", user, "i", "like", time.time(), offset=n)


async def _processor(store: InMemoryStateStore, tmp_path: Path) -> Processor:
    await store.put_items([make_item("i", VECTOR, None, 8, time.time())])
    config = ProcessorConfig.of(make_settings(tmp_path, "memory"))
    processor = Processor(
        store, TtlCache(100, 60.0), ItemVectors(store, 100, dim=8), config, retries=RetryCounts()
    )
    await processor.start(InMemoryEventLog())
    return processor


async def _applied(processor: Processor, n: int) -> None:
    async def done() -> bool:
        return processor.tracker.in_flight == 0 and processor.tracker.last_begun >= n

    await eventually(done)


async def test_a_refused_row_is_quarantined_and_the_rest_of_the_checkpoint_commits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RefusingStore(poisoned={"poison-user"})
    processor = await _processor(store, tmp_path)
    try:
        users = ["a", "poison-user", "b", "c", "d"]
        await processor.dispatch([like(n + 1, u) for n, u in enumerate(users)])
        await _applied(processor, len(users))
        with caplog.at_level(logging.WARNING):
            # the rows reach the user table (what refuses them) when compacted: now
            await processor.checkpoint(compact=True)
        stored = await store.get_users(users)
        assert sorted(stored) == ["a", "b", "c", "d"]
        assert all(s.events_applied == 1 for s in stored.values())
        assert await store.get_watermark() == len(users)  # the position moved on
        assert processor.checkpointer.quarantine.counts == {"user": 1}
        (refused,) = processor.checkpointer.quarantine.latest
        assert refused.key == f"user:{user_digest('poison-user')[:16]}"
        assert refused.reason == (
            'ValueError: new row for relation "user_state" violates check constraint "sane"'
        )
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("quarantined" in m and refused.key in m for m in errors), errors
        # the quarantine's own lines name neither the user nor the row's values
        mine = [r.getMessage() for r in caplog.records if r.name == "recloop.services.refusals"]
        assert mine and not any("poison-user" in m or "secret-body" in m for m in mine), mine

        # The stream moves on: the next checkpoint holds other users only, and commits.
        await processor.dispatch([like(6, "e")])
        await _applied(processor, 6)
        await processor.checkpoint()
        assert (await store.get_users(["e"]))["e"].events_applied == 1
        assert await store.get_watermark() == 6
        assert processor.checkpointer.quarantine.total == 1
    finally:
        await processor.stop()


async def test_an_unavailable_store_is_waited_for_and_nothing_is_quarantined(
    tmp_path: Path,
) -> None:
    store = RefusingStore(poisoned=())
    processor = await _processor(store, tmp_path)
    try:
        # more failures than poison_attempts: the next checkpoint, whichever runs it
        store.down = 3 * ProcessorConfig.of(make_settings(tmp_path, "memory")).poison_attempts
        await processor.dispatch([like(1, "a"), like(2, "b")])
        await _applied(processor, 2)
        await processor.checkpoint()
        assert store.down == 0  # every failure was waited through
        assert sorted(await store.get_users(["a", "b"])) == ["a", "b"]
        assert processor.checkpointer.quarantine.total == 0
        assert await store.get_watermark() == 2
    finally:
        await processor.stop()


def test_a_reason_is_the_error_s_type_and_first_line() -> None:
    class DriverError(Exception):
        pass

    class Wrapped(Exception):
        orig = DriverError("value out of range\nDETAIL: the row's values")

    assert _reason(Wrapped("(x) value out of range\n[SQL: INSERT ...]")) == (
        "DriverError: value out of range"
    )
    assert _reason(ValueError("")) == "ValueError: "
    assert len(_reason(ValueError("x" * 1000))) == 200


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_row_postgresql_refuses_is_quarantined_and_counted(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    running, close = await start_app(settings_factory())
    container = running.container
    try:
        assert container.db is not None
        async with container.db.engine.begin() as connection:  # a real constraint refuses it
            await connection.execute(
                text(
                    "ALTER TABLE user_state ADD CONSTRAINT no_poison "
                    "CHECK (user_id <> 'poison-user')"
                )
            )
        await container.items.put_many([{"item_id": "i", "vector": VECTOR}])
        processor = container.processor
        users = ["a", "poison-user", "b"]
        await processor.dispatch([like(n + 1, u) for n, u in enumerate(users)])
        await _applied(processor, len(users))
        with caplog.at_level(logging.WARNING):
            # the rows reach user_state (where the constraint is) when compacted: now
            await processor.checkpoint(compact=True)
        stored = await container.store.get_users(users)
        assert sorted(stored) == ["a", "b"]
        assert await container.store.get_watermark() == len(users)
        assert processor.checkpointer.quarantine.counts == {"user": 1}
        (refused,) = processor.checkpointer.quarantine.latest
        assert "no_poison" in refused.reason and "CheckViolation" in refused.reason
        # no line of the log names the user (SQL parameters are hidden, no DETAIL shown)
        logged = [r.getMessage() for r in caplog.records]
        assert any("quarantined" in m for m in logged)
        assert not any("poison-user" in m for m in logged), logged

        r = await running.client.get("http://recloop/metrics")  # at the root
        scraped = samples(r.text)
        assert value(scraped, "recloop_checkpoint_rows_refused_total", kind="user") == 1.0
        assert value(scraped, "recloop_checkpoint_rows_refused_total", kind="exposure") == 0.0
    finally:
        await close()
