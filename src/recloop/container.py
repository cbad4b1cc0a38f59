"""Wiring: builds adapters and services from settings. The only place adapters are chosen."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

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
from recloop.core.events import Event, SignalTable, TypeWeight
from recloop.core.preferences import LearningRate
from recloop.core.segments import SegmentRules
from recloop.core.spam import SpamConfig
from recloop.ports import Cache, EventLog, HistoryStore, Impression, PrivacyStore, StateStore
from recloop.resilience import RetryCounts
from recloop.services.batching import GroupCommit
from recloop.services.experiments import ExperimentsConfig, ExperimentService
from recloop.services.feedback import Processor, ProcessorConfig, event_log_writer
from recloop.services.guard import GuardConfig, GuardService
from recloop.services.history import HistoryConfig, HistoryService
from recloop.services.ingest import IngestService
from recloop.services.items import ItemService
from recloop.services.learning import LearningConfig, LearningService
from recloop.services.limits import RateLimits
from recloop.services.optimizer import Optimizer, OptimizerConfig
from recloop.services.preferences import PreferenceService
from recloop.services.privacy import PrivacyConfig, PrivacyService
from recloop.services.ranking import RankConfig, Ranker, impression_writer
from recloop.services.retraction import Retraction, RetractionConfig
from recloop.services.tasks import stop_tasks
from recloop.services.vectors import ItemVectors
from recloop.services.worker import Worker

MEMORY_URL = "memory://"

log = logging.getLogger(__name__)


@dataclass
class Container:
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
    spool: Any = None
    """Distributed: the Kafka producer with its local spool (``SpooledEventLog``)."""
    shared_cache: Any = None
    """Distributed: the read cache kept coherent through Redis (``SharedCache``)."""
    learning: LearningService | None = None
    privacy: PrivacyService | None = None
    retraction: Retraction | None = None
    """What flagged users taught the optimizer, left out (None: spam detection off)."""
    history: HistoryService | None = None
    """The console's plots over time (sampled where ``learning.coordinator``)."""
    retries: RetryCounts = field(default_factory=RetryCounts)
    """Storage calls retried, per operation (``recloop.resilience``)."""
    _refresher: asyncio.Task[None] | None = field(default=None, repr=False)

    def breakers(self) -> dict[str, CircuitBreaker]:
        """The circuit breaker of each external dependency, by name: ``storage``
        (PostgreSQL or SQLite), ``rate_limits`` (their shared Redis), ``cache`` (the
        shared cache's Redis); only those this deployment has."""
        found: dict[str, CircuitBreaker] = {}
        if self.db is not None:
            found["storage"] = self.db.breaker
        limits = self.ingest.limits
        if limits is not None and limits.shared:
            found["rate_limits"] = limits.breaker
        if self.shared_cache is not None:
            found["cache"] = self.shared_cache.breaker
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
        if self.db is not None and self.settings.storage.auto_migrate:
            await self.db.migrate()
        await check_dims(self.store, self.settings.vectors.dim)
        if self.shared_cache is not None:
            await self.shared_cache.start()
        if self.privacy is not None:  # before the replay: it skips erased users' events
            await self.privacy.start()
        await self.optimizer.start()
        await self.experiments.start()
        await self.guard.start()
        if self.retraction is not None:
            await self.retraction.start()
        if self.spool is not None:
            await self.spool.start()
            self._refresher = asyncio.create_task(
                refresh_forever(
                    self.settings.event_log.refresh_seconds,
                    self.optimizer.reload,
                    self.guard.start,
                    partial(self.experiments.refresh, statistics=True),
                    *([] if self.learning is None else [self.learning.reload]),
                    *([] if self.privacy is None else [self.privacy.reload_tombstones]),
                ),
                name="refresher",
            )
        else:
            await self.processor.start(self.event_log)
        self.committer.start()
        self.impressions.start()
        if self.learning is not None:
            await self.learning.start(background=self.settings.learning.coordinator)
        if self.history is not None and self.settings.learning.coordinator:
            await self.history.start()

    async def stop(self) -> None:
        """Graceful: commit what is being accepted, apply everything, flush, close."""
        if self.history is not None:
            await self.history.stop()
        if self.privacy is not None:
            await self.privacy.stop()
        if self.learning is not None:
            await self.learning.stop()
        await self.committer.stop()
        await self.impressions.stop()
        await stop_tasks(self._refresher)
        if self.spool is not None:
            await self.spool.stop()
        else:
            await self.processor.stop()
        await self.experiments.stop()
        if self.retraction is not None:
            await self.retraction.stop()
        await self.guard.stop()
        if self.ingest.limits is not None:
            await self.ingest.limits.close()
        if self.shared_cache is not None:
            await self.shared_cache.stop()
        if self.db is not None:
            await self.db.dispose()


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


