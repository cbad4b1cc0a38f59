"""A ``recloop worker``'s ``/metrics`` and ``/health/live``: prometheus-client's threaded
WSGI server, off the event loop (:class:`WorkerMetrics`)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

from recloop.metrics.collectors import LOOP_TIMEOUT_SECONDS, ScrapeFailed, WorkerCollector
from recloop.metrics.loop import LoopLag, lag_histogram

if TYPE_CHECKING:
    from recloop.container import WorkerContainer
    from recloop.services.worker import Worker

log = logging.getLogger(__name__)


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
        self.loop_lag = LoopLag(lag_histogram(self.registry))
        """The worker's event loop lag probe (``recloop worker`` runs it)."""
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
