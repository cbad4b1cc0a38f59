"""POST /feedback: the ingest hot path.

The body is decoded by hand (``api.wire``: msgspec, one call for a valid batch)
rather than by a FastAPI body parameter, so that one bad event in a batch is
rejected alone while the others are accepted. The request schema is still in the
OpenAPI document (``openapi_extra``, from the pydantic ``FeedbackIn``).
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect

from recloop.api.auth import Ingest, authorize
from recloop.api.deps import ContainerDep
from recloop.api.errors import invalid, retry_after
from recloop.api.requests import StrictJsonRoute
from recloop.api.responses import FastJSONResponse
from recloop.api.schemas import ErrorOut, FeedbackResult
from recloop.api.wire import WireError, decode_feedback
from recloop.container import Container
from recloop.core.auth import Principal
from recloop.core.errors import Forbidden, RateLimited
from recloop.metrics import Metrics
from recloop.services.ingest import EventOutcome

router = APIRouter(tags=["feedback"], route_class=StrictJsonRoute)


@router.post(
    "/feedback",
    status_code=202,
    response_model=FeedbackResult,
    responses={
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
        422: {"model": ErrorOut, "description": "The body is malformed."},
        429: {"model": ErrorOut, "description": "A single event over its rate limit."},
    },
    summary="Submit one feedback event or a batch",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/FeedbackIn"},
                            {"$ref": "#/components/schemas/FeedbackBatchIn"},
                        ]
                    }
                }
            },
        }
    },
)
async def post_feedback(
    request: Request, container: ContainerDep, principal: Principal = Ingest
) -> FastJSONResponse:
    """Accept events durably (they are in the event log before the 202).

    Requests are served by :func:`lean_post_feedback`; this route documents them.

    A batch reports each event as accepted, duplicate (its ``event_id`` was
    seen before) or rejected with a field-level error; a single event that is
    invalid is a 422.
    """
    return FastJSONResponse(await feedback_answer(request, container, principal), status_code=202)


async def feedback_answer(
    request: Request, container: Container, principal: Principal
) -> dict[str, Any]:
    """The 202's body for the request's events, accepted by ``principal``; raises the
    errors the route answers (a single event refused, a body that does not decode)."""
    body = await read_body(request)
    return await answer_feedback(body, container, principal.name, request.app.state.metrics)


async def answer_feedback(
    body: bytes, container: Container, principal: str, metrics: Metrics
) -> dict[str, Any]:
    """:func:`feedback_answer` from the body's bytes: decode, ingest, count and answer
    (what ``benchmarks.processor --ingest`` runs without HTTP)."""
    ingest = container.ingest
    try:
        decoded = decode_feedback(body, container.settings.feedback.max_batch_events)
    except WireError as exc:
        if exc.label is not None:  # a single event, refused
            metrics.count_rejected(exc.label)
        raise invalid(exc.field, exc.message, exc.kind) from None
    if isinstance(decoded, list):
        outcomes = await ingest.submit(decoded, principal)
        types = [e.label or "unknown" if isinstance(e, WireError) else e.type for e in decoded]
        metrics.count_events(types, outcomes)
    else:
        outcome = await ingest.submit_one(decoded, principal)
        metrics.count_event(decoded.type, outcome.status)
        if outcome.status == "rejected":
            error = outcome.error or {}
            raise invalid(str(error.get("field") or ""), str(error.get("message")))
        if outcome.status == "rate_limited":
            raise RateLimited(outcome.limit or "", 0, outcome.reset_at or 0.0)
        if outcome.status == "blocked":
            raise Forbidden(str((outcome.error or {}).get("message")), reason="blocked")
        return _answer_one(outcome)
    return _answer(outcomes)


def _answer(outcomes: list[EventOutcome]) -> dict[str, Any]:
    """The 202's body: the outcomes counted by status, and each event's result."""
    statuses = list(map(_STATUS, outcomes))
    return {
        "accepted": statuses.count("accepted"),
        "duplicates": statuses.count("duplicate"),
        "rejected": statuses.count("rejected"),
        "rate_limited": statuses.count("rate_limited"),
        "blocked": statuses.count("blocked"),
        "results": [
            {"event_id": o.event_id, "status": o.status} if o.error is None else _result(o)
            for o in outcomes
        ],
    }


def _answer_one(outcome: EventOutcome) -> dict[str, Any]:
    """:func:`_answer` of a single event's outcome, accepted or a duplicate (the others
    are answered as errors), without its counting passes."""
    accepted = outcome.status == "accepted"
    return {
        "accepted": int(accepted),
        "duplicates": int(not accepted),
        "rejected": 0,
        "rate_limited": 0,
        "blocked": 0,
        "results": [{"event_id": outcome.event_id, "status": outcome.status}],
    }


_STATUS: Final = attrgetter("status")


def _result(outcome: EventOutcome) -> dict[str, Any]:
    """A refused event's result: its error, and for a rate limit what a 429 says in its
    headers."""
    result: dict[str, Any] = {
        "event_id": outcome.event_id,
        "status": outcome.status,
        "error": outcome.error,
    }
    if outcome.status == "rate_limited":
        result["limit"] = outcome.limit
        result["retry_after"] = retry_after(outcome.reset_at or 0.0)
    return result


async def read_body(request: Request) -> bytes:
    """``await request.body()``, the same bytes and errors, without its async generator
    (whose set-up costs more than the usual body, one message, takes to read)."""
    body: bytes | None = getattr(request, "_body", None)
    if body is not None or request._stream_consumed:
        return await request.body()  # read before: Starlette's answer
    chunks: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            request._is_disconnected = True
            raise ClientDisconnect()
    request._stream_consumed = True
    body = request._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return body


async def lean_post_feedback(request: Request) -> dict[str, Any]:
    """``POST /feedback`` without FastAPI's per-request machinery (dependency resolution,
    response-model plumbing), mounted ahead of the documented route: the ingest hot path,
    a lean handler (:class:`recloop.api.lean.LeanRoute`, answered with a 202).

    FastAPI's routing costs about three quarters of a small request's time here
    (DESIGN.md, "Performance notes"); this handler does the same work, authentication
    included, and never declines.
    """
    principal = authorize(request, "ingest")
    return await feedback_answer(request, request.app.state.container, principal)