def segment_rules(settings: Settings) -> SegmentRules:
    s = settings.segments
    return SegmentRules(s.new_max_interactions, s.inactive_days, s.power_min_interactions)


def processor_config(settings: Settings) -> ProcessorConfig:
    fb = settings.feedback
    return ProcessorConfig(
        dim=settings.vectors.dim,
        rate=LearningRate(fb.base_alpha, fb.alpha_max),
        signals=SignalTable(
            {k: TypeWeight(v.strength, v.multiplier) for k, v in fb.types.items()},
            dwell_full_seconds=fb.dwell_full_seconds,
        ),
        implicit_flush_seconds=fb.implicit_flush_seconds,
        implicit_max_buffer=fb.implicit_max_buffer,
        apply_batch_max=fb.apply_batch_max,
        max_pending=fb.max_pending_events,
        checkpoint_seconds=fb.checkpoint_seconds,
        max_users=settings.cache.max_users,
        segment_rules=segment_rules(settings),
        algorithms=frozenset(settings.bandit.algorithms),
        bucket_seconds=settings.bandit.bucket_minutes * 60.0,
    )


def learning_config(settings: Settings) -> LearningConfig:
    s = settings.learning
    return LearningConfig(
        attribution_window_minutes=s.attribution_window_minutes,
        training_days=s.training_days,
        retrain_schedule=s.retrain_schedule,
        min_new_examples=s.min_new_examples,
        holdout_fraction=s.holdout_fraction,
        min_auc_gain=s.min_auc_gain,
        max_logloss_increase=s.max_logloss_increase,
        auto_deploy=s.auto_deploy,
        canary_fraction=s.canary_fraction,
        min_canary_impressions=s.min_canary_impressions,
        rollback_margin=s.rollback_margin,
        alpha=s.alpha,
        watch_impressions=s.watch_impressions,
        monitor_seconds=s.monitor_seconds,
        learner=s.learner,
    )


def history_config(settings: Settings) -> HistoryConfig:
    c, learning = settings.console, settings.learning
    return HistoryConfig(
        interval_seconds=c.history_interval_seconds,
        retention_seconds=c.history_retention_days * 86_400.0,
        window_seconds=c.history_window_hours * 3600.0,
        power_mde=c.power_mde,
        power=c.power,
        canary_min_impressions=learning.min_canary_impressions,
        canary_margin=learning.rollback_margin,
        canary_alpha=learning.alpha,
    )


def privacy_config(settings: Settings) -> PrivacyConfig:
    p = settings.privacy
    key: bytes | None = None
    if p.pseudonymize_user_ids:
        secret = "" if p.id_key is None else p.id_key.get_secret_value()
        if len(secret) < 16:
            raise ConfigError("privacy.id_key must be at least 16 characters long")
        key = secret.encode()
    # The training examples' labels are events: a window past their retention would
    # learn from impressions whose clicks are gone (all negatives).
    if settings.learning.enabled and settings.learning.training_days > min(
        p.event_retention_days, p.training_retention_days
    ):
        raise ConfigError(
            f"learning.training_days ({settings.learning.training_days:g}) must not exceed "
            f"privacy.event_retention_days ({p.event_retention_days:g}) nor "
            f"privacy.training_retention_days ({p.training_retention_days:g})"
        )
    if settings.experiments.cuped_days > p.event_retention_days:
        raise ConfigError(
            f"experiments.cuped_days ({settings.experiments.cuped_days:g}) must not exceed "
            f"privacy.event_retention_days ({p.event_retention_days:g})"
        )
    return PrivacyConfig(
        event_retention_days=p.event_retention_days,
        training_retention_days=p.training_retention_days,
        purge_interval_seconds=p.purge_interval_seconds,
        purge_batch=p.purge_batch,
        purge_pause_seconds=p.purge_pause_seconds,
        id_key=key,
    )


def optimizer_config(settings: Settings) -> OptimizerConfig:
    b = settings.bandit
    return OptimizerConfig(
        algorithms=tuple(b.algorithms),
        default_weights=b.default_weights,
        prior_ctr=b.prior_ctr,
        prior_strength=b.prior_strength,
        prior_min_strength=b.prior_min_strength,
        bucket_seconds=b.bucket_minutes * 60.0,
        window_seconds=b.window_days * 86400.0,
        mode=b.weight_mode,
        draws=b.draws,
        min_weight=b.min_weight,
        cache_seconds=b.cache_seconds,
        min_impressions=b.min_impressions,
        credible_level=b.credible_level,
        disable_ctr=b.disable_ctr,
        cooldown_seconds=b.cooldown_hours * 3600.0,
        seed=b.seed,
    )


