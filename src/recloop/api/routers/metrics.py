"""GET /metrics: Prometheus exposition (no key needed, like /health)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from recloop.api.requests import StrictJsonRoute
from recloop.metrics import Metrics

router = APIRouter(tags=["operations"], route_class=StrictJsonRoute)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format (OpenMetrics when the Accept header asks).",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        }
    },
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    """Counters, histograms and the state gauges (see docs/operations.md, "Metrics")."""
    registry: Metrics = request.app.state.metrics
    body, content_type = await registry.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
