"""Domain errors to HTTP.

422 bodies have FastAPI's shape: ``{"detail": [{"loc", "msg", "type"}]}``; a 409 (a
valid request the current state refuses) says ``{"detail": message, "state": state}``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from recloop.api.responses import FastJSONResponse
from recloop.core.errors import (
    CircuitOpen,
    Conflict,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RateLimited,
    TransientError,
    Unavailable,
)


def invalid(field: str, message: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 naming ``field`` (dotted path inside the body)."""
    loc = ["body", *[int(p) if p.isdigit() else p for p in field.split(".") if p]]
    return RequestValidationError([{"loc": loc, "msg": message, "type": kind}])


_METRIC_KINDS = frozenset({"binomial", "continuous", "ratio"})


def field_loc(loc: Sequence[str | int], kind: str = "") -> list[str | int]:
    """``loc`` naming the field as the client sent it: pydantic puts a discriminated union's
    tag in the path (``metrics.0.binomial.event``), which the body does not have, and
    names the union itself when its tag is missing or unknown (the field is ``type``)."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        tagged = i >= 2 and isinstance(loc[i - 1], int) and loc[i - 2] in _METRIC_GROUPS
        if not (tagged and part in _METRIC_KINDS):
            out.append(part)
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        out.append("type")
    return out


_METRIC_GROUPS = frozenset({"metrics", "guardrails"})


def from_pydantic(
    exc: ValidationError, prefix: tuple[str | int, ...] = ()
) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "loc": ["body", *prefix, *field_loc(err["loc"], err["type"])],
                "msg": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors(include_url=False, include_input=False)
        ]
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode (not UTF-8, say): the API's 422,
            # as the hand-parsed POST /feedback gives for the same body.
            return FastJSONResponse(
                {"detail": [{"loc": ["body"], "msg": "invalid JSON", "type": "json_invalid"}]},
                status_code=422,
            )
        if exc.status_code == 405:
            # Starlette lists only the methods of the first route matching the path
            # (PUT /items/{id} hides GET): list every method of the resource.
            allowed = allowed_methods(request.app, request.url.path)
            if allowed:
                exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> FastJSONResponse:
        # The offending input is not echoed back: it can be large, or not JSON at all (NaN).
        detail = [
            {
                "loc": field_loc(e.get("loc", ()), e.get("type", "")),
                "msg": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in exc.errors()
        ]
        return FastJSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(InvalidInput)
    async def _invalid(_: Request, exc: InvalidInput) -> FastJSONResponse:
        loc = ["body", *[int(p) if p.isdigit() else p for p in exc.field.split(".") if p]]
        return FastJSONResponse(
            {"detail": [{"loc": loc, "msg": exc.message, "type": "value_error"}]},
            status_code=422,
        )

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> FastJSONResponse:
        return FastJSONResponse({"detail": exc.message, "state": exc.state}, status_code=409)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> FastJSONResponse:
        return FastJSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(NotAuthenticated)
    async def _unauthenticated(_: Request, exc: NotAuthenticated) -> FastJSONResponse:
        return FastJSONResponse(
            {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> FastJSONResponse:
        return FastJSONResponse({"detail": str(exc), "reason": exc.reason}, status_code=403)

    @app.exception_handler(RateLimited)
    async def _rate_limited(_: Request, exc: RateLimited) -> FastJSONResponse:
        return FastJSONResponse(
            {"detail": str(exc)}, status_code=429, headers=rate_limit_headers(exc)
        )

    @app.exception_handler(Unavailable)
    async def _unavailable(_: Request, exc: Unavailable) -> FastJSONResponse:
        retry_after = 1
        if isinstance(exc, CircuitOpen):
            retry_after = max(1, math.ceil(exc.retry_after))
        # A driver's error may name hosts and ports: clients are told which dependency only.
        detail = f"{exc.dependency} is unavailable" if isinstance(exc, TransientError) else str(exc)
        return FastJSONResponse(
            {"detail": detail}, status_code=503, headers={"Retry-After": str(retry_after)}
        )


def retry_after(reset_at: float) -> int:
    """Whole seconds until ``reset_at`` (at least 1): ``Retry-After``'s value."""
    return max(1, math.ceil(reset_at - time.time()))


def rate_limit_headers(exc: RateLimited) -> dict[str, str]:
    return {
        "Retry-After": str(retry_after(exc.reset_at)),
        "X-RateLimit-Limit": exc.limit,
        "X-RateLimit-Remaining": str(exc.remaining),
        "X-RateLimit-Reset": str(math.ceil(exc.reset_at)),
    }


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document gives ``path`` (HEAD with GET), for ``Allow``.

    Of several matching paths the most literal wins: ``/experiments/power`` is not
    ``/experiments/{experiment_id}``.
    """
    table: list[tuple[int, re.Pattern[str], frozenset[str]]] | None = getattr(
        app.state, "allow_table", None
    )
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            pattern, params = re.subn(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            methods = {m.upper() for m in operations if m.upper() in _METHODS}
            if "GET" in methods:
                methods.add("HEAD")
            table.append((params, re.compile(pattern), frozenset(methods)))
        app.state.allow_table = table
    matches = [(params, methods) for params, p, methods in table if p.fullmatch(path)]
    if not matches:
        return []
    fewest = min(params for params, _ in matches)
    return sorted(set().union(*(m for params, m in matches if params == fewest)))


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