def rank_config(settings: Settings) -> RankConfig:
    x = settings.exploration
    return RankConfig(
        epsilons=dict(x.epsilon),
        segment_rules=segment_rules(settings),
        rrf_k=settings.rank.rrf_k,
        affinity_weight=settings.rank.affinity_weight,
        fusion=settings.rank.fusion,
        seed=x.seed,
        evidence_half=x.evidence_half,
        explore_top=x.top,
        temperature=x.temperature,
        probe=x.probe,
        segment_evidence_half=x.segment_evidence_half,
        affinity_list=settings.rank.affinity_list,
    )


def kafka_config(settings: Settings) -> KafkaConfig:
    k = settings.event_log.kafka
    return KafkaConfig(
        bootstrap_servers=k.bootstrap_servers,
        topic=k.topic,
        group_id=k.group_id,
        client_id=k.client_id,
        enable_idempotence=k.enable_idempotence,
        linger_ms=k.linger_ms,
        request_timeout_ms=k.request_timeout_ms,
        session_timeout_ms=k.session_timeout_ms,
        heartbeat_interval_ms=k.heartbeat_interval_ms,
        fetch_max_wait_ms=k.fetch_max_wait_ms,
    )


def _read_cache(settings: Settings) -> tuple[Cache, SharedCache | None]:
    local = TtlCache(settings.cache.max_users, settings.cache.read_ttl_seconds)
    if settings.cache.shared_url is None:
        return local, None
    shared = SharedCache(
        settings.cache.shared_url, local=local, ttl_seconds=settings.cache.read_ttl_seconds
    )
    return shared, shared


