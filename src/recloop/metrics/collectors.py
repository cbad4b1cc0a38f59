"""Gauges read from a process's services when scraped: :class:`StateCollector` (an API
instance's container) and :class:`WorkerCollector` (a worker, read on its event loop)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recloop.core.stats import srm_test
from recloop.services.refusals import KINDS as REFUSED_KINDS

if TYPE_CHECKING:
    from recloop.adapters.kafka.spool import SpooledEventLog
    from recloop.adapters.redis import SharedCache
    from recloop.container import Container, WorkerContainer
    from recloop.core.breaker import CircuitBreaker
    from recloop.ports import StateStore
    from recloop.services.feedback import Processor
    from recloop.services.guard import GuardService
    from recloop.services.limits import RateLimits
    from recloop.services.worker import Worker

log = logging.getLogger(__name__)

T = TypeVar("T")

PING_TIMEOUT_SECONDS = 2.0
LOOP_TIMEOUT_SECONDS = 5.0
"""A worker's scrape (or liveness check) fails if its event loop does not answer in this."""


@dataclass(slots=True)
class _Snapshot:
    """What the collector can only learn by awaiting, taken just before each scrape."""

    storage_up: bool | None = None
    algorithms: list[dict[str, Any]] = field(default_factory=list)
    deployment: dict[str, Any] | None = None


class StateCollector(Collector):
    """Gauges mirroring the services' state, read from the container when scraped."""

    def __init__(self, container: Callable[[], Container | None]) -> None:
        self._container = container
        self._snapshot = _Snapshot()

    async def refresh(self) -> None:
        """Ping the storage, read the optimizer's weights (both need awaiting)."""
        c = self._container()
        if c is None:
            return
        snapshot = _Snapshot()
        snapshot.storage_up = await _storage_up(c.store)
        try:
            snapshot.algorithms = await c.optimizer.overview()
        except Exception:  # the store is down: leave the algorithm gauges out of this scrape
            snapshot.algorithms = []
        if c.learning is not None:
            try:
                snapshot.deployment = await c.learning.deployment()
            except Exception:  # the store is down: leave the model gauges out of this scrape
                snapshot.deployment = None
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return []  # the families depend on the deployment; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        c = self._container()
        if c is None:
            return
        yield from _event_log(c)
        yield from _algorithms(self._snapshot.algorithms)
        yield from _experiments(c)
        yield from _deployment(self._snapshot.deployment)
        yield _spam(c.guard)
        limits = c.ingest.limits
        yield GaugeMetricFamily(
            "recloop_rate_limit_degraded",
            "1 while rate limits count in process because their shared storage fails.",
            value=1.0 if limits is not None and limits.degraded else 0.0,
        )
        yield _dependencies(self._snapshot.storage_up, c.shared_cache, c.spool, limits)
        yield from _resilience(c.breakers(), c.retries.snapshot())


async def _storage_up(store: StateStore) -> bool:
    try:
        await asyncio.wait_for(store.ping(), PING_TIMEOUT_SECONDS)
    except Exception:
        return False
    return True


def _event_log(c: Container) -> Iterator[Metric]:
    if c.spool is not None:
        yield GaugeMetricFamily(
            "recloop_event_log_lag",
            "Distributed: accepted events waiting in this instance's spool for Kafka.",
            value=c.spool.spooled,
        )
        return
    p = c.processor
    tracker = p.tracker
    yield GaugeMetricFamily(
        "recloop_event_log_lag",
        "Embedded: logged events not yet applied (last begun offset minus the watermark).",
        value=max(tracker.last_begun - tracker.watermark, 0),
    )
    yield from _processor(p)


