"""A/B experiments: definitions, lifecycle, assignment, results, power."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from recloop.api.auth import Admin, Read
from recloop.api.deps import ContainerDep
from recloop.api.requests import StrictJsonRoute
from recloop.api.responses import FastJSONResponse
from recloop.api.schemas import (
    CONFLICT,
    AssignmentOut,
    ErrorOut,
    ExperimentIn,
    ExperimentOut,
    ExperimentPatch,
    PathIdParam,
    PowerIn,
    PowerOut,
    ResultsOut,
)
from recloop.container import Container
from recloop.core import experiments as xp
from recloop.core import stats
from recloop.core.errors import InvalidInput

router = APIRouter(tags=["experiments"], route_class=StrictJsonRoute)

ExperimentId = PathIdParam
UserId = PathIdParam


def definition(data: dict[str, Any]) -> dict[str, Any]:
    """A validated body as ``core.experiments.from_dict`` takes it (variants' unset
    overrides dropped); the console's create form goes through it too."""
    for variant in data.get("variants") or ():
        variant["config"] = {
            k: v for k, v in (variant.get("config") or {}).items() if v is not None
        }
    return data


@router.post(
    "/experiments",
    dependencies=[Admin],
    status_code=201,
    response_model=ExperimentOut,
    responses={422: {"model": ErrorOut}, **CONFLICT},
)
async def create(body: ExperimentIn, container: ContainerDep) -> Any:
    """Create an experiment (status ``draft``). The first variant is the baseline; an
    ``experiment_id`` that exists is a 409."""
    exp = xp.from_dict(definition(body.model_dump()))
    return FastJSONResponse(xp.to_dict(await container.experiments.create(exp)), status_code=201)


@router.get("/experiments", dependencies=[Read], response_model=list[ExperimentOut])
async def list_experiments(container: ContainerDep) -> Any:
    return FastJSONResponse([xp.to_dict(e) for e in container.experiments.all()])


@router.get(
    "/experiments/{experiment_id}",
    dependencies=[Read],
    response_model=ExperimentOut,
    responses={404: {"model": ErrorOut}},
)
async def get(experiment_id: ExperimentId, container: ContainerDep) -> Any:
    return FastJSONResponse(xp.to_dict(container.experiments.get(experiment_id)))


@router.patch(
    "/experiments/{experiment_id}",
    dependencies=[Admin],
    response_model=ExperimentOut,
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}, **CONFLICT},
)
async def patch(experiment_id: ExperimentId, body: ExperimentPatch, container: ContainerDep) -> Any:
    """Change a definition; seed, hash_version and variants are refused (409) once it has
    started (they would move users between variants). Ramp traffic with ``traffic_allocation``:
    users already in keep their variant."""
    changes = definition(body.model_dump(exclude_unset=True))
    updated = await container.experiments.update(experiment_id, changes)
    return FastJSONResponse(xp.to_dict(updated))


@router.post(
    "/experiments/{experiment_id}/start",
    dependencies=[Admin],
    response_model=ExperimentOut,
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}, **CONFLICT},
)
async def start(experiment_id: ExperimentId, container: ContainerDep) -> Any:
    """Start a draft (409 if it is running or stopped, or if its overrides collide with
    a running experiment that may hold the same users)."""
    return FastJSONResponse(
        xp.to_dict(await container.experiments.transition(experiment_id, "start"))
    )


@router.post(
    "/experiments/{experiment_id}/stop",
    dependencies=[Admin],
    response_model=ExperimentOut,
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}, **CONFLICT},
)
async def stop(experiment_id: ExperimentId, container: ContainerDep) -> Any:
    """Stop a running experiment (409 if it is not running)."""
    return FastJSONResponse(
        xp.to_dict(await container.experiments.transition(experiment_id, "stop"))
    )


@router.get(
    "/experiments/{experiment_id}/assignment/{user_id}",
    dependencies=[Read],
    response_model=AssignmentOut,
    responses={404: {"model": ErrorOut}},
)
async def assignment(experiment_id: ExperimentId, user_id: UserId, container: ContainerDep) -> Any:
    """The user's variant (GrowthBook-compatible hashing); records the first exposure while
    the experiment runs."""
    return FastJSONResponse(await assignment_body(container, experiment_id, user_id))


async def assignment_body(container: Container, experiment_id: str, user_id: str) -> dict[str, Any]:
    """The answer of ``GET /experiments/{experiment_id}/assignment/{user_id}`` (its lean twin
    in :mod:`recloop.api.lean` calls it too)."""
    variant, overridden_by = await container.experiments.expose(
        experiment_id, container.user_key(user_id)
    )
    return {
        "experiment_id": experiment_id,
        "user_id": user_id,
        "variant": variant,
        "in_experiment": variant is not None,
        "overridden_by": overridden_by,
    }


@router.get(
    "/experiments/{experiment_id}/results",
    dependencies=[Read],
    response_model=ResultsOut,
    responses={404: {"model": ErrorOut}},
)
async def results(experiment_id: ExperimentId, container: ContainerDep) -> Any:
    """Live results from the running sums: SRM, per-metric variant statistics, comparisons
    with the baseline (adjusted for multiple comparisons), the accepted events not applied
    yet (metrics they will move are ``provisional``), warnings."""
    return FastJSONResponse(await container.experiments.live_results(experiment_id))


@router.post(
    "/experiments/power",
    dependencies=[Read],
    response_model=PowerOut,
    responses={422: {"model": ErrorOut}},
)
async def power(body: PowerIn) -> PowerOut:
    """Users needed per variant to detect ``mde`` with the given ``alpha`` and ``power``."""
    if body.metric == "continuous" and body.stddev is None:
        raise InvalidInput("stddev", "required for a continuous metric")
    n = stats.sample_size(
        body.baseline,
        body.mde,
        alpha=body.alpha,
        power=body.power,
        relative=body.relative,
        metric=body.metric,
        stddev=body.stddev,
    )
    return PowerOut(users_per_variant=n)
