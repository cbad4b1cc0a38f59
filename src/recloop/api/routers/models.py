"""Continuous learning: the model registry, retraining jobs, blue-green deployment."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, ConfigDict, Field

from recloop.api.auth import Admin, Read
from recloop.api.deps import ContainerDep
from recloop.api.requests import StrictJsonRoute
from recloop.api.responses import FastJSONResponse
from recloop.api.schemas import CONFLICT, ErrorOut, Reason
from recloop.core.auth import Principal
from recloop.core.deployment import Transition
from recloop.core.errors import Unavailable
from recloop.ports import ModelRecord, TrainingJob
from recloop.services.learning import LearningService

router = APIRouter(tags=["models"], route_class=StrictJsonRoute)

Version = Annotated[str, Path(min_length=1, max_length=64)]


class ModelRecordOut(BaseModel):
    version: str
    created_at: float
    status: str = Field(description="candidate | rejected | green | active | retired | rolled_back")
    reason: str
    kind: str
    sha256: str
    window_start: float
    window_end: float
    examples: int
    clicks: int = Field(description="Examples with a click: the training window's positives.")
    metrics: dict[str, Any]
    feature_names: list[str]


class JobOut(BaseModel):
    job_id: str
    trigger: str
    status: str = Field(description="queued | running | done | skipped | failed")
    created_at: float
    finished_at: float | None
    version: str | None
    message: str


class TransitionOut(BaseModel):
    at: float
    action: str
    from_version: str | None
    to_version: str | None
    reason: str
    numbers: dict[str, float]
    by: str | None = Field(
        default=None,
        description="Who asked: the API key's name, or `monitor` for the canary's verdicts "
        "(null in records older than the audit).",
    )
    forced: bool = Field(
        default=False, description="A promotion by hand that skipped the canary's verdict."
    )


class DeploymentOut(BaseModel):
    slots: dict[str, Any]
    live: dict[str, dict[str, int]]
    transitions: list[TransitionOut]


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason | None = None


class PromoteIn(ReasonIn):
    force: bool = Field(
        default=False,
        strict=True,
        description="Promote although the canary has not decided (audited as forced).",
    )


def _learning(container: Any) -> LearningService:
    learning: LearningService | None = container.learning
    if learning is None:
        raise Unavailable("continuous learning is off (learning.enabled: false)")
    return learning


def _record(r: ModelRecord) -> dict[str, Any]:
    record = dataclasses.asdict(r)
    record["clicks"] = record.pop("positives")  # the API's name (docs/learning.md)
    return record


def _job(j: TrainingJob) -> dict[str, Any]:
    return dataclasses.asdict(j)


def _transition(t: Transition) -> dict[str, Any]:
    return t.to_dict()


@router.get("/models", dependencies=[Read], response_model=list[ModelRecordOut])
async def list_models(container: ContainerDep) -> Any:
    """Every registered model, newest first, with its validation numbers and status."""
    return FastJSONResponse([_record(r) for r in await _learning(container).models()])


@router.get(
    "/models/deployment",
    dependencies=[Read],
    response_model=DeploymentOut,
)
async def get_deployment(container: ContainerDep) -> Any:
    """The blue and green slots, their live impressions and clicks, every transition."""
    return FastJSONResponse(await _learning(container).deployment())


@router.post(
    "/models/retrain",
    dependencies=[Admin],
    status_code=202,
    response_model=JobOut,
)
async def retrain(container: ContainerDep) -> Any:
    """Start a training run now; poll ``GET /models/jobs/{job_id}``."""
    job = await _learning(container).retrain("api")
    return FastJSONResponse(_job(job), status_code=202)


@router.get(
    "/models/jobs/{job_id}",
    dependencies=[Read],
    response_model=JobOut,
    responses={404: {"model": ErrorOut}},
)
async def get_job(
    job_id: Annotated[str, Path(min_length=1, max_length=64)], container: ContainerDep
) -> Any:
    return FastJSONResponse(_job(await _learning(container).job(job_id)))


@router.post(
    "/models/promote",
    response_model=TransitionOut,
    responses={422: {"model": ErrorOut}, **CONFLICT},
)
async def promote(
    container: ContainerDep,
    principal: Principal = Admin,
    body: Annotated[PromoteIn | None, Body()] = None,
) -> Any:
    """Make the green model serve everyone (the previous one stays the rollback target).

    Before the canary's verdict is ``promote`` this needs ``force: true`` (else 409, state
    ``canary <decision>``); the forced promotion is recorded in the deployment audit. With
    no green model: 409, state ``no green``.
    """
    reason = (body.reason if body else None) or "promoted by hand"
    force = body.force if body else False
    learning = _learning(container)
    return FastJSONResponse(_transition(await learning.promote(reason, principal.name, force)))


@router.post(
    "/models/rollback",
    response_model=TransitionOut,
    responses={422: {"model": ErrorOut}, **CONFLICT},
)
async def rollback(
    container: ContainerDep,
    principal: Principal = Admin,
    body: Annotated[ReasonIn | None, Body()] = None,
) -> Any:
    """Drop the green model, or undo the promotion being watched (409 if there is
    neither)."""
    reason = (body.reason if body else None) or "rolled back by hand"
    learning = _learning(container)
    return FastJSONResponse(_transition(await learning.rollback(reason, principal.name)))


@router.get(
    "/models/{version}",
    dependencies=[Read],
    response_model=ModelRecordOut,
    responses={404: {"model": ErrorOut}},
)
async def get_model(version: Version, container: ContainerDep) -> Any:
    return FastJSONResponse(_record(await _learning(container).model(version)))


@router.post(
    "/models/{version}/deploy",
    response_model=TransitionOut,
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}, **CONFLICT},
)
async def deploy(
    version: Version,
    container: ContainerDep,
    principal: Principal = Admin,
    body: Annotated[ReasonIn | None, Body()] = None,
) -> Any:
    """Load the model into the green slot for ``learning.canary_fraction`` of users
    (``learning.unproven_canary_share`` of that for a model whose gate found no off-policy
    evidence that it is no worse than the serving policy).

    409 if the green slot is taken, the model is already blue, or its status is not
    deployable (only a candidate, retired or rolled-back model is)."""
    reason = (body.reason if body else None) or ""
    learning = _learning(container)
    return FastJSONResponse(_transition(await learning.deploy(version, reason, principal.name)))