def _processor(p: Processor) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "recloop_explicit_queue_depth",
        "Events handed to the processor and waiting for an apply round.",
        value=p.explicit_queue_depth,
    )
    yield GaugeMetricFamily(
        "recloop_implicit_buffered",
        "Implicit events buffered for the next flush.",
        value=p.implicit_buffered,
    )
    yield CounterMetricFamily(
        "recloop_dead_letters",
        "Events that failed while applied since the process started (see dead_letters).",
        value=p.calls.dead_letters,
    )
    yield CounterMetricFamily(
        "recloop_apply_rounds",
        "Apply rounds (each applies what waited, in arrays) since the process started.",
        value=p.applying.rounds,
    )
    yield CounterMetricFamily(
        "recloop_checkpoints",
        "State checkpoints committed since the process started.",
        value=p.checkpointer.count,
    )
    yield GaugeMetricFamily(
        "recloop_state_journal_rows",
        "Users' rows in the state journal's records not compacted into user_state yet.",
        value=p.checkpointer.journal.rows,
    )
    yield CounterMetricFamily(
        "recloop_state_rows_journaled",
        "Users' rows appended to the state journal since the process started.",
        value=p.checkpointer.rows_journaled,
    )
    yield CounterMetricFamily(
        "recloop_state_rows_compacted",
        "Users' rows written into user_state by compactions since the process started.",
        value=p.checkpointer.rows_compacted,
    )
    yield CounterMetricFamily(
        "recloop_apply_crashes",
        "Apply rounds that failed in an unforeseen way (a bug; their events dead-lettered).",
        value=p.applying.crashes,
    )
    refused = CounterMetricFamily(
        "recloop_checkpoint_rows_refused",
        "Checkpoint rows the state store refused for good, quarantined (the rest committed).",
        labels=["kind"],
    )
    for kind in REFUSED_KINDS:
        refused.add_metric([kind], p.checkpointer.quarantine.counts[kind])
    yield refused


def _algorithms(rows: Sequence[Mapping[str, Any]]) -> Iterator[Metric]:
    if not rows:
        return
    labels = ["segment", "algorithm"]
    weight = GaugeMetricFamily(
        "recloop_algorithm_weight", "The weight the optimizer gives the algorithm.", labels=labels
    )
    ctr = GaugeMetricFamily(
        "recloop_algorithm_posterior_ctr",
        "Posterior mean CTR of the algorithm over the sliding window.",
        labels=labels,
    )
    for row in rows:
        key = [row["segment"], row["algorithm"]]
        weight.add_metric(key, row["weight"])
        ctr.add_metric(key, row["posterior_mean"])
    yield weight
    yield ctr


def _experiments(c: Container) -> Iterator[Metric]:
    labels = ["experiment"]
    family = GaugeMetricFamily(
        "recloop_experiment_exposures",
        "Users exposed to each variant of each running experiment.",
        labels=["experiment", "variant"],
    )
    p_value = GaugeMetricFamily(
        "recloop_experiment_srm_p_value",
        "Sample ratio mismatch: the chi-square p-value of each running experiment's "
        "exposures against its weights (absent before two variants have users).",
        labels=labels,
    )
    mismatch = GaugeMetricFamily(
        "recloop_experiment_srm_mismatch",
        "1 while a running experiment's exposures mismatch its weights (p-value below "
        "experiments.srm_threshold): its comparisons cannot be trusted.",
        labels=labels,
    )
    threshold = c.settings.experiments.srm_threshold
    for exp in c.experiments.all():
        if exp.status != "running":
            continue
        observed = c.experiments.exposures_by_variant(exp.experiment_id)
        for variant, n in observed.items():
            family.add_metric([exp.experiment_id, variant], n)
        srm = srm_test(observed, {v.key: v.weight for v in exp.variants}, threshold)
        if srm.p_value is not None:
            p_value.add_metric([exp.experiment_id], srm.p_value)
        mismatch.add_metric([exp.experiment_id], 1.0 if srm.flagged else 0.0)
    yield family
    yield p_value
    yield mismatch


