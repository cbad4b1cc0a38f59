"""Health: each component with its status and detail, and each dependency's circuit
breaker (``breakers``: name → state, failures, opened_at); 503 when the service is down."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from recloop.api.deps import ContainerDep
from recloop.api.requests import StrictJsonRoute
from recloop.api.responses import FastJSONResponse
from recloop.api.schemas import HealthOut, LiveOut

router = APIRouter(tags=["health"], route_class=StrictJsonRoute)

_RANK = {"ok": 0, "degraded": 1, "down": 2}


@router.get("/health/live", response_model=LiveOut)
async def live() -> Any:
    """Liveness: the process serves HTTP. Touches no dependency (``/health`` checks them)."""
    return FastJSONResponse({"status": "ok"})


@router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def health(container: ContainerDep) -> Any:
    report = await health_report(container)
    return FastJSONResponse(report, status_code=503 if report["status"] == "down" else 200)


async def health_report(container: Any) -> dict[str, Any]:
    """The body of ``GET /health`` (the console's overview shows it too)."""
    components: dict[str, dict[str, Any]] = {}
    try:
        await container.store.ping()
        components["storage"] = {"status": "ok", "detail": {}}
    except Exception as exc:
        components["storage"] = {"status": "down", "detail": {"error": str(exc)}}
    if container.distributed:
        _distributed(container, components)
    else:
        _embedded(container, components)
    limits = container.ingest.limits
    if limits is not None:
        components["rate_limits"] = {
            "status": "degraded" if limits.degraded else "ok",
            "detail": {"fallback": limits.degraded, "last_error": limits.last_error},
        }
    breakers = {
        name: breaker.snapshot().as_dict() for name, breaker in container.breakers().items()
    }
    if container.shared_cache is not None:
        cache = container.shared_cache
        components["cache"] = {
            "status": "degraded" if cache.degraded else "ok",
            "detail": {"shared": True, "last_error": cache.last_error},
        }
    status = max((c["status"] for c in components.values()), key=_RANK.__getitem__)
    return {"status": status, "components": components, "breakers": breakers}


def _distributed(container: Any, components: dict[str, dict[str, Any]]) -> None:
    """An API instance: events go to Kafka (or the spool); workers report through lag."""
    spool = container.spool
    status = "degraded" if spool.degraded else "ok"
    if not container.committer.alive:
        status = "down"
    components["event_log"] = {
        "status": status,
        "detail": {
            "kind": "kafka",
            "spooled": spool.spooled,
            "last_error": spool.last_error,
            "commit_rounds": container.committer.rounds,
            "pending": container.committer.pending,
        },
    }


def _embedded(container: Any, components: dict[str, dict[str, Any]]) -> None:
    p = container.processor
    # Every logged event is handed to the processor right after its commit, so the
    # last offset it began is the log's end: no query needed.
    last = p.tracker.last_begun
    components["event_log"] = {
        "status": "ok" if container.committer.alive else "down",
        "detail": {
            "last_offset": last,
            "applied_watermark": p.tracker.watermark,
            "lag": max(last - p.tracker.watermark, 0),
            "commit_rounds": container.committer.rounds,
            "pending": container.committer.pending,
        },
    }
    alive, expected = p.workers_alive, p.workers_expected
    components["workers"] = {
        "status": "ok" if alive == expected and not p.calls.failing else "degraded",
        "detail": {
            "alive": alive,
            "expected": expected,
            "failing": p.calls.failing,
            "explicit_queue_depth": p.explicit_queue_depth,
            "implicit_buffered": p.implicit_buffered,
            "in_flight": p.tracker.in_flight,
            "dead_letters": p.calls.dead_letters,
            "last_error": p.calls.last_error,
        },
    }
    if alive == 0:
        components["workers"]["status"] = "down"
