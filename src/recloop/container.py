"""Wiring: builds adapters and services from settings. The only place adapters are chosen.

One builder per process kind, each returning what it built with its start-up order
as a list of :class:`Step` (started in order, stopped in reverse):

- :func:`build_container` — ``recloop serve`` (the API; embedded, it also applies);
- :func:`build_worker` — ``recloop worker`` (applies events from Kafka; no API);
- :func:`build_trainer` — ``recloop train`` (trains a model once).

They share :func:`_storage` (database, event log, stores) and :func:`_appliers` (the
processor and what it feeds: optimizer, guard, experiments, read cache).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from recloop.adapters.kafka import KafkaConfig, KafkaEventLog
from recloop.adapters.kafka.log import KafkaEventSource
from recloop.adapters.kafka.spool import SpooledEventLog
from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore, TtlCache
from recloop.adapters.memory.history import InMemoryHistoryStore
from recloop.adapters.memory.privacy import InMemoryPrivacyStore
from recloop.adapters.ratelimit import MemoryRateLimiter, shared_limiter
from recloop.adapters.redis import SharedCache
from recloop.adapters.sql import SqlDatabase, SqlEventLog, SqlStateStore
from recloop.adapters.sql.history import SqlHistoryStore
from recloop.adapters.sql.privacy import SqlPrivacyStore
from recloop.adapters.sql.training import training_reader
from recloop.config import Settings
from recloop.core.auth import KeyRing
from recloop.core.breaker import CircuitBreaker
from recloop.core.errors import ConfigError
from recloop.core.events import Event
from recloop.ports import (
    Cache,
    EventLog,
    Forgettable,
    HistoryStore,
    Impression,
    PrivacyStore,
    StateStore,
)
from recloop.resilience import RetryCounts
from recloop.services.batching import GroupCommit
from recloop.services.experiments import ExperimentService
from recloop.services.feedback import Processor, ProcessorConfig, event_log_writer
from recloop.services.guard import GuardService
from recloop.services.history import HistoryService
from recloop.services.ingest import IngestService
from recloop.services.items import ItemService
from recloop.services.learning import LearningService
from recloop.services.limits import RateLimits
from recloop.services.optimizer import Optimizer
from recloop.services.preferences import PreferenceService
from recloop.services.privacy import CachedReads, PrivacyService
from recloop.services.ranking import RankConfig, Ranker, impression_writer
from recloop.services.retraction import Retraction, RetractionConfig
from recloop.services.tasks import stop_tasks
from recloop.services.vectors import ItemVectors
from recloop.services.worker import Worker

MEMORY_URL = "memory://"

log = logging.getLogger(__name__)


# -- start/stop ------------------------------------------------------------------------


async def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Step:
    """One component's start and stop, in a process's start-up order."""

    name: str
    start: Callable[[], Awaitable[None]] = _nothing
    stop: Callable[[], Awaitable[None]] = _nothing


async def start_steps(steps: Sequence[Step]) -> None:
    """Start ``steps`` in order."""
    for step in steps:
        await step.start()


async def stop_steps(steps: Sequence[Step]) -> None:
    """Stop ``steps`` in reverse order (graceful: each stop finishes its work)."""
    for step in reversed(steps):
        await step.stop()


class _Background:
    """A task started by a step and cancelled by it (the distributed refresh)."""

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self._name, self._run = name, run
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async def run() -> None:
            await self._run()

        self._task = asyncio.create_task(run(), name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_tasks(task)


# -- helpers ----------------------------------------------------------------------------


async def check_dims(store: StateStore, dim: int) -> None:
    """Refuse ``vectors.dim`` if the store holds vectors of another length (ConfigError)."""
    other = sorted((await store.stored_dims()) - {dim})
    if other:
        raise ConfigError(
            f"vectors.dim is {dim}, but the stored vectors have {other[0]} dimensions: "
            f"start with vectors.dim: {other[0]} (RECLOOP_VECTORS__DIM={other[0]}), or "
            "with a new storage.url to learn from scratch at the new dimension"
        )


async def preflight(settings: Settings) -> None:
    """What ``recloop serve`` and ``recloop worker`` check before they start serving:
    the schema is current (when ``storage.auto_migrate``) and the stored vectors have
    ``vectors.dim`` dimensions. Raises ConfigError with what to do."""
    if settings.storage.url == MEMORY_URL:
        return
    db = SqlDatabase(settings.storage.url, settings.storage.sqlite_synchronous)
    try:
        if settings.storage.auto_migrate:
            await db.migrate()
        await check_dims(SqlStateStore(db), settings.vectors.dim)
    finally:
        await db.dispose()


async def refresh_forever(period: float, *steps: Callable[[], Awaitable[None]]) -> None:
    """Reload, every ``period`` s, what other processes change (distributed deployment)."""
    while True:
        await asyncio.sleep(period)
        for step in steps:
            try:
                await step()
            except Exception as exc:  # the database is down: serve what is known, retry
                log.warning("refresh from the state store failed: %s", exc)


def breaker(settings: Settings, name: str) -> CircuitBreaker:
    """A circuit breaker for dependency ``name``, as ``resilience`` configures it."""
    r = settings.resilience
    return CircuitBreaker(
        name,
        failure_threshold=r.breaker_failures,
        window_seconds=r.breaker_window_seconds,
        open_seconds=r.breaker_open_seconds,
    )


def rate_limits(settings: Settings) -> RateLimits | None:
    """The ingest path's rate limits (None: ``rate_limits.enabled`` is false)."""
    r = settings.rate_limits
    if not r.enabled:
        return None
    classes = {"explicit": r.explicit, "implicit": r.implicit, "key": r.per_key}
    try:
        shared = None
        if r.storage != "memory://":
            shared = shared_limiter(classes, r.storage, r.key_prefix)
        return RateLimits(MemoryRateLimiter(classes), shared, breaker(settings, "rate_limits"))
    except Exception as exc:  # an unknown scheme or a missing driver
        raise ConfigError(f"rate_limits.storage: {exc}") from None


