"""Prometheus metrics, served at ``GET /metrics``.

Two kinds:

- **Counted where the work is done**, with no state of their own:
  ``recloop_events_total{type,status}`` (the feedback routes add each request's
  outcomes, one update per (type, status) group) and
  ``recloop_http_request_duration_seconds{route,method,status}`` (the HTTP
  middleware; ``route`` is the route's template, never the raw path), and
  ``recloop_event_loop_lag_seconds`` (a probe task on the loop:
  :mod:`~recloop.metrics.loop`).
- **Read from the running services at scrape time** by :class:`StateCollector`:
  queue depths, the event log's lag, algorithm weights and posterior CTRs,
  experiment exposures, guard statuses, degraded and unreachable dependencies,
  open circuit breakers, and the retries the services counted
  (``recloop_retries_total{operation}``, a counter kept by ``resilience.RetryCounts``).
  Nothing on the hot paths keeps books for them.

Each app has its own registry. With ``PROMETHEUS_MULTIPROC_DIR`` set (several
server processes behind one port, e.g. gunicorn), the counted metrics are
kept in that folder by prometheus-client and a scrape of any process sums them
over all; the scrape-time gauges are those of the process that answers.

A ``recloop worker`` serves its own (:class:`WorkerMetrics`, on
``event_log.worker_metrics_port``): prometheus-client's threaded HTTP server, off
the event loop, whose scrapes read the worker and its container *on* the loop
(:class:`WorkerCollector`), through the same functions as ``serve``'s gauges.

Four modules: :mod:`~recloop.metrics.instruments` (the counted metrics, updated on
the hot paths), :mod:`~recloop.metrics.loop` (the event loop's lag probe),
:mod:`~recloop.metrics.collectors` (the gauges read from a process's
services at scrape time) and :mod:`~recloop.metrics.worker_server` (a worker's own
HTTP server).
"""

from recloop.metrics.collectors import ScrapeFailed, StateCollector, WorkerCollector
from recloop.metrics.instruments import (
    HTTP_METHODS,
    LATENCY_BUCKETS,
    MULTIPROC_ENV,
    UNMATCHED,
    Metrics,
    event_type_label,
)
from recloop.metrics.worker_server import WorkerMetrics

__all__ = [
    "HTTP_METHODS",
    "LATENCY_BUCKETS",
    "MULTIPROC_ENV",
    "UNMATCHED",
    "Metrics",
    "ScrapeFailed",
    "StateCollector",
    "WorkerCollector",
    "WorkerMetrics",
    "event_type_label",
]
