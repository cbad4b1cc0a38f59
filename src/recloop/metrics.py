"""Prometheus metrics, served at ``GET /metrics``.

Two kinds:

- **Counted where the work is done**, with no state of their own:
  ``recloop_events_total{type,status}`` (the feedback routes add each request's
  outcomes, one update per (type, status) group) and
  ``recloop_http_request_duration_seconds{route,method,status}`` (the HTTP
  middleware; ``route`` is the route's template, never the raw path).
- **Read from the running services at scrape time** by :class:`StateCollector`:
  queue depths, the event log's lag, algorithm weights and posterior CTRs,
  experiment exposures, guard statuses, degraded and unreachable dependencies,
  open circuit breakers, and the retries the services counted
  (``recloop_retries_total{operation}``, a counter kept by ``resilience.RetryCounts``).
  Nothing on the hot paths keeps books for them.

Each app has its own registry. With ``PROMETHEUS_MULTIPROC_DIR`` set (several
server processes behind one port, e.g. gunicorn), the two counted metrics are
kept in that folder by prometheus-client and a scrape of any process sums them
over all; the scrape-time gauges are those of the process that answers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from recloop.core.events import FEEDBACK_TYPES

if TYPE_CHECKING:
    from recloop.container import Container
    from recloop.services.ingest import EventOutcome

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds; the ingest path answers in about a millisecond, so the low end is fine-grained."""

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The ``route`` label of requests no route matched (their raw paths would be unbounded)."""

PING_TIMEOUT_SECONDS = 2.0


def event_type_label(raw: Any) -> str:
    """The ``type`` label of an event rejected before it was parsed: its type if known."""
    value = raw.get("type") if isinstance(raw, Mapping) else None
    return value if isinstance(value, str) and value in FEEDBACK_TYPES else "unknown"


class Metrics:
    """One app's metrics: the counted ones, and the collector of the rest."""

    def __init__(self, container: Callable[[], Container | None]) -> None:
        """``container`` returns the app's container once started (None before)."""
        self.registry = CollectorRegistry()
        self.events = Counter(
            "recloop_events",
            "Feedback events by type and outcome (accepted, duplicate, rejected, "
            "rate_limited, blocked).",
            ["type", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "recloop_http_request_duration_seconds",
            "HTTP request duration by route template, method and status code.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.state = StateCollector(container)
        self.registry.register(self.state)
        self.scrape_registry = self.registry
        if os.environ.get(MULTIPROC_ENV):
            # The counted metrics live in the shared folder; this process adds its own state.
            self.scrape_registry = CollectorRegistry()
            MultiProcessCollector(self.scrape_registry)  # type: ignore[no-untyped-call]
            self.scrape_registry.register(self.state)
        self._http: dict[tuple[str, str, int], Any] = {}
        self._events: dict[tuple[str, str], Any] = {}

    # -- counted where the work is done ------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in HTTP_METHODS:
            method = "other"  # any token is a method: keep the label (and this cache) bounded
        key = (route, method, status)
        child = self._http.get(key)
        if child is None:
            child = self._http[key] = self.http_duration.labels(route, method, str(status))
        child.observe(seconds)

    def count_events(self, types: Iterable[str], outcomes: Iterable[EventOutcome]) -> None:
        """Add one request's outcomes (``types[i]`` is the type of ``outcomes[i]``)."""
        groups: dict[tuple[str, str], int] = {}
        for event_type, outcome in zip(types, outcomes, strict=True):
            key = (event_type, outcome.status)
            groups[key] = groups.get(key, 0) + 1
        for key, n in groups.items():
            self._event_child(key).inc(n)

    def count_rejected(self, event_type: str) -> None:
        """One event refused before it reached the ingest service (a single-event 422)."""
        self._event_child((event_type, "rejected")).inc()

    def _event_child(self, key: tuple[str, str]) -> Any:
        child = self._events.get(key)
        if child is None:
            child = self._events[key] = self.events.labels(*key)
        return child

    # -- the scrape ------------------------------------------------------------------

    async def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (text or OpenMetrics, as ``accept`` asks) and its content type."""
        await self.state.refresh()
        # No await between the refresh and the rendering: the snapshot is this scrape's.
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.scrape_registry), content_type


@dataclass(slots=True)
class _Snapshot:
    """What the collector can only learn by awaiting, taken just before each scrape."""

    storage_up: bool | None = None
    algorithms: list[dict[str, Any]] = field(default_factory=list)


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
        try:
            await asyncio.wait_for(c.store.ping(), PING_TIMEOUT_SECONDS)
            snapshot.storage_up = True
        except Exception:
            snapshot.storage_up = False
        try:
            snapshot.algorithms = await c.optimizer.overview()
        except Exception:  # the store is down: leave the algorithm gauges out of this scrape
            snapshot.algorithms = []
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
        spam = GaugeMetricFamily(
            "recloop_spam_users", "Users the guard holds suspect or blocked.", labels=["status"]
        )
        for status, n in c.guard.status_counts().items():
            spam.add_metric([status], n)
        yield spam
        limits = c.ingest.limits
        yield GaugeMetricFamily(
            "recloop_rate_limit_degraded",
            "1 while rate limits count in process because their shared storage fails.",
            value=1.0 if limits is not None and limits.degraded else 0.0,
        )
        yield _dependencies(c, self._snapshot.storage_up)
        yield from _resilience(c)


def _event_log(c: Container) -> Iterator[Metric]:
    if c.distributed:
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
    yield GaugeMetricFamily(
        "recloop_explicit_queue_depth",
        "Work items waiting in the explicit appliers' queues.",
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
        value=p.dead_letters,
    )


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
    family = GaugeMetricFamily(
        "recloop_experiment_exposures",
        "Users exposed to each variant of each running experiment.",
        labels=["experiment", "variant"],
    )
    for exp in c.experiments.all():
        if exp.status != "running":
            continue
        for variant, n in c.experiments.exposures_by_variant(exp.experiment_id).items():
            family.add_metric([exp.experiment_id, variant], n)
    yield family


def _dependencies(c: Container, storage_up: bool | None) -> Metric:
    family = GaugeMetricFamily(
        "recloop_dependency_up",
        "1 if the dependency answers; named as the components of /health.",
        labels=["dependency"],
    )
    if storage_up is not None:
        family.add_metric(["storage"], 1.0 if storage_up else 0.0)
    if c.distributed:
        family.add_metric(["event_log"], 0.0 if c.spool.degraded else 1.0)
    limits = c.ingest.limits
    if limits is not None and c.settings.rate_limits.storage != "memory://":
        family.add_metric(["rate_limits"], 0.0 if limits.degraded else 1.0)
    if c.shared_cache is not None:
        family.add_metric(["cache"], 0.0 if c.shared_cache.degraded else 1.0)
    return family


def _resilience(c: Container) -> Iterator[Metric]:
    breakers = GaugeMetricFamily(
        "recloop_breaker_open",
        "1 while the dependency's circuit breaker is open or half-open (calls refused but "
        "for one trial), 0 when closed.",
        labels=["dependency"],
    )
    for name, breaker in c.breakers().items():
        breakers.add_metric([name], 0.0 if breaker.state == "closed" else 1.0)
    yield breakers
    retries = CounterMetricFamily(
        "recloop_retries",
        "Calls to a dependency retried after a failure, by operation.",
        labels=["operation"],
    )
    for operation, n in sorted(c.retries.snapshot().items()):
        retries.add_metric([operation], n)
    yield retries


__all__ = ["MULTIPROC_ENV", "Metrics", "StateCollector", "event_type_label"]