def _deployment(deployment: Mapping[str, Any] | None) -> Iterator[Metric]:
    """The blue-green slots (learning.deployment): the canary, and the stored transitions."""
    if deployment is None:
        return
    slots = deployment["slots"]
    canary = slots["green_version"] is not None
    yield GaugeMetricFamily(
        "recloop_model_canary_fraction",
        "Share of users served by the green (canary) model; 0 while there is none.",
        value=float(slots["canary_fraction"]) if canary else 0.0,
    )
    yield GaugeMetricFamily(
        "recloop_model_watching",
        "1 while a promoted model is watched against the baseline kept at promotion.",
        value=1.0 if slots["promoted_at"] is not None and not canary else 0.0,
    )
    impressions = GaugeMetricFamily(
        "recloop_model_slot_impressions",
        "Impressions the deployment monitor counted per slot since the slot's start "
        "(the process that runs the monitor: learning.coordinator).",
        labels=["slot"],
    )
    clicks = GaugeMetricFamily(
        "recloop_model_slot_clicks",
        "Clicks the deployment monitor attributed per slot since the slot's start.",
        labels=["slot"],
    )
    for slot, counts in sorted(deployment["live"].items()):
        impressions.add_metric([slot], counts["impressions"])
        clicks.add_metric([slot], counts["clicks"])
    yield impressions
    yield clicks
    by_action = {action: 0 for action in ("deploy", "promote", "rollback", "confirm")}
    for transition in deployment["transitions"]:
        action = str(transition.get("action"))
        by_action[action] = by_action.get(action, 0) + 1
    transitions = CounterMetricFamily(
        "recloop_model_transitions",
        "Stored blue-green transitions by action (deploy, promote, rollback, confirm), "
        "automatic and by hand, since the deployment history began.",
        labels=["action"],
    )
    for action, n in sorted(by_action.items()):
        transitions.add_metric([action], n)
    yield transitions


def _spam(guard: GuardService) -> Metric:
    spam = GaugeMetricFamily(
        "recloop_spam_users", "Users the guard holds suspect or blocked.", labels=["status"]
    )
    for status, n in guard.status_counts().items():
        spam.add_metric([status], n)
    return spam


def _dependencies(
    storage_up: bool | None,
    shared_cache: SharedCache | None,
    spool: SpooledEventLog | None = None,
    limits: RateLimits | None = None,
) -> Metric:
    """``spool`` and ``limits``: an API instance's (a worker has neither)."""
    family = GaugeMetricFamily(
        "recloop_dependency_up",
        "1 if the dependency answers; named as the components of /health.",
        labels=["dependency"],
    )
    if storage_up is not None:
        family.add_metric(["storage"], 1.0 if storage_up else 0.0)
    if spool is not None:
        family.add_metric(["event_log"], 0.0 if spool.degraded else 1.0)
    if limits is not None and limits.shared:
        family.add_metric(["rate_limits"], 0.0 if limits.degraded else 1.0)
    if shared_cache is not None:
        family.add_metric(["cache"], 0.0 if shared_cache.degraded else 1.0)
    return family


def _resilience(
    breakers: Mapping[str, CircuitBreaker], retries: Mapping[str, int]
) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "recloop_breaker_open",
        "1 while the dependency's circuit breaker is open or half-open (calls refused but "
        "for one trial), 0 when closed.",
        labels=["dependency"],
    )
    for name, breaker in breakers.items():
        family.add_metric([name], 0.0 if breaker.state == "closed" else 1.0)
    yield family
    counter = CounterMetricFamily(
        "recloop_retries",
        "Calls to a dependency retried after a failure, by operation.",
        labels=["operation"],
    )
    for operation, n in sorted(retries.items()):
        counter.add_metric([operation], n)
    yield counter


# -- recloop worker ----------------------------------------------------------------------


class ScrapeFailed(Exception):
    """The worker's state could not be read for a scrape (its loop is stuck or gone)."""