def kafka_config(settings: Settings) -> KafkaConfig:
    """The Kafka clients' configuration (``event_log.kafka``)."""
    return KafkaConfig.of(settings.event_log.kafka)


def _read_cache(settings: Settings) -> tuple[Cache, SharedCache | None]:
    local = TtlCache(settings.cache.max_users, settings.cache.read_ttl_seconds)
    if settings.cache.shared_url is None:
        return local, None
    shared = SharedCache(
        settings.cache.shared_url, local=local, ttl_seconds=settings.cache.read_ttl_seconds
    )
    return shared, shared


# -- the parts every process kind shares -----------------------------------------------


@dataclass(slots=True)
class Storage:
    """The database (None: in memory), the event log and the stores on it."""

    event_log: EventLog
    store: StateStore
    privacy_store: PrivacyStore
    history_store: HistoryStore
    db: SqlDatabase | None = None

    def step(self, settings: Settings) -> Step:
        """Migrate (``storage.auto_migrate``) and check the vectors' dimension; dispose."""

        async def start() -> None:
            if self.db is not None and settings.storage.auto_migrate:
                await self.db.migrate()
            await check_dims(self.store, settings.vectors.dim)

        async def stop() -> None:
            if self.db is not None:
                await self.db.dispose()

        return Step("storage", start, stop)


def _storage(settings: Settings) -> Storage:
    if settings.storage.url == MEMORY_URL:
        if settings.event_log.kind == "kafka":
            raise ConfigError(
                "event_log.kind: kafka needs a shared database in storage.url (PostgreSQL)"
            )
        memory_log, memory_store = InMemoryEventLog(), InMemoryStateStore()
        return Storage(
            memory_log,
            memory_store,
            InMemoryPrivacyStore(memory_log, memory_store),
            InMemoryHistoryStore(),
        )
    db = SqlDatabase(
        settings.storage.url,
        settings.storage.sqlite_synchronous,
        breaker=breaker(settings, "storage"),
    )
    return Storage(
        SqlEventLog(db),
        SqlStateStore(db),
        SqlPrivacyStore(db),
        SqlHistoryStore(db),
        db,
    )


@dataclass(slots=True)
class Appliers:
    """The processor and what it feeds, shared by ``serve`` and ``worker``."""

    retries: RetryCounts
    cache: Cache
    shared_cache: SharedCache | None
    vectors: ItemVectors
    optimizer: Optimizer
    guard: GuardService
    experiments: ExperimentService
    processor: Processor
    preferences: PreferenceService
    """What was learnt about each user, as the read path sees it."""


