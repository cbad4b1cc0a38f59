"""The guard: user reliability, suspects, manual blocks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from recloop.api.auth import Admin, Read
from recloop.api.deps import ContainerDep
from recloop.api.requests import StrictJsonRoute
from recloop.api.responses import FastJSONResponse
from recloop.api.schemas import BlockIn, ErrorOut, PathIdParam, ReliabilityOut, SuspectOut
from recloop.core.errors import NotFound

router = APIRouter(tags=["guard"], route_class=StrictJsonRoute)

UserId = PathIdParam


def _record(r: Any) -> dict[str, Any]:
    return {
        "user_id": r.user_id,
        "score": r.score,
        "status": r.status,
        "since": r.since,
        "manual": r.manual,
        "reason": r.reason,
    }


@router.get(
    "/users/{user_id}/reliability",
    dependencies=[Read],
    response_model=ReliabilityOut,
    responses={404: {"model": ErrorOut}},
)
async def reliability(user_id: UserId, container: ContainerDep) -> Any:
    """The user's reliability score (0..100), status and the spam signals behind it.

    A user the guard holds nothing about (the guard is off, or no event of theirs since
    the last start) but who exists is trusted, unjudged; only an unknown user is a 404.
    """
    key = container.user_key(user_id)
    try:
        return FastJSONResponse(await container.guard.report(key))
    except NotFound:
        await container.preferences.get(key)  # NotFound: the user is unknown too
    enabled = container.settings.spam.enabled
    return FastJSONResponse(
        {
            "user_id": key,
            # the guard off, nothing scales the learning rate: as reliability 100
            "score": container.guard.fresh_score if enabled else 100.0,
            "status": "trusted",
            "signals": {},
            "since": None,
            "manual": False,
            "reason": "" if enabled else "not judged: spam.enabled is false",
        }
    )


@router.get("/spam/suspects", dependencies=[Read], response_model=list[SuspectOut])
async def suspects(
    container: ContainerDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> Any:
    """Users with the lowest scores first."""
    return FastJSONResponse([_record(r) for r in container.guard.suspects(limit)])


@router.post("/users/{user_id}/block", dependencies=[Admin], response_model=SuspectOut)
async def block(user_id: UserId, container: ContainerDep, body: BlockIn | None = None) -> Any:
    """Refuse the user's new events from now on (403); nothing of theirs is learnt from."""
    key = container.user_key(user_id)
    record = await container.guard.set_manual(key, True, body.reason if body else None)
    return FastJSONResponse(_record(record))


@router.post("/users/{user_id}/unblock", dependencies=[Admin], response_model=SuspectOut)
async def unblock(user_id: UserId, container: ContainerDep, body: BlockIn | None = None) -> Any:
    """Accept and learn from the user's events again. Events held meanwhile stay held."""
    key = container.user_key(user_id)
    record = await container.guard.set_manual(key, False, body.reason if body else None)
    return FastJSONResponse(_record(record))
