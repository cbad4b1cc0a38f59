"""Per-user reads: preferences, algorithm weights, strategy, ranking.

Each hot read's answer is built by one function (``*_body``) that both the
documented route here and its lean twin in :mod:`recloop.api.lean` call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query

from recloop.api.auth import Read
from recloop.api.deps import ContainerDep
from recloop.api.requests import StrictJsonRoute
from recloop.api.responses import FastJSONResponse
from recloop.api.schemas import (
    ErrorOut,
    ImpressionOut,
    PathIdParam,
    PreferencesOut,
    RankIn,
    RankOut,
    StrategyOut,
    WeightsOut,
)
from recloop.container import Container
from recloop.core.algorithms import check_algorithm
from recloop.core.errors import InvalidInput
from recloop.core.ranking import Proposed
from recloop.services.optimizer import SegmentWeights
from recloop.services.preferences import preferences_view

router = APIRouter(tags=["users"], route_class=StrictJsonRoute)

UserId = PathIdParam


@router.get(
    "/users/{user_id}/preferences",
    dependencies=[Read],
    response_model=PreferencesOut,
    responses={404: {"model": ErrorOut, "description": "No event of this user was applied yet."}},
)
async def get_preferences(user_id: UserId, container: ContainerDep) -> Any:
    """The user's preference vector and counters, as last committed."""
    return FastJSONResponse(await preferences_body(container, user_id))


async def preferences_body(container: Container, user_id: str) -> dict[str, Any]:
    """The answer of ``GET /users/{user_id}/preferences``."""
    return preferences_view(await container.preferences.get(container.user_key(user_id)))


def _weights_view(user_id: str, w: SegmentWeights, window_days: float) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "segment": w.segment,
        "weights": w.weights,
        "disabled": [
            {"algorithm": s.algorithm, "reason": s.reason, "since": s.since, "manual": s.manual}
            for s in w.disabled
        ],
        "mode": w.mode,
        "window_days": window_days,
        "computed_at": w.computed_at,
        "seed": w.seed,
    }


@router.get("/users/{user_id}/weights", dependencies=[Read], response_model=WeightsOut)
async def get_weights(user_id: UserId, container: ContainerDep) -> Any:
    """Algorithm weights for the user's segment (Thompson sampling over the sliding window)."""
    return FastJSONResponse(await weights_body(container, user_id))


async def weights_body(container: Container, user_id: str) -> dict[str, Any]:
    """The answer of ``GET /users/{user_id}/weights``."""
    user = await container.ranker.user(container.user_key(user_id))
    weights = await container.optimizer.weights(user.segment)
    return _weights_view(user_id, weights, container.settings.bandit.window_days)


@router.get("/users/{user_id}/strategy", dependencies=[Read], response_model=StrategyOut)
async def get_strategy(
    user_id: UserId,
    container: ContainerDep,
    expose: Annotated[
        bool,
        Query(
            description="Record the user's first exposure to each running experiment they "
            "are in (the default, as feature-flag SDKs do: the orchestrator asking is the "
            "user being served). false: only look (consoles, tools)."
        ),
    ] = True,
) -> Any:
    """How to recommend for this user now: weights, exploration, model, experiments."""
    return FastJSONResponse(await strategy_body(container, user_id, expose))


async def strategy_body(container: Container, user_id: str, expose: bool = True) -> dict[str, Any]:
    """The answer of ``GET /users/{user_id}/strategy``; ``expose``: record exposures."""
    strategy = await container.ranker.strategy(container.user_key(user_id), expose=expose)
    prefs = strategy.user.preferences
    return {
        "user_id": user_id,
        "segment": strategy.user.segment,
        "weights": strategy.weights,
        "exploration": {"strategy": "epsilon_greedy", "epsilon": strategy.epsilon},
        "model": {"version": strategy.route.version, "slot": strategy.model_slot},
        "experiments": strategy.experiments,
        "preferences_updated_at": None if prefs is None else prefs.updated_at,
    }


@router.post(
    "/users/{user_id}/rank",
    dependencies=[Read],
    response_model=RankOut,
    responses={422: {"model": ErrorOut}},
)
async def rank(user_id: UserId, body: RankIn, container: ContainerDep) -> Any:
    """Rank candidates: weighted fusion of the algorithms' scores plus preference affinity,
    ε-greedy exploration of the top slot, exact propensities. The impression is logged
    durably before the answer; send its ``impression_id`` with later feedback."""
    answer = await rank_body(container, user_id, body.candidates, body.k, body.context)
    return FastJSONResponse(answer)


async def rank_body(
    container: Container,
    user_id: str,
    candidates: Sequence[Proposed],
    k: int | None,
    context: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The answer of ``POST /users/{user_id}/rank`` for a body already validated."""
    limit = container.settings.rank.max_candidates
    if len(candidates) > limit:
        raise InvalidInput("candidates", f"at most {limit} candidates, got {len(candidates)}")
    known = container.optimizer.algorithms
    named = {c.algorithm for c in candidates}  # one C-level pass; a loop only to name a bad one
    named.discard(None)
    if not named.issubset(known):
        for i, candidate in enumerate(candidates):
            check_algorithm(f"candidates.{i}.algorithm", candidate.algorithm, known)
    impression, strategy = await container.ranker.rank(
        container.user_key(user_id), candidates, k, context
    )
    return {
        "impression_id": impression.impression_id,
        "ranking": impression.shown.ranking(),
        "epsilon": impression.epsilon,
        "segment": strategy.user.segment,
        "experiments": strategy.experiments,
    }


@router.get(
    "/impressions/{impression_id}",
    dependencies=[Read],
    response_model=ImpressionOut,
    responses={404: {"model": ErrorOut}},
    tags=["impressions"],
)
async def get_impression(impression_id: PathIdParam, container: ContainerDep) -> Any:
    """A logged ranking with the feedback events that carry its ``impression_id``."""
    impression, feedback = await container.ranker.impression(impression_id)
    return FastJSONResponse(
        {
            "impression_id": impression.impression_id,
            "user_id": impression.user_id,
            "segment": impression.segment,
            "created_at": impression.created_at,
            "epsilon": impression.epsilon,
            "model_version": impression.model_version,
            "context": impression.context,
            "slate": impression.slate,
            "feedback": [{**e.to_record(), "offset": e.offset} for e in feedback],
        }
    )
