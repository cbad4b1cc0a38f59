"""POST /feedback: the ingest hot path.

The body is parsed by hand (orjson, then pydantic per event) rather than by a
FastAPI body parameter, so that one bad event in a batch is rejected alone
while the others are accepted. The request schema is still in the OpenAPI
document (``openapi_extra``).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import TypeAdapter, ValidationError

from recloop.api.auth import Ingest, authorize
from recloop.api.deps import ContainerDep
from recloop.api.errors import from_pydantic, invalid
from recloop.api.responses import FastJSONResponse
from recloop.api.schemas import ErrorOut, FeedbackBatchIn, FeedbackIn, FeedbackResult
from recloop.core.auth import Principal
from recloop.core.errors import Forbidden, InvalidInput, RateLimited
from recloop.metrics import Metrics, event_type_label

router = APIRouter(tags=["feedback"])

_one = TypeAdapter(FeedbackIn)
_many = TypeAdapter(list[FeedbackIn])


def _fields(event: FeedbackIn) -> dict[str, Any]:
    fields = dict(event.__dict__)
    if event.attribution is not None:
        fields["attribution"] = event.attribution.model_dump(exclude_none=True)
    return fields


def _validate_each(raw: list[Any]) -> list[dict[str, Any] | InvalidInput]:
    """Validate a batch in one call; on errors, reject just the events that have them."""
    try:
        return [_fields(e) for e in _many.validate_python(raw)]
    except ValidationError as exc:
        bad: dict[int, InvalidInput] = {}
        for err in exc.errors(include_url=False, include_input=False):
            index, *rest = err["loc"]
            if int(index) not in bad:
                field = ".".join(str(p) for p in rest) or "event"
                bad[int(index)] = InvalidInput(field, err["msg"])
    return [bad[i] if i in bad else _fields(_one.validate_python(e)) for i, e in enumerate(raw)]


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
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise invalid("", f"invalid JSON: {exc}", "json_invalid") from None
    ingest = container.ingest
    metrics: Metrics = request.app.state.metrics
    if isinstance(data, dict) and "events" in data:
        try:
            batch = FeedbackBatchIn.model_validate(data)
        except ValidationError as exc:
            raise from_pydantic(exc) from None
        limit = container.settings.feedback.max_batch_events
        if len(batch.events) > limit:
            raise invalid("events", f"at most {limit} events per request, got {len(batch.events)}")
        candidates: list[dict[str, Any] | InvalidInput] = _validate_each(batch.events)
        outcomes = await ingest.submit(candidates, principal.name)
        types = [
            c["type"] if isinstance(c, dict) else event_type_label(raw)
            for c, raw in zip(candidates, batch.events, strict=True)
        ]
        metrics.count_events(types, outcomes)
    elif isinstance(data, dict):
        try:
            fields = _fields(_one.validate_python(data))
        except ValidationError as exc:
            metrics.count_rejected(event_type_label(data))
            raise from_pydantic(exc) from None
        outcomes = await ingest.submit([fields], principal.name)
        metrics.count_events([fields["type"]], outcomes)
        (outcome,) = outcomes
        if outcome.status == "rejected":
            error = outcome.error or {}
            raise invalid(str(error.get("field") or ""), str(error.get("message")))
        if outcome.status == "rate_limited":
            raise RateLimited(outcome.limit or "", 0, outcome.reset_at or 0.0)
        if outcome.status == "blocked":
            raise Forbidden(str((outcome.error or {}).get("message")))
    else:
        raise invalid("", 'expected an event object or {"events": [...]}', "model_type")
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0, "rate_limited": 0, "blocked": 0}
    results = []
    for o in outcomes:
        counts[o.status] += 1
        result: dict[str, Any] = {"event_id": o.event_id, "status": o.status}
        if o.error is not None:
            result["error"] = o.error
        results.append(result)
    return FastJSONResponse(
        {
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
            "rate_limited": counts["rate_limited"],
            "blocked": counts["blocked"],
            "results": results,
        },
        status_code=202,
    )


async def lean_post_feedback(request: Request) -> FastJSONResponse:
    """``POST /feedback`` without FastAPI's per-request machinery (dependency resolution,
    response-model plumbing), mounted ahead of the documented route: the ingest hot path.

    FastAPI's routing costs about three quarters of a small request's time here
    (DESIGN.md, "Performance notes"); this plain Starlette endpoint does the same work,
    authentication included.
    """
    principal = authorize(request, "ingest")
    return await post_feedback(request, request.app.state.container, principal)