def _cache_step(shared: SharedCache | None) -> Step:
    """The shared read cache's connection (nothing to start for a local one)."""
    return Step("cache") if shared is None else Step("cache", shared.start, shared.stop)


def _appliers(
    settings: Settings,
    storage: Storage,
    *,
    role: str,
    guard_clock: Callable[[], float] | None = None,
    unsent: Callable[[], int] | None = None,
) -> Appliers:
    """``role``: ``embedded`` (this process logs and applies), ``api`` (a distributed
    API instance: workers apply) or ``worker``."""
    embedded = role == "embedded"
    spam = settings.spam.enabled
    store = storage.store
    cache, shared_cache = _read_cache(settings)
    retries = RetryCounts()
    vectors = ItemVectors(store, settings.cache.max_items, retries, dim=settings.vectors.dim)
    optimizer = Optimizer(store, settings.bandit)
    guard = GuardService(
        store,
        settings.spam,
        max_users=settings.cache.max_users,
        **({} if guard_clock is None else {"clock": guard_clock}),
    )
    experiments = ExperimentService(
        store,
        storage.event_log,
        settings.experiments,
        algorithms=settings.bandit.algorithms,
        retries=retries,
        holds=lambda user_id: processor.holds(user_id),
        committed_offset=(lambda: processor.tracker.watermark) if embedded else None,
        excluded=guard.flagged_users if spam else None,
        dispatched=(lambda: processor.tracker.last_begun) if embedded else None,
        defer_covariates=embedded,
        unsent=unsent,
        # Embedded, this process is the one writer of users' state: the read cache knows.
        stored=(lambda user_id: preferences.exists(user_id)) if embedded else None,
    )
    guard_evidence = partial(guard.observe, wait_for_more=True) if spam and embedded else None

    async def taken(events: Sequence[Event]) -> None:
        """What the processor takes to apply: the guard's evidence (embedded) and the
        experiments' waiting events (a worker reports them: ``build_worker``)."""
        if guard_evidence is not None:
            await guard_evidence(events)
        await experiments.taken(events)

    processor = Processor(
        store,
        cache,
        vectors,
        ProcessorConfig.of(settings),
        on_counts=optimizer.record,
        observer=experiments,
        gate=guard if spam else None,
        retries=retries,
        # Embedded, the guard gathers its evidence from the events the processor applies
        # (after the 202); distributed, the workers feed it (services.worker). Both: the
        # experiments keep the events that will move them (see ``taken``).
        evidence=taken,
        # the users the guard kept waiting for the next round are judged once none comes
        paused=guard.judge_waiting if spam and embedded else None,
    )
    preferences = PreferenceService(
        store, cache, retries, live=processor.preferences, never_stored=processor.never_stored
    )
    return Appliers(
        retries, cache, shared_cache, vectors, optimizer, guard, experiments, processor, preferences
    )


def _privacy(
    settings: Settings,
    storage: Storage,
    appliers: Appliers,
    *,
    holders: Sequence[Forgettable] = (),
    limits: RateLimits | None = None,
    spool: SpooledEventLog | None = None,
    retraction: Retraction | None = None,
) -> PrivacyService:
    return PrivacyService(
        storage.privacy_store,
        storage.event_log,
        storage.store,
        appliers.processor,
        appliers.experiments,
        settings.privacy,
        holders=[appliers.guard, CachedReads(appliers.cache), *holders],
        distributed=settings.event_log.kind == "kafka",
        limits=limits,
        spool=spool,
        retraction=retraction,
    )


def _learning(settings: Settings, storage: Storage, guard: GuardService) -> LearningService | None:
    if not settings.learning.enabled:
        return None
    spam = settings.spam.enabled
    return LearningService(
        storage.store,
        storage.event_log,
        settings.learning,
        reliability=guard.reliability if spam else None,
        training_reader=None if storage.db is None else training_reader(settings.storage.url),
        excluded=guard.flagged_users if spam else None,
    )


# -- recloop serve ---------------------------------------------------------------------


