"""Exceptions raised by the recloop client.

::

    RecloopError                    anything this client raises
    ├── TransportError              no HTTP answer: connection refused or reset, timeout
    ├── BufferFull                  FeedbackBuffer.track: the queue stayed full (policy "block")
    └── APIError                    an HTTP error status; .status_code .detail .request_id
        ├── ValidationError         422: .errors (loc, msg, type), .field, .message
        ├── AuthError               401 (no valid key) and 403 (role missing, or user blocked)
        ├── NotFound                404
        ├── Conflict                409: .state (the state that refuses a valid request)
        ├── PayloadTooLarge         413
        ├── RateLimited             429: .retry_after (seconds), .limit, .remaining, .reset
        └── ServerError             5xx
            └── Unavailable         503: .retry_after

``retryable`` is true for ``TransportError``, ``RateLimited`` and ``ServerError``: the
same request may succeed later (``FeedbackBuffer`` retries exactly these).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx


class RecloopError(Exception):
    """Base of every exception the client raises."""

    retryable: bool = False


class TransportError(RecloopError):
    """The request got no HTTP answer (connection refused or reset, timeout)."""

    retryable = True


class BufferFull(RecloopError):
    """``track`` waited ``full_timeout`` seconds and the buffer's queue stayed full."""


class APIError(RecloopError):
    """The server answered with an error status."""

    def __init__(self, status_code: int, detail: Any, request_id: str | None = None) -> None:
        self.status_code = status_code
        self.detail = detail
        self.request_id = request_id
        super().__init__(f"{status_code}: {_describe(detail)}")


@dataclass(frozen=True)
class FieldProblem:
    """One entry of a 422 body: where (``loc``), what (``msg``), which kind (``type``)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    @property
    def field(self) -> str:
        """``loc`` without its leading ``body``/``query``/``path``, dotted: ``events.3.value``."""
        parts = self.loc[1:] if self.loc and self.loc[0] in ("body", "query", "path") else self.loc
        return ".".join(str(p) for p in parts)


class ValidationError(APIError):
    """422: the request is invalid; ``errors`` names each bad field."""

    def __init__(self, status_code: int, detail: Any, request_id: str | None = None) -> None:
        self.errors = _problems(detail)
        super().__init__(status_code, detail, request_id)

    @property
    def field(self) -> str | None:
        """The first bad field, dotted (``value``, ``events.3.type``)."""
        return self.errors[0].field if self.errors else None

    @property
    def message(self) -> str:
        return self.errors[0].msg if self.errors else _describe(self.detail)


class AuthError(APIError):
    """401 (no valid API key) or 403 (the key lacks the role; or, for a single feedback
    event, the user is blocked): :attr:`reason` tells the two 403s apart."""

    def __init__(
        self,
        status_code: int,
        detail: Any,
        request_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.reason = reason
        """A 403's reason: ``"role"`` (the key lacks the route's role) or ``"blocked"``
        (the event's user is blocked); None otherwise."""
        super().__init__(status_code, detail, request_id)


class NotFound(APIError):
    """404."""


class Conflict(APIError):
    """409: the request is valid, but the current state of what it acts on refuses it
    (stopping an experiment that is not running, promoting with no green model...).
    :attr:`state` names that state; the same request fails again until it changes."""

    def __init__(
        self, status_code: int, detail: Any, request_id: str | None = None, state: str | None = None
    ) -> None:
        self.state = state
        """The refusing state: ``"draft"``, ``"running"``, ``"no green"``..."""
        super().__init__(status_code, detail, request_id)


class PayloadTooLarge(APIError):
    """413: the body is over the server's ``api.max_body_bytes``."""


class RateLimited(APIError):
    """429: over a rate limit; retry after ``retry_after`` seconds."""

    retryable = True

    def __init__(
        self,
        status_code: int,
        detail: Any,
        request_id: str | None = None,
        *,
        retry_after: float | None = None,
        limit: str | None = None,
        remaining: int | None = None,
        reset: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.limit = limit
        self.remaining = remaining
        self.reset = reset
        super().__init__(status_code, detail, request_id)


class ServerError(APIError):
    """5xx."""

    retryable = True


class Unavailable(ServerError):
    """503: a dependency of the server cannot serve; retry after ``retry_after`` seconds."""

    def __init__(
        self,
        status_code: int,
        detail: Any,
        request_id: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(status_code, detail, request_id)


def _describe(detail: Any) -> str:
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg', '')}"
    return str(detail)


def _problems(detail: Any) -> list[FieldProblem]:
    if not isinstance(detail, list):
        return []
    return [
        FieldProblem(tuple(d.get("loc", ())), str(d.get("msg", "")), str(d.get("type", "")))
        for d in detail
        if isinstance(d, dict)
    ]


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (a number of seconds; HTTP dates are not sent by recloop)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def error_for(response: httpx.Response) -> APIError:
    """The exception for an error ``response``."""
    status = response.status_code
    body: Any = None
    try:
        body = response.json()
        detail: Any = body.get("detail")
    except (ValueError, AttributeError):
        detail = response.text
    request_id = response.headers.get("x-request-id")
    if status == 422:
        return ValidationError(status, detail, request_id)
    if status in (401, 403):
        reason = body.get("reason") if isinstance(body, dict) else None
        return AuthError(status, detail, request_id, reason if isinstance(reason, str) else None)
    if status == 404:
        return NotFound(status, detail, request_id)
    if status == 409:
        state = body.get("state") if isinstance(body, dict) else None
        return Conflict(status, detail, request_id, state if isinstance(state, str) else None)
    if status == 413:
        return PayloadTooLarge(status, detail, request_id)
    if status == 429:
        h = response.headers
        remaining = h.get("x-ratelimit-remaining")
        reset = h.get("x-ratelimit-reset")
        return RateLimited(
            status,
            detail,
            request_id,
            retry_after=retry_after(h.get("retry-after")),
            limit=h.get("x-ratelimit-limit"),
            remaining=int(remaining) if remaining and remaining.isdigit() else None,
            reset=float(reset) if reset and reset.isdigit() else None,
        )
    if status == 503:
        return Unavailable(
            status, detail, request_id, retry_after=retry_after(response.headers.get("retry-after"))
        )
    if status >= 500:
        return ServerError(status, detail, request_id)
    return APIError(status, detail, request_id)
