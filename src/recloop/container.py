"""Wiring: builds adapters and services from settings. The only place adapters are chosen."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore, TtlCache
from recloop.adapters.sql import SqlDatabase, SqlEventLog, SqlStateStore
from recloop.config import Settings
from recloop.core.events import SignalTable, TypeWeight
from recloop.core.preferences import LearningRate
from recloop.ports import Cache, EventLog, StateStore
from recloop.services.feedback import GroupCommitter, Processor, ProcessorConfig
from recloop.services.ingest import IngestService
from recloop.services.items import ItemService
from recloop.services.preferences import PreferenceService
from recloop.services.vectors import ItemVectors

log = logging.getLogger(__name__)

MEMORY_URL = "memory://"


@dataclass
class Container:
    settings: Settings
    event_log: EventLog
    store: StateStore
    cache: Cache
    processor: Processor
    committer: GroupCommitter
    ingest: IngestService
    items: ItemService
    preferences: PreferenceService
    db: SqlDatabase | None = None
    started: bool = field(default=False)

    async def start(self) -> None:
        if self.db is not None and self.settings.storage.auto_migrate:
            await self.db.migrate()
        await self.processor.start(self.event_log)
        self.committer.start()
        self.started = True

    async def stop(self) -> None:
        """Graceful: commit what is being accepted, apply everything, flush, close."""
        await self.committer.stop()
        await self.processor.stop()
        if self.db is not None:
            await self.db.dispose()
        self.started = False


def processor_config(settings: Settings) -> ProcessorConfig:
    fb = settings.feedback
    return ProcessorConfig(
        dim=settings.vectors.dim,
        rate=LearningRate(fb.base_alpha, fb.alpha_max),
        signals=SignalTable(
            {k: TypeWeight(v.strength, v.multiplier) for k, v in fb.types.items()},
            dwell_full_seconds=fb.dwell_full_seconds,
        ),
        explicit_workers=fb.explicit_workers,
        implicit_workers=fb.implicit_workers,
        implicit_flush_seconds=fb.implicit_flush_seconds,
        implicit_max_buffer=fb.implicit_max_buffer,
        explicit_queue_size=fb.explicit_queue_size,
        apply_batch_max=fb.apply_batch_max,
        max_users=settings.cache.max_users,
    )


def build_container(settings: Settings) -> Container:
    db: SqlDatabase | None = None
    event_log: EventLog
    store: StateStore
    if settings.storage.url == MEMORY_URL:
        event_log, store = InMemoryEventLog(), InMemoryStateStore()
    else:
        db = SqlDatabase(settings.storage.url, settings.storage.sqlite_synchronous)
        event_log, store = SqlEventLog(db), SqlStateStore(db)
    cache = TtlCache(settings.cache.max_users, settings.cache.read_ttl_seconds)
    vectors = ItemVectors(store, settings.cache.max_items)
    processor = Processor(store, cache, vectors, processor_config(settings))
    committer = GroupCommitter(event_log, processor, settings.ingest.group_commit_max_events)
    return Container(
        settings=settings,
        event_log=event_log,
        store=store,
        cache=cache,
        processor=processor,
        committer=committer,
        ingest=IngestService(committer, settings.feedback.max_future_seconds),
        items=ItemService(store, vectors, settings.vectors.dim),
        preferences=PreferenceService(store, cache),
        db=db,
    )