@dataclass
class Container:
    """``recloop serve``: the API's services (embedded: also the processor's work)."""

    settings: Settings
    event_log: EventLog
    store: StateStore
    cache: Cache
    processor: Processor
    committer: GroupCommit[Event, int | None]
    impressions: GroupCommit[Impression, None]
    ingest: IngestService
    items: ItemService
    preferences: PreferenceService
    optimizer: Optimizer
    experiments: ExperimentService
    ranker: Ranker
    guard: GuardService
    keys: KeyRing
    db: SqlDatabase | None = None
    spool: SpooledEventLog | None = None
    """Distributed: the Kafka producer with its local spool."""
    shared_cache: SharedCache | None = None
    """Distributed: the read cache kept coherent through Redis."""
    learning: LearningService | None = None
    privacy: PrivacyService | None = None
    retraction: Retraction | None = None
    """What flagged users taught the optimizer, left out (None: spam detection off)."""
    history: HistoryService | None = None
    """The console's plots over time (sampled where ``learning.coordinator``)."""
    retries: RetryCounts = field(default_factory=RetryCounts)
    """Storage calls retried, per operation (``recloop.resilience``)."""
    steps: list[Step] = field(default_factory=list, repr=False)
    """The start-up order (:func:`build_container` fills it)."""

    def breakers(self) -> dict[str, CircuitBreaker]:
        """The circuit breaker of each external dependency, by name: ``storage``
        (PostgreSQL or SQLite), ``rate_limits`` (their shared Redis), ``cache`` (the
        shared cache's Redis); only those this deployment has."""
        found = _breakers(self.db, self.shared_cache)
        limits = self.ingest.limits
        if limits is not None and limits.shared:
            found["rate_limits"] = limits.breaker
        return found

    def user_key(self, raw_id: str) -> str:
        """The id stored for a user id given at the edge: every route taking a user id
        maps it here (``privacy.pseudonymize_user_ids``: its HMAC pseudonym)."""
        return raw_id if self.privacy is None else self.privacy.user_key(raw_id)

    @property
    def distributed(self) -> bool:
        """Whether events go to Kafka and workers apply them (this process serves the API)."""
        return self.spool is not None

    async def start(self) -> None:
        await start_steps(self.steps)

    async def stop(self) -> None:
        """Graceful: commit what is being accepted, apply everything, flush, close."""
        await stop_steps(self.steps)


def _breakers(
    db: SqlDatabase | None, shared_cache: SharedCache | None
) -> dict[str, CircuitBreaker]:
    found: dict[str, CircuitBreaker] = {}
    if db is not None:
        found["storage"] = db.breaker
    if shared_cache is not None:
        found["cache"] = shared_cache.breaker
    return found


