"""Request and response bodies. Input, storage and output are separate types."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Id = Annotated[str, Field(min_length=1, max_length=128)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

FeedbackType = Literal[
    "rating", "like", "dislike", "share", "save", "review",
    "impression", "view", "click", "dwell", "skip", "add_to_cart", "purchase",
]  # fmt: skip


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttributionIn(_In):
    """Which recommendation produced the item the user acted on."""

    algorithm: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    experiment_id: Id | None = None
    variant: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    model_version: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    impression_id: Id | None = None
    propensity: Annotated[float, Field(gt=0.0, le=1.0)] | None = None


class FeedbackIn(_In):
    """One feedback event."""

    event_id: Id | None = Field(None, description="Idempotency key; generated (UUIDv7) if absent.")
    user_id: Id
    item_id: Id
    type: FeedbackType
    value: FiniteFloat | None = Field(
        None, description="rating: 1..5 (required); dwell: seconds >= 0 (required)."
    )
    text: Annotated[str, Field(max_length=5000)] | None = None
    timestamp: AwareDatetime | None = Field(
        None, description="RFC 3339 with a zone; default now; > 5 min in the future is refused."
    )
    context: dict[str, Any] | None = Field(
        None, description="Free-form: device, session_id, position, ..."
    )
    attribution: AttributionIn | None = None


class FeedbackBatchIn(_In):
    events: Annotated[list[dict[str, Any]], Field(min_length=1)] = Field(
        description="Up to feedback.max_batch_events (1000) events; each is checked on its own."
    )


class FieldError(BaseModel):
    field: str | None
    message: str


class FeedbackOutcome(BaseModel):
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    error: FieldError | None = None


class FeedbackResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[FeedbackOutcome]


class ItemIn(_In):
    vector: list[FiniteFloat] | None = None
    attributes: dict[str, Any] | None = None


class ItemWithIdIn(ItemIn):
    item_id: Id


class ItemBatchIn(_In):
    items: Annotated[list[ItemWithIdIn], Field(min_length=1, max_length=1000)]


class ItemOut(BaseModel):
    item_id: str
    vector: list[float]
    vector_source: Literal["given", "hashed"]
    attributes: dict[str, Any]
    updated_at: float


class ItemBatchOut(BaseModel):
    stored: int
    items: list[ItemOut]


class PreferencesOut(BaseModel):
    user_id: str
    vector: list[float]
    dim: int
    events_applied: int = Field(description="Events whose effect is in the vector.")
    events_skipped: int = Field(description="Events on items without a vector.")
    interactions: int
    impressions: int
    first_event_at: float | None
    last_event_at: float | None
    updated_at: float | None


class ComponentHealth(BaseModel):
    status: Literal["ok", "degraded", "down"]
    detail: dict[str, Any] = {}


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "down"]
    components: dict[str, ComponentHealth]


class ErrorOut(BaseModel):
    detail: Any
