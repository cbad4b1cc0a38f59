"""The counted metrics: updated where the work is done (the feedback routes, the HTTP
middleware), with no state of their own; and the scrape of one app's registry."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from recloop.core.events import FEEDBACK_TYPES
from recloop.metrics.collectors import StateCollector
from recloop.metrics.loop import LoopLag, lag_histogram

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
        self.loop_lag = LoopLag(lag_histogram(self.registry))
        """The event loop's lag probe: the app's lifespan runs it."""
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

    def count_event(self, event_type: str, status: str) -> None:
        """One event's outcome (:meth:`count_events` of one)."""
        self._event_child((event_type, status)).inc()

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