def build_container(
    settings: Settings, guard_clock: Callable[[], float] | None = None
) -> Container:
    """``recloop serve``: every service the API uses, wired for ``settings``.

    ``guard_clock`` is the guard's "now" (``recloop import``: the time of the history
    being imported, so that users are judged as of their own events).
    """
    distributed = settings.event_log.kind == "kafka"
    storage = _storage(settings)
    store, event_log = storage.store, storage.event_log
    spool: SpooledEventLog | None = None
    if distributed:
        spool = SpooledEventLog(
            KafkaEventLog(kafka_config(settings)),
            settings.event_log.spool_path,
            send_timeout=settings.event_log.send_timeout_seconds,
        )
    a = _appliers(
        settings,
        storage,
        role="api" if distributed else "embedded",
        guard_clock=guard_clock,
        unsent=None if spool is None else (lambda: spool.spooled),
    )
    processor, guard, experiments, optimizer = a.processor, a.guard, a.experiments, a.optimizer
    spam = settings.spam.enabled
    if spool is not None:
        committer = kafka_writer(spool, settings.ingest.group_commit_max_events)
    else:
        committer = event_log_writer(
            event_log,
            processor,
            settings.ingest.group_commit_max_events,
            keep_text=settings.privacy.keep_review_text,
        )
    preferences = a.preferences
    impressions = impression_writer(store)
    limits = rate_limits(settings)
    learning = _learning(settings, storage, guard)
    retraction = (
        Retraction(
            event_log,
            guard,
            optimizer,
            RetractionConfig.of(settings),
            store,
            live=None if distributed else processor.preferences,
        )
        if spam
        else None
    )
    privacy = _privacy(
        settings,
        storage,
        a,
        holders=[experiments, *([] if learning is None else [learning])],
        limits=limits,
        spool=spool,
        retraction=retraction,
    )
    ranker = Ranker(
        preferences,
        optimizer,
        a.vectors,
        impressions,
        store,
        event_log,
        RankConfig.of(settings),
        experiments=experiments,
        learning=learning,
        retries=a.retries,
    )
    history = HistoryService(
        storage.history_store, settings.console, settings.learning, optimizer, experiments, learning
    )
    container = Container(
        settings=settings,
        event_log=event_log,
        store=store,
        cache=a.cache,
        processor=processor,
        committer=committer,
        impressions=impressions,
        ingest=IngestService(
            committer,
            settings.feedback.max_future_seconds,
            limits=limits,
            guard=guard if spam else None,
            user_key=privacy.user_key if settings.privacy.pseudonymize_user_ids else None,
            algorithms=tuple(settings.bandit.algorithms),
        ),
        items=ItemService(store, a.vectors, settings.vectors.dim, retries=a.retries),
        preferences=preferences,
        optimizer=optimizer,
        experiments=experiments,
        ranker=ranker,
        guard=guard,
        keys=KeyRing((k.name, k.sha256, k.roles) for k in settings.auth.keys),
        db=storage.db,
        spool=spool,
        shared_cache=a.shared_cache,
        learning=learning,
        privacy=privacy,
        history=history,
        retraction=retraction,
        retries=a.retries,
    )
    container.steps = _serve_steps(container, storage)
    return container


def _serve_steps(c: Container, storage: Storage) -> list[Step]:
    """``recloop serve``'s start-up order (stopped in reverse)."""
    settings, privacy, learning = c.settings, c.privacy, c.learning
    assert privacy is not None and c.history is not None  # build_container builds both
    limits = c.ingest.limits
    steps = [
        storage.step(settings),
        _cache_step(c.shared_cache),
        Step("rate_limits", stop=_nothing if limits is None else limits.close),
        # before the replay: it skips erased users' events
        Step("privacy", privacy.start, privacy.stop),
        Step("optimizer", c.optimizer.start),
        Step("experiments", c.experiments.start, c.experiments.stop),
        Step("guard", c.guard.start, c.guard.stop),
    ]
    if c.retraction is not None:
        steps.append(Step("retraction", c.retraction.start, c.retraction.stop))
    if c.spool is not None:
        steps.append(Step("spool", c.spool.start, c.spool.stop))
        refresher = _Background(
            "refresher",
            partial(
                refresh_forever,
                settings.event_log.refresh_seconds,
                c.optimizer.reload,
                c.guard.start,
                partial(c.experiments.refresh, statistics=True),
                *([] if learning is None else [learning.reload]),
                privacy.reload_tombstones,
            ),
        )
        steps.append(Step("refresher", refresher.start, refresher.stop))
    else:
        steps.append(
            Step("processor", partial(_start_processor, c.processor, c.event_log), c.processor.stop)
        )
    steps += [
        Step("committer", _started(c.committer.start), c.committer.stop),
        Step("impressions", _started(c.impressions.start), c.impressions.stop),
    ]
    coordinator = settings.learning.coordinator
    if learning is not None:
        steps.append(
            Step("learning", partial(learning.start, background=coordinator), learning.stop)
        )
    if coordinator:
        steps.append(Step("history", c.history.start, c.history.stop))
    return steps


async def _start_processor(processor: Processor, event_log: EventLog) -> None:
    await processor.start(event_log)


