"""Privacy: a user's erasure and export, the retention purge on demand (admin only)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from recloop.api.auth import Admin
from recloop.api.deps import ContainerDep
from recloop.api.requests import StrictJsonRoute
from recloop.api.responses import FastJSONResponse
from recloop.api.schemas import PathIdParam
from recloop.core.errors import Unavailable
from recloop.ports import Impression, UserData
from recloop.services.preferences import preferences_view
from recloop.services.privacy import PrivacyService

router = APIRouter(tags=["privacy"], route_class=StrictJsonRoute)

UserId = PathIdParam


class ErasureOut(BaseModel):
    user_id: str = Field(description="The id as given.")
    removed: dict[str, int] = Field(
        description="Rows removed per kind: events, impressions, state, exposures, "
        "metric_values, reliability, dead_letters, spooled. All zeros when nothing was held."
    )


class ExportOut(BaseModel):
    user_id: str = Field(description="The id as given.")
    stored_user_id: str = Field(description="The id stored (its pseudonym when they are on).")
    exported_at: float
    state: dict[str, Any] | None
    events: list[dict[str, Any]]
    impressions: list[dict[str, Any]]
    exposures: list[dict[str, Any]]
    metric_values: list[dict[str, Any]]
    reliability: dict[str, Any] | None
    dead_letters: list[dict[str, Any]]


class PurgeOut(BaseModel):
    deleted: dict[str, int] = Field(description="Rows deleted per kind.")


def _privacy(container: Any) -> PrivacyService:
    privacy: PrivacyService | None = container.privacy
    if privacy is None:
        raise Unavailable("privacy service is not configured")
    return privacy


@router.delete("/users/{user_id}", dependencies=[Admin], response_model=ErasureOut)
async def erase(user_id: UserId, container: ContainerDep) -> Any:
    """Erase everything keyed by the user: events, impressions, preferences, experiment
    exposures and metric values (and their share of the experiment statistics),
    reliability, dead letters, spooled events, cached reads. Events of the user accepted
    before now are never applied afterwards; later ones are (a user may come back).
    What was learnt in aggregate stays (``docs/privacy.md``)."""
    removed = await _privacy(container).erase(container.user_key(user_id))
    return FastJSONResponse({"user_id": user_id, "removed": removed})


@router.get("/users/{user_id}/export", dependencies=[Admin], response_model=ExportOut)
async def export(user_id: UserId, container: ContainerDep) -> Any:
    """Everything held about the user, as JSON."""
    key = container.user_key(user_id)
    data = await _privacy(container).export(key)
    return FastJSONResponse(export_view(user_id, key, data))


@router.post("/privacy/purge", dependencies=[Admin], response_model=PurgeOut)
async def purge(container: ContainerDep) -> Any:
    """Run the retention purge now (it also runs every ``privacy.purge_interval_seconds``)."""
    return FastJSONResponse({"deleted": await _privacy(container).purge()})


def export_view(user_id: str, key: str, data: UserData) -> dict[str, Any]:
    """The JSON body of ``GET .../users/{id}/export``."""
    state = None
    if data.state is not None:
        state = {
            **preferences_view(data.state.snapshot()),
            "explicit_offset": data.state.explicit_offset,
            "implicit_offset": data.state.implicit_offset,
        }
    r = data.reliability
    return {
        "user_id": user_id,
        "stored_user_id": key,
        "exported_at": time.time(),
        "state": state,
        "events": [{**e.to_record(), "offset": e.offset} for e in data.events],
        "impressions": [_impression(i) for i in data.impressions],
        "exposures": [
            {"experiment_id": e.experiment_id, "variant": e.variant, "exposed_at": e.exposed_at}
            for e in data.exposures
        ],
        "metric_values": [
            {"experiment_id": eid, "metric": metric, "y": v.y, "x": v.x}
            for eid, metric, v in data.metric_values
        ],
        "reliability": None
        if r is None
        else {
            "score": r.score,
            "status": r.status,
            "since": r.since,
            "manual": r.manual,
            "reason": r.reason,
        },
        "dead_letters": [
            {"event": {**e.to_record(), "offset": e.offset}, "reason": reason}
            for e, reason in data.dead_letters
        ],
    }


def _impression(i: Impression) -> dict[str, Any]:
    return {
        "impression_id": i.impression_id,
        "segment": i.segment,
        "created_at": i.created_at,
        "epsilon": i.epsilon,
        "slate": i.slate,
        "context": i.context,
        "experiments": i.experiments,
        "model_version": i.model_version,
        "model_slot": i.model_slot,
    }
