"""The algorithm optimizer: performance reports, per-segment stats, manual overrides."""

from __future__ import annotations

import time
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from recloop.api.auth import Admin, Ingest, Read
from recloop.api.deps import ContainerDep
from recloop.api.requests import StrictJsonRoute
from recloop.api.schemas import (
    AlgorithmsOut,
    ErrorOut,
    OverrideIn,
    OverrideOut,
    PerformanceBatchIn,
    PerformanceIn,
    PerformanceOut,
)
from recloop.core.segments import SEGMENTS
from recloop.services.optimizer import PerformanceReport

router = APIRouter(tags=["algorithms"], route_class=StrictJsonRoute)

Name = Annotated[str, Path(min_length=1, max_length=64)]


def _shape(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "records" in value else "one"


_PERFORMANCE_BODY: Final = TypeAdapter[PerformanceIn | PerformanceBatchIn](
    Annotated[
        Annotated[PerformanceIn, Tag("one")] | Annotated[PerformanceBatchIn, Tag("batch")],
        Discriminator(_shape),
    ]
)
"""A body with ``records`` is a batch, any other one record: its errors name its fields,
not both shapes' (as a plain union's would, each under the model's name)."""


def performance_body(raw: bytes) -> PerformanceIn | PerformanceBatchIn:
    """The body of ``POST /algorithm-performance``, decoded; a 422 naming the fields.

    Raises
    ------
    RequestValidationError
        each error located in the body as sent (``clicks``, ``records.0.clicks``).
    """
    try:
        return _PERFORMANCE_BODY.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        located = [{**e, "loc": ["body", *e["loc"][1:]]} for e in errors]
        raise RequestValidationError(located) from None


@router.post(
    "/algorithm-performance",
    dependencies=[Ingest],
    status_code=202,
    response_model=PerformanceOut,
    responses={422: {"model": ErrorOut}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/PerformanceIn"},
                            {"$ref": "#/components/schemas/PerformanceBatchIn"},
                        ]
                    }
                }
            },
        }
    },
)
async def post_performance(request: Request, container: ContainerDep) -> PerformanceOut:
    """Aggregated impressions/clicks/conversions per algorithm, from the orchestrator.

    Durable before the 202; applied once per ``report_id`` (a repeat is a
    ``duplicate`` and changes nothing). A record names a segment, or a user
    whose current segment is used. Each count is at most 10^12.
    """
    body = performance_body(await request.body())
    records = body.records if isinstance(body, PerformanceBatchIn) else [body]
    reports = []
    for record in records:
        segment = record.segment  # the schema requires exactly one of segment and user_id
        if record.user_id is not None:
            segment = (await container.ranker.user(container.user_key(record.user_id))).segment
        reports.append(
            PerformanceReport(
                algorithm=record.algorithm,
                segment=str(segment),
                impressions=record.impressions,
                clicks=record.clicks,
                conversions=record.conversions,
                satisfaction=record.satisfaction,
                timestamp=time.time() if record.timestamp is None else record.timestamp.timestamp(),
            )
        )
    batch = isinstance(body, PerformanceBatchIn)
    report_id, applied = await container.optimizer.report(reports, body.report_id, batch)
    return PerformanceOut(
        report_id=report_id, status="accepted" if applied else "duplicate", records=len(reports)
    )


@router.get("/algorithms", dependencies=[Read], response_model=AlgorithmsOut)
async def get_algorithms(container: ContainerDep) -> Any:
    """Per segment and algorithm: windowed counts, rates, posterior, status and weight."""
    return {
        "window_days": container.settings.bandit.window_days,
        "algorithms": await container.optimizer.overview(),
    }


async def _override(
    container: Any, name: str, body: OverrideIn | None, enabled: bool | None
) -> OverrideOut:
    segments = list(body.segments) if body and body.segments else list(SEGMENTS)
    if enabled is None:
        await container.optimizer.release_manual(name, segments)
    else:
        await container.optimizer.set_manual(name, segments, enabled, body and body.reason)
    return OverrideOut(algorithm=name, enabled=enabled, segments=segments)


@router.post(
    "/algorithms/{name}/enable",
    dependencies=[Admin],
    response_model=OverrideOut,
    responses={422: {"model": ErrorOut}},
)
async def enable(name: Name, container: ContainerDep, body: OverrideIn | None = None) -> Any:
    """Enable by hand (every segment unless ``segments`` is given), over the automatic rules."""
    return await _override(container, name, body, True)


@router.post(
    "/algorithms/{name}/disable",
    dependencies=[Admin],
    response_model=OverrideOut,
    responses={422: {"model": ErrorOut}},
)
async def disable(name: Name, container: ContainerDep, body: OverrideIn | None = None) -> Any:
    """Disable by hand; the automatic rules leave it disabled until enabled or released."""
    return await _override(container, name, body, False)


@router.post(
    "/algorithms/{name}/release",
    dependencies=[Admin],
    response_model=OverrideOut,
    responses={422: {"model": ErrorOut}},
)
async def release(name: Name, container: ContainerDep, body: OverrideIn | None = None) -> Any:
    """Hand the algorithm back to the automatic rules."""
    return await _override(container, name, body, None)