def _started(start: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        start()

    return run


def kafka_writer(spool: SpooledEventLog, max_events: int) -> GroupCommit[Event, int | None]:
    """The group commit of a distributed API instance: events are durable once Kafka
    acknowledged them or the local spool holds them. Duplicates are told apart by the
    workers, so every event is reported accepted here (offset 0: not known yet)."""

    async def append(events: Sequence[Event]) -> list[int | None]:
        await spool.append(events)
        return [0] * len(events)

    return GroupCommit("kafka-writer", append, max_events)


# -- recloop worker --------------------------------------------------------------------


@dataclass
class WorkerContainer:
    """``recloop worker``: the processor and what it feeds, fed from the event topic.
    No API: no ingest, ranking, rate limits, learning or console history."""

    settings: Settings
    worker: Worker
    event_log: EventLog
    """The events workers applied, archived (read by user, by experiments' CUPED)."""
    store: StateStore
    processor: Processor
    experiments: ExperimentService
    guard: GuardService
    privacy: PrivacyService
    db: SqlDatabase | None
    shared_cache: SharedCache | None
    retries: RetryCounts
    steps: list[Step] = field(default_factory=list, repr=False)

    def breakers(self) -> dict[str, CircuitBreaker]:
        """As :meth:`Container.breakers` (a worker has no rate limits)."""
        return _breakers(self.db, self.shared_cache)

    async def start(self) -> None:
        """Everything but the worker's :meth:`~recloop.services.worker.Worker.run`."""
        await start_steps(self.steps)

    async def stop(self) -> None:
        """After ``run`` returned: close the worker (apply and commit what it took), then
        the rest."""
        await stop_steps(self.steps)


def build_worker(settings: Settings) -> tuple[Worker, WorkerContainer]:
    """A ``recloop worker``: a processor fed from the event topic."""
    if settings.event_log.kind != "kafka":
        raise ConfigError("recloop worker needs event_log.kind: kafka")
    storage = _storage(settings)
    assert storage.db is not None  # _storage refuses kafka without a database
    a = _appliers(settings, storage, role="worker")
    config = kafka_config(settings)
    worker = Worker(
        lambda revoked, assigned: KafkaEventSource(
            config, on_revoked=revoked, on_assigned=assigned
        ),
        a.processor,
        storage.store,
        SqlEventLog(storage.db, keep_text=settings.privacy.keep_review_text),
        KafkaEventLog(config),
        guard=a.guard if settings.spam.enabled else None,
        commit_seconds=settings.event_log.worker_commit_seconds,
        report=a.experiments.report_waiting,
    )
    privacy = _privacy(settings, storage, a, holders=[a.experiments])
    refresher = _Background(
        "refresher",
        partial(
            refresh_forever,
            settings.event_log.refresh_seconds,
            a.guard.start,
            partial(a.experiments.refresh, statistics=False),
            privacy.reload_tombstones,
        ),
    )
    steps = [
        storage.step(settings),
        _cache_step(a.shared_cache),
        Step("experiments", a.experiments.start, a.experiments.stop),
        Step("guard", a.guard.start, a.guard.stop),
        # the key check and the erased users' tombstones (the API instances purge)
        Step("privacy", partial(privacy.start, purge=False), privacy.stop),
        Step("worker", worker.start, worker.close),
        Step("refresher", refresher.start, refresher.stop),
    ]
    return worker, WorkerContainer(
        settings=settings,
        worker=worker,
        event_log=storage.event_log,
        store=storage.store,
        processor=a.processor,
        experiments=a.experiments,
        guard=a.guard,
        privacy=privacy,
        db=storage.db,
        shared_cache=a.shared_cache,
        retries=a.retries,
        steps=steps,
    )


# -- recloop train ---------------------------------------------------------------------


@dataclass
class Trainer:
    """``recloop train``: the learning service and what it reads."""

    learning: LearningService
    db: SqlDatabase | None
    steps: list[Step] = field(default_factory=list, repr=False)

    async def start(self) -> None:
        await start_steps(self.steps)

    async def stop(self) -> None:
        await stop_steps(self.steps)


def build_trainer(settings: Settings) -> Trainer:
    """``recloop train``: storage, the guard's stored verdicts (a flagged user's
    impressions do not train), and the learning service, without its schedule."""
    if not settings.learning.enabled:
        raise ConfigError("learning.enabled is false")
    storage = _storage(settings)
    guard = GuardService(storage.store, settings.spam, max_users=settings.cache.max_users)
    learning = _learning(settings, storage, guard)
    assert learning is not None  # learning.enabled
    steps = [
        storage.step(settings),
        Step("guard", guard.start, guard.stop),
        Step("learning", partial(learning.start, background=False), learning.stop),
    ]
    return Trainer(learning, storage.db, steps)
