"""The HTTP middleware: request ids, the body size limit, latency metrics, access log.

A plain ASGI callable (``BaseHTTPMiddleware`` would cost a task and a stream
per request), wrapped around every route, the lean ``POST /feedback`` included.
Per request it:

- takes the caller's ``X-Request-ID`` (1-128 of ``A-Z a-z 0-9 . _ : -``) or
  makes one (a UUID4 in hex), binds it as ``request_id`` in
  ``structlog.contextvars`` for every log line of the request, and sends it
  back in the response's ``X-Request-ID``;
- answers ``413`` (``{"detail": "..."}``) for a body over ``api.max_body_bytes``:
  at once from ``Content-Length``, or as soon as a streamed body crosses it;
- observes ``recloop_http_request_duration_seconds`` under the route template;
- logs the request at DEBUG, and an unhandled error (with its traceback) at
  ERROR, answering it with a JSON 500 that carries the request id.

Headers and bodies are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from recloop.api.lean import FastPaths, Hit
from recloop.api.responses import send_json
from recloop.metrics import UNMATCHED, Metrics
from recloop.services.ingest import REQUEST_ID

log = logging.getLogger("recloop.http")

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """A random UUID4 in hex, like ``uuid.uuid4().hex`` at a quarter of the cost: a
    correlation id needs no cryptographic randomness (``random`` reseeds after a fork)."""
    return f"{random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body crosses the limit; FastAPI's handler
    for HTTP exceptions turns it into the usual ``{"detail": ...}`` 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than api.max_body_bytes = {limit} bytes")


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        templates: Mapping[Any, str],
        fast: FastPaths | None = None,
    ) -> None:
        """``templates``: each endpoint's full path template (:func:`route_templates`);
        ``fast``: the hot routes, served from here past the rest of the stack."""
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.templates = templates
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.serve(scope, receive, send, self.hot(scope))

    def hot(self, scope: Scope) -> Hit | None:
        """The hot route an HTTP request asks for (:meth:`FastPaths.match`), or None."""
        fast = self.fast
        return None if fast is None else fast.match(scope)

    async def serve(self, scope: Scope, receive: Receive, send: Send, hit: Hit | None) -> None:
        """Handle an HTTP request: ``hit``, its hot route, served past the stack below
        (:meth:`FastPaths.serve`); None, through it."""
        started_at = time.perf_counter()
        given: bytes | None = None
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                given = value
            elif name == b"content-length":
                length = value
        if given is not None and _VALID_ID.fullmatch(given):
            request_id = given.decode()
        else:
            request_id = new_request_id()
        echo = (REQUEST_ID_HEADER, request_id.encode())
        tokens = bind_contextvars(request_id=request_id)
        token = REQUEST_ID.set(request_id)
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
            await send(message)

        limit = self.max_body_bytes
        try:
            if length is not None and _too_long(length, limit):
                await send_json(send_with_id, 413, {"detail": BodyTooLarge(limit).detail})
            else:
                if length is None:
                    # No Content-Length: a streamed (chunked) body, counted as it arrives. With
                    # a Content-Length the server never passes more bytes than it announced.
                    receive = _counting(receive, limit)
                if hit is None or self.fast is None:
                    await self.app(scope, receive, send_with_id)
                else:
                    await self.fast.serve(scope, receive, send_with_id, hit, self.app)
        except asyncio.CancelledError:  # the client went away (or the server stops)
            if not started:
                status = 499  # nginx's "client closed request", not a server error
            raise
        except BodyTooLarge as exc:  # raised outside a route (no handler saw it)
            if started:
                raise
            await send_json(send_with_id, 413, {"detail": exc.detail})
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], self._route(scope))
            if started:
                raise
            await send_json(send_with_id, 500, {"detail": "internal server error"})
        finally:
            route = self._route(scope)
            seconds = time.perf_counter() - started_at
            self.metrics.observe_request(route, scope["method"], status, seconds)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s %d %.1fms",
                    scope["method"],
                    route,
                    status,
                    seconds * 1000,
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                    },
                )
            REQUEST_ID.reset(token)
            reset_contextvars(**tokens)

    def _route(self, scope: Scope) -> str:
        return self.templates.get(scope.get("endpoint"), UNMATCHED)


def route_templates(routes: Iterable[BaseRoute], prefix: str = "") -> dict[Any, str]:
    """Each route's endpoint and its path template, under ``prefix`` (the ``route`` label).

    The routing sets the matched ``endpoint`` in the scope; its ``route`` is not
    reliable (FastAPI sets the route relative to its router, the plain Starlette
    route of the lean ``POST /feedback`` sets none).
    """
    out: dict[Any, str] = {}
    for route in routes:
        endpoint = getattr(route, "endpoint", None)
        path = getattr(route, "path", None)
        if isinstance(route, Mount):  # its app is the scope's endpoint (the console's assets)
            endpoint, path = route.app, f"{route.path}/{{path}}"
        if endpoint is not None and isinstance(path, str):
            out[endpoint] = prefix + path
    return out


def _too_long(length: bytes, limit: int) -> bool:
    try:
        return int(length) > limit
    except ValueError:
        return False  # the server refuses a malformed Content-Length itself


def _counting(receive: Receive, limit: int) -> Receive:
    total = 0

    async def counted() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit:
                raise BodyTooLarge(limit)
        return message

    return counted
