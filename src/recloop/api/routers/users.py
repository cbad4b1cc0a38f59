"""Per-user reads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from recloop.api.deps import ContainerDep
from recloop.api.responses import FastJSONResponse
from recloop.api.schemas import ErrorOut, PreferencesOut
from recloop.services.preferences import preferences_view

router = APIRouter(tags=["users"])

UserId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get(
    "/users/{user_id}/preferences",
    response_model=PreferencesOut,
    responses={404: {"model": ErrorOut, "description": "No event of this user was applied yet."}},
)
async def get_preferences(user_id: UserId, container: ContainerDep) -> Any:
    """The user's preference vector and counters, as last committed."""
    return FastJSONResponse(preferences_view(await container.preferences.get(user_id)))