class WorkerCollector(Collector):
    """A worker's metrics, collected in the HTTP server's thread, read on the worker's loop.

    The worker and its container belong to their event loop; each scrape sends
    one coroutine there (:meth:`snapshot`: a storage ping, then plain reads) and
    waits for it at most :data:`LOOP_TIMEOUT_SECONDS`.
    """

    def __init__(
        self,
        worker: Worker,
        container: WorkerContainer,
        loop: asyncio.AbstractEventLoop,
        timeout: float = LOOP_TIMEOUT_SECONDS,
    ) -> None:
        self._worker = worker
        self._container = container
        self._loop = loop
        self._timeout = timeout

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self.on_loop(self.snapshot())

    def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the worker's loop, from another thread; :class:`ScrapeFailed`
        if the loop is gone or does not finish it in time."""
        if self._loop.is_closed():
            coro.close()
            raise ScrapeFailed("the worker has stopped")
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError as exc:  # closed meanwhile
            coro.close()
            raise ScrapeFailed(f"the worker has stopped: {exc}") from None
        try:
            return future.result(self._timeout)
        except TimeoutError:
            future.cancel()
            raise ScrapeFailed(
                f"the worker's event loop did not answer within {self._timeout:g}s"
            ) from None
        except Exception as exc:
            log.exception("reading the worker's metrics failed")
            raise ScrapeFailed(f"reading the worker's metrics failed: {exc!r}") from None

    async def snapshot(self) -> list[Metric]:
        """Every family, read at once (no await after the ping: one consistent state)."""
        c, w = self._container, self._worker
        storage_up = await _storage_up(c.store)
        breakers = {k: v for k, v in c.breakers().items() if k != "rate_limits"}
        retries = c.retries.snapshot()
        for operation, n in w.retries.snapshot().items():
            retries[operation] = retries.get(operation, 0) + n
        return [
            *_worker(w),
            *_processor(c.processor),
            _spam(c.guard),
            _dependencies(storage_up, c.shared_cache),
            *_resilience(breakers, retries),
        ]

    async def liveness(self) -> dict[str, Any]:
        """What ``/health/live`` answers when the loop does."""
        w = self._worker
        return {
            "status": "ok",
            "stopping": w.stopping,
            "partitions": sorted(w.progress()),
        }


def _worker(w: Worker) -> Iterator[Metric]:
    events = CounterMetricFamily(
        "recloop_worker_events",
        "Messages the worker took from the topic, by event type and outcome: applied "
        "(handed to the processor), duplicate, blocked (erased user), undecodable (to the "
        "DLQ, type unknown).",
        labels=["type", "status"],
    )
    for (event_type, status), n in sorted(w.events.items()):
        events.add_metric([event_type, status], n)
    yield events
    yield CounterMetricFamily(
        "recloop_worker_redelivered",
        "Events counted applied that the processor passed over: already in their user's "
        "state (read again after a crash or a rebalance).",
        value=w.redelivered,
    )
    progress = w.progress()
    yield GaugeMetricFamily(
        "recloop_worker_partitions",
        "Partitions of the topic this worker owns.",
        value=len(progress),
    )
    position = GaugeMetricFamily(
        "recloop_worker_partition_position",
        "Per owned partition, the position stored with the state: the next Kafka offset a "
        "new owner would fetch.",
        labels=["partition"],
    )
    taken = GaugeMetricFamily(
        "recloop_worker_partition_taken",
        "Per owned partition, the Kafka offset after the last message this worker took.",
        labels=["partition"],
    )
    for partition, (stored, last) in sorted(progress.items()):
        position.add_metric([str(partition)], stored)
        taken.add_metric([str(partition)], last)
    yield position
    yield taken
    yield GaugeMetricFamily(
        "recloop_event_log_lag",
        "Worker: messages taken from Kafka and not yet committed with the state (taken "
        "minus position, over the owned partitions).",
        value=sum(max(last - stored, 0) for stored, last in progress.values()),
    )
    yield GaugeMetricFamily(
        "recloop_worker_stopping", "1 once the worker's graceful stop began.", float(w.stopping)
    )
