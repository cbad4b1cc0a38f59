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

A ``recloop worker`` serves its own (:class:`WorkerMetrics`, on
``event_log.worker_metrics_port``): prometheus-client's threaded HTTP server, off
the event loop, whose scrapes read the worker and its container *on* the loop
(:class:`WorkerCollector`), through the same functions as ``serve``'s gauges.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from recloop.core.events import FEEDBACK_TYPES
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
    from recloop.services.ingest import EventOutcome
    from recloop.services.limits import RateLimits
    from recloop.services.worker import Worker

log = logging.getLogger(__name__)

T = TypeVar("T")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds; the ingest path answers in about a millisecond, so the low end is fine-grained."""

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The ``route`` label of requests no route matched (their raw paths would be unbounded)."""

PING_TIMEOUT_SECONDS = 2.0
LOOP_TIMEOUT_SECONDS = 5.0
"""A worker's scrape (or liveness check) fails if its event loop does not answer in this."""


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
        value=p.dead_letters,
    )
    yield CounterMetricFamily(
        "recloop_apply_rounds",
        "Apply rounds (each applies what waited, in arrays) since the process started.",
        value=p.rounds,
    )
    yield CounterMetricFamily(
        "recloop_checkpoints",
        "State checkpoints committed since the process started.",
        value=p.checkpoints,
    )
    yield CounterMetricFamily(
        "recloop_apply_crashes",
        "Apply rounds that failed in an unforeseen way (a bug; their events dead-lettered).",
        value=p.crashes,
    )
    refused = CounterMetricFamily(
        "recloop_checkpoint_rows_refused",
        "Checkpoint rows the state store refused for good, quarantined (the rest committed).",
        labels=["kind"],
    )
    for kind in REFUSED_KINDS:
        refused.add_metric([kind], p.quarantine.counts[kind])
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


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log."""


class WorkerMetrics:
    """``GET /metrics`` and ``GET /health/live`` of a ``recloop worker``.

    prometheus-client's threaded WSGI server in a daemon thread: the worker's
    loop only runs each scrape's :meth:`WorkerCollector.snapshot`. ``/health/live``
    answers 200 when the loop does within :data:`LOOP_TIMEOUT_SECONDS` (with
    whether the worker is stopping and the partitions it owns), 503 otherwise.

    Raises
    ------
    OSError
        if it cannot listen on ``host:port`` (e.g. the port is taken).
    """

    def __init__(
        self,
        worker: Worker,
        container: WorkerContainer,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None = None,
        timeout: float = LOOP_TIMEOUT_SECONDS,
    ) -> None:
        """``loop``: the worker's (default: the running one); ``port`` 0: any free one
        (:attr:`port` says which)."""
        self.collector = WorkerCollector(
            worker, container, loop or asyncio.get_running_loop(), timeout
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._metrics_app = make_wsgi_app(self.registry)

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self._server = make_server(host, port, self._app, Server, handler_class=_QuietHandler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="worker-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop listening (blocks up to half a second: call it in a thread from a loop)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/health/live":
            try:
                body = self.collector.on_loop(self.collector.liveness())
                status = "200 OK"
            except ScrapeFailed as exc:
                body, status = (
                    {"status": "unresponsive", "detail": str(exc)},
                    "503 Service Unavailable",
                )
            start_response(status, [("Content-Type", "application/json")])
            return [orjson.dumps(body)]
        if path not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: /metrics, /health/live\n"]
        try:
            return list(self._metrics_app(environ, start_response))
        except ScrapeFailed as exc:
            start_response(
                "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")]
            )
            return [f"{exc}\n".encode()]


__all__ = [
    "MULTIPROC_ENV",
    "Metrics",
    "ScrapeFailed",
    "StateCollector",
    "WorkerCollector",
    "WorkerMetrics",
    "event_type_label",
]