def build_container(
    settings: Settings, guard_clock: Callable[[], float] | None = None
) -> Container:
    """Every service, wired for ``settings``.

    ``guard_clock`` is the guard's "now" (``recloop import``: the time of the history
    being imported, so that users are judged as of their own events).
    """
    db: SqlDatabase | None = None
    event_log: EventLog
    store: StateStore
    distributed = settings.event_log.kind == "kafka"
    if settings.storage.url == MEMORY_URL:
        if distributed:
            raise ConfigError(
                "event_log.kind: kafka needs a shared database in storage.url (PostgreSQL)"
            )
        memory_log, memory_store = InMemoryEventLog(), InMemoryStateStore()
        event_log, store = memory_log, memory_store
        privacy_store: PrivacyStore = InMemoryPrivacyStore(memory_log, memory_store)
        history_store: HistoryStore = InMemoryHistoryStore()
    else:
        db = SqlDatabase(
            settings.storage.url,
            settings.storage.sqlite_synchronous,
            breaker=breaker(settings, "storage"),
        )
        event_log, store = SqlEventLog(db), SqlStateStore(db)
        privacy_store = SqlPrivacyStore(db)
        history_store = SqlHistoryStore(db)
    cache, shared_cache = _read_cache(settings)
    retries = RetryCounts()
    vectors = ItemVectors(store, settings.cache.max_items, retries, dim=settings.vectors.dim)
    optimizer = Optimizer(store, optimizer_config(settings))
    sp = settings.spam
    guard = GuardService(
        store,
        GuardConfig(
            spam=SpamConfig(
                suspect_threshold=sp.suspect_threshold,
                block_threshold=sp.block_threshold,
                max_explicit_per_second=sp.max_explicit_per_second,
                max_actions_per_second=sp.max_actions_per_second,
            ),
            judge_every_events=sp.judge_every_events,
            judge_every_seconds=sp.judge_every_seconds,
            min_new_events=sp.min_new_events,
            judge_within_seconds=sp.judge_within_seconds,
            max_users=settings.cache.max_users,
        ),
        **({} if guard_clock is None else {"clock": guard_clock}),
    )
    x = settings.experiments
    experiments = ExperimentService(
        store,
        event_log,
        ExperimentsConfig(
            x.cuped_days,
            x.correction,
            x.srm_threshold,
            x.sequential_tuning,
            tuple(settings.bandit.algorithms),
            x.rollout_recheck_seconds,
            x.pending_scan_max,
            x.covariate_seconds,
        ),
        retries=retries,
        holds=lambda user_id: processor.holds(user_id),
        committed_offset=None if distributed else lambda: processor.tracker.watermark,
        excluded=guard.flagged_users if sp.enabled else None,
        dispatched=None if distributed else lambda: processor.tracker.last_begun,
        defer_covariates=not distributed,
        unsent=(lambda: 0 if spool is None else spool.spooled) if distributed else None,
    )
    guard_evidence = guard.observe if sp.enabled and not distributed else None

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
        processor_config(settings),
        on_counts=optimizer.record,
        observer=experiments,
        gate=guard if sp.enabled else None,
        retries=retries,
        # Embedded, the guard gathers its evidence from the events the processor applies
        # (after the 202); distributed, the workers feed it (services.worker). Both: the
        # experiments keep the events that will move them (see ``taken``).
        evidence=taken,
    )
    spool: SpooledEventLog | None = None
    if distributed:
        spool = SpooledEventLog(
            KafkaEventLog(kafka_config(settings)),
            settings.event_log.spool_path,
            send_timeout=settings.event_log.send_timeout_seconds,
        )
        committer = kafka_writer(spool, settings.ingest.group_commit_max_events)
    else:
        committer = event_log_writer(
            event_log,
            processor,
            settings.ingest.group_commit_max_events,
            keep_text=settings.privacy.keep_review_text,
        )
    preferences = PreferenceService(store, cache, retries, live=processor.preferences)
    impressions = impression_writer(store)
    limits = rate_limits(settings)
    learning = None
    if settings.learning.enabled:
        learning = LearningService(
            store,
            event_log,
            learning_config(settings),
            reliability=guard.reliability if sp.enabled else None,
            training_reader=None if db is None else training_reader(settings.storage.url),
            excluded=guard.flagged_users if sp.enabled else None,
        )
    retraction = (
        Retraction(
            event_log,
            guard,
            optimizer,
            RetractionConfig(
                frozenset(settings.bandit.algorithms),
                settings.bandit.bucket_minutes * 60.0,
                segment_rules(settings),
                sp.retraction_every_seconds,
                sp.retraction_users_per_read,
                settings.feedback.max_future_seconds,
            ),
            store,
            live=None if distributed else processor.preferences,
        )
        if sp.enabled
        else None
    )
    privacy = PrivacyService(
        privacy_store,
        event_log,
        store,
        processor,
        experiments,
        guard,
        cache,
        privacy_config(settings),
        distributed=distributed,
        limits=limits,
        spool=spool,
        retraction=retraction,
        learning=learning,
    )
    ranker = Ranker(
        preferences,
        optimizer,
        vectors,
        impressions,
        store,
        event_log,
        rank_config(settings),
        experiments=experiments,
        learning=learning,
        retries=retries,
    )
    return Container(
        settings=settings,
        event_log=event_log,
        store=store,
        cache=cache,
        processor=processor,
        committer=committer,
        impressions=impressions,
        ingest=IngestService(
            committer,
            settings.feedback.max_future_seconds,
            limits=limits,
            guard=guard if sp.enabled else None,
            user_key=privacy.user_key if settings.privacy.pseudonymize_user_ids else None,
            algorithms=tuple(settings.bandit.algorithms),
        ),
        items=ItemService(store, vectors, settings.vectors.dim, retries=retries),
        preferences=preferences,
        optimizer=optimizer,
        experiments=experiments,
        ranker=ranker,
        guard=guard,
        keys=KeyRing((k.name, k.sha256, k.roles) for k in settings.auth.keys),
        db=db,
        spool=spool,
        shared_cache=shared_cache,
        learning=learning,
        privacy=privacy,
        history=HistoryService(
            history_store, history_config(settings), optimizer, experiments, learning
        ),
        retraction=retraction,
        retries=retries,
    )


def kafka_writer(spool: SpooledEventLog, max_events: int) -> GroupCommit[Event, int | None]:
    """The group commit of a distributed API instance: events are durable once Kafka
    acknowledged them or the local spool holds them. Duplicates are told apart by the
    workers, so every event is reported accepted here (offset 0: not known yet)."""

    async def append(events: Sequence[Event]) -> list[int | None]:
        await spool.append(events)
        return [0] * len(events)

    return GroupCommit("kafka-writer", append, max_events)


def build_worker(settings: Settings) -> tuple[Worker, Container]:
    """A ``recloop worker``: the container's processor, fed from the event topic."""
    if settings.event_log.kind != "kafka":
        raise ConfigError("recloop worker needs event_log.kind: kafka")
    container = build_container(settings)
    assert container.db is not None  # build_container refuses kafka without a database
    config = kafka_config(settings)
    worker = Worker(
        lambda revoked, assigned: KafkaEventSource(
            config, on_revoked=revoked, on_assigned=assigned
        ),
        container.processor,
        container.store,
        SqlEventLog(container.db, keep_text=settings.privacy.keep_review_text),
        KafkaEventLog(config),
        guard=container.guard if settings.spam.enabled else None,
        commit_seconds=settings.event_log.worker_commit_seconds,
        report=container.experiments.report_waiting,
    )
    return worker, container
