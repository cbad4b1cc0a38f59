"""Request and response bodies. Input, storage and output are separate types."""

from __future__ import annotations

import math
from typing import Annotated, Any, Final, Literal

from fastapi import Path
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from recloop.api.wire import FeedbackType, parse_timestamp
from recloop.core.events import UNIX_SECONDS_LIMIT, VALUELESS_TYPES
from recloop.core.ids import ID_MAX_LENGTH, ID_PATTERN, PATH_ID_PATTERN, id_problem


def _id_rule(in_path: bool) -> AfterValidator:
    """``core.ids``' rule as a validator (its pattern is in the JSON schema beside it)."""

    def check(value: str) -> str:
        problem = id_problem(value, in_path)
        if problem is not None:
            raise PydanticCustomError("string_pattern_mismatch", problem)
        return value

    return AfterValidator(check)


_ANY_ID = _id_rule(in_path=False)
_PATH_ID = _id_rule(in_path=True)

Id = Annotated[
    str,
    Field(min_length=1, max_length=ID_MAX_LENGTH, json_schema_extra={"pattern": ID_PATTERN}),
    _ANY_ID,
]
"""An id that never appears in a URL path (event ids, report ids)."""
PathId = Annotated[
    str,
    Field(min_length=1, max_length=ID_MAX_LENGTH, json_schema_extra={"pattern": PATH_ID_PATTERN}),
    _PATH_ID,
]
"""An id that appears in URL paths (users, items, experiments, impressions): no ``/``."""
PathIdParam = Annotated[
    str,
    Path(min_length=1, max_length=ID_MAX_LENGTH, json_schema_extra={"pattern": PATH_ID_PATTERN}),
    _PATH_ID,
]
"""The same, as a path parameter."""
Name = Annotated[
    str, Field(min_length=1, max_length=64, json_schema_extra={"pattern": ID_PATTERN}), _ANY_ID
]
"""An algorithm, variant or model version: no control characters either."""
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("string_pattern_mismatch", "must not contain U+0000 (NUL)")
    return value


Reason = Annotated[
    str,
    Field(max_length=500, json_schema_extra={"pattern": "^[^\\x00]*$"}),
    AfterValidator(_no_nul),
]
"""Why an operator acted: free text, without U+0000 (PostgreSQL's text holds none)."""


def _timestamp(value: Any) -> Any:
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise PydanticCustomError("datetime_parsing", str(exc)) from None


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_timestamp),  # the wire format's rule (api.wire.Timestamp), not pydantic's
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number", "minimum": -UNIX_SECONDS_LIMIT, "maximum": UNIX_SECONDS_LIMIT},
            ],
            "description": "RFC 3339 with a zone, or seconds since the Unix epoch.",
        }
    ),
]
"""A point in time as clients send it: RFC 3339 with a zone, or Unix seconds."""


def _whole(value: Any) -> Any:
    # JSON has one number type: 3.0 is an integer (JSON Schema agrees); true is not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Whole = BeforeValidator(_whole)
"""For an ``int`` field, after its constraints (which then stay in the JSON schema)."""


class _In(BaseModel):
    # Strict: a JSON value of the wrong type is refused, not coerced (``true`` is no number,
    # ``"5"`` no rating); only timestamps are parsed from strings (see ``Timestamp``).
    model_config = ConfigDict(extra="forbid", strict=True)


CREDIT_WEIGHT_MAX: Final = 1e9
"""The largest credit weight an event may carry (``rank`` clips at ``exploration.credit_clip``)."""


class AttributionIn(_In):
    """Which recommendation produced the item the user acted on."""

    algorithm: Name | None = None
    experiment_id: PathId | None = None
    variant: Name | None = None
    model_version: Name | None = None
    impression_id: PathId | None = None
    propensity: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    credit_weights: dict[Name, Annotated[float, Field(gt=0.0, le=CREDIT_WEIGHT_MAX)]] | None = (
        Field(
            None,
            description="The algorithms to credit and their weights, as `rank` answers them "
            "(`credit_weights`, with `exploration.credit: ips`); counted in place of `algorithm`.",
        )
    )


def _value_rules(schema: dict[str, Any]) -> None:
    """What ``core.events.check_event`` asks of ``value``, in the JSON schema too."""
    schema["allOf"] = [
        {
            "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
            "then": {"properties": {"value": bounds}, "required": ["value"]},
        }
        for kind, bounds in (
            ("rating", {"type": "number", "minimum": 1, "maximum": 5}),
            ("dwell", {"type": "number", "minimum": 0}),
        )
    ] + [
        {
            "if": {"properties": {"type": {"enum": sorted(VALUELESS_TYPES)}}, "required": ["type"]},
            "then": {"properties": {"value": {"type": "null"}}},
        }
    ]


class FeedbackIn(_In):
    """One feedback event."""

    model_config = ConfigDict(json_schema_extra=_value_rules)

    event_id: Id | None = Field(None, description="Idempotency key; generated (UUIDv7) if absent.")
    user_id: PathId
    item_id: PathId
    type: FeedbackType
    value: FiniteFloat | None = Field(
        None,
        description="rating: 1..5 (required); dwell: seconds >= 0 (required); view, click, "
        "add_to_cart, purchase: optional (an amount); the other types take none.",
    )
    text: Annotated[str, Field(max_length=5000)] | None = None
    timestamp: Timestamp | None = Field(
        None,
        description="RFC 3339 with a zone, or Unix seconds; default now; > 5 min in the future "
        "is refused.",
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
    status: Literal["accepted", "duplicate", "rejected", "rate_limited", "blocked"]
    error: FieldError | None = None
    limit: str | None = Field(
        default=None, description="rate_limited only: the limit the event's user is over"
    )
    retry_after: int | None = Field(
        default=None,
        description="rate_limited only: seconds until the limit lets the user's events in "
        "again (a 429's Retry-After)",
    )


class FeedbackResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    rate_limited: int
    blocked: int
    results: list[FeedbackOutcome]


def _finite_numbers(value: dict[str, Any]) -> dict[str, Any]:
    # Python's JSON parser reads NaN and Infinity (and 1e400 as Infinity); stored
    # attributes are JSON, which holds neither (PostgreSQL refuses them).
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise PydanticCustomError("finite_number", "numbers must be finite")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


class ItemIn(_In):
    vector: list[FiniteFloat] | None = Field(
        None,
        description="Exactly vectors.dim numbers (the document states the configured "
        "dimension), not all zero; absent or null: hashed from the attributes.",
    )
    attributes: Annotated[dict[str, Any], AfterValidator(_finite_numbers)] | None = None


class ItemWithIdIn(ItemIn):
    item_id: PathId


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
    events_held: int = Field(
        description="Events kept but not learnt from (the user was suspect or blocked)."
    )
    first_event_at: float | None
    last_event_at: float | None
    updated_at: float | None


class ComponentHealth(BaseModel):
    status: Literal["ok", "degraded", "down"]
    detail: dict[str, Any] = {}


class BreakerHealth(BaseModel):
    state: Literal["closed", "open", "half_open"]
    failures: int = Field(description="Failures counted towards opening, or since it opened.")
    opened_at: float | None = Field(description="When it last opened; null while closed.")


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "down"]
    components: dict[str, ComponentHealth]
    breakers: dict[str, BreakerHealth] = Field(
        default_factory=dict,
        description="The circuit breaker of each external dependency (storage, rate_limits, "
        "cache).",
    )


class LiveOut(BaseModel):
    status: Literal["ok"]


class ErrorOut(BaseModel):
    detail: Any
    reason: str | None = Field(
        default=None,
        description='403 only: "role" (the key lacks the role the route needs) or "blocked" '
        "(the event's user is blocked)",
    )


class ConflictOut(BaseModel):
    """409: the request is valid, but the current state of what it acts on refuses it."""

    detail: str = Field(description="What was refused, naming the state.")
    state: str = Field(
        description='The refusing state: an experiment\'s status ("draft", "running", '
        '"stopped"), a model\'s status, or the deployment\'s ("no green", "canary continue", ...).'
    )


CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ConflictOut}}
"""The ``responses`` entry of an operation that the state can refuse."""


# -- optimizer ---------------------------------------------------------------------

Segment = Literal["new", "inactive", "power", "regular"]
AlgorithmName = Name


class DisabledOut(BaseModel):
    algorithm: str
    reason: str
    since: float
    manual: bool


class WeightsOut(BaseModel):
    user_id: str
    segment: Segment
    weights: dict[str, float] = Field(description="Enabled algorithms only; they sum to 1.")
    disabled: list[DisabledOut]
    mode: Literal["probability", "sample", "mean"]
    window_days: float
    computed_at: float
    seed: int = Field(description="Seed of the posterior draws: reproduces these weights.")


class ExplorationOut(BaseModel):
    strategy: Literal["epsilon_greedy"] = "epsilon_greedy"
    epsilon: float


class ModelOut(BaseModel):
    version: str | None = None
    slot: str | None = None


class StrategyOut(BaseModel):
    user_id: str
    segment: Segment
    weights: dict[str, float]
    exploration: ExplorationOut
    model: ModelOut
    experiments: list[ExperimentVariantOut] = Field(
        description="Running experiments the user is in; their exposures are recorded."
    )
    preferences_updated_at: float | None


class CandidateIn(_In):
    item_id: PathId
    algorithm: AlgorithmName | None = None
    score: FiniteFloat | None = None


RANK_K_MAX: Final = 100_000
"""The largest ``k`` of a ranking: the most candidates ``rank.max_candidates`` may allow."""


class RankIn(_In):
    candidates: Annotated[list[CandidateIn], Field(min_length=1)]
    k: Annotated[int, Field(ge=1, le=RANK_K_MAX), Whole] | None = None
    context: dict[str, Any] | None = None


class RankedOut(BaseModel):
    item_id: str
    score: float
    propensity: float = Field(description="Exact probability that this item is at this position.")
    explored: bool
    algorithms: list[str] = Field(description="The algorithms that proposed this item.")
    shares: list[float] = Field(
        description="Each of `algorithms`' share of the item's fused score (in that order)."
    )
    credit: str | None = Field(
        description="The algorithm to name in `attribution.algorithm` of this item's "
        "impression and click events: drawn with probability equal to its share."
    )
    credit_probability: float | None = Field(
        None,
        description="The probability with which `credit` was drawn: its share, or for a "
        "probe (`exploration.probe`) the probed algorithm's chance of being drawn (the probe "
        "itself had `epsilon` times that); 0 when no algorithm is credited.",
    )
    credit_weights: dict[str, float] | None = Field(
        None,
        description="With `exploration.credit: ips`: the algorithms whose own top pick this "
        "slot shows (the top slot; empty on the others), each with the inverse of "
        "`propensity` (clipped at `exploration.credit_clip`), to send as "
        "`attribution.credit_weights` of the item's impression and click events; `credit` "
        "is then null. Null: not that policy.",
    )


class ExperimentVariantOut(BaseModel):
    experiment_id: str
    variant: str


class RankOut(BaseModel):
    impression_id: str
    ranking: list[RankedOut]
    epsilon: float
    segment: Segment
    experiments: list[ExperimentVariantOut]


class AlgorithmStatsOut(BaseModel):
    segment: Segment
    algorithm: str
    impressions: int | float = Field(
        description="Credited impressions: whole, or fractional with inverse-propensity "
        "credit (`attribution.credit_weights`)."
    )
    effective_impressions: int | float = Field(
        description="The impressions' effective sample size (Kish, `(Σw)² / Σw²` over "
        "their credit weights `w`): what the posterior, the disabling bound and the "
        "segment's evidence read. Equal to `impressions` for whole counts."
    )
    clicks: int | float
    conversions: int | float
    ctr: float
    conversion_rate: float
    satisfaction: float | None
    posterior_mean: float
    posterior_interval: list[float] = Field(description="Equal-tailed 95% credible interval.")
    enabled: bool
    status_reason: str | None
    weight: float


class AlgorithmsOut(BaseModel):
    window_days: float
    algorithms: list[AlgorithmStatsOut]


class OverrideIn(_In):
    segments: list[Segment] | None = Field(None, description="Default: every segment.")
    reason: Reason | None = None


class OverrideOut(BaseModel):
    algorithm: str
    enabled: bool | None = Field(description="None: returned to the automatic rules.")
    segments: list[Segment]


REPORT_COUNT_MAX: Final = 10**12
"""The most impressions, clicks or conversions one performance record may carry.

A trillion is more than any real report holds; the stored sums saturate at
``core.bandit.COUNT_LIMIT`` (2**62), which even millions of such records reach only
deliberately, so no sum ever leaves 64 bits."""

Count = Annotated[int, Field(ge=0, le=REPORT_COUNT_MAX), Whole]


def _within_impressions(value: int, info: ValidationInfo) -> int:
    impressions = info.data.get("impressions")  # absent if it was refused itself
    if impressions is not None and value > impressions:
        raise PydanticCustomError(
            "value_error", "{field} must not exceed impressions", {"field": info.field_name}
        )
    return value


def _one_of_segment_or_user(schema: dict[str, Any]) -> None:
    """``PerformanceIn``'s "exactly one of segment or user_id", in the JSON schema too."""
    schema["oneOf"] = [
        {"required": [field], "properties": {field: {"type": "string"}}}
        for field in ("segment", "user_id")
    ]


class PerformanceIn(_In):
    """An aggregated report: exactly one of ``segment`` or ``user_id``."""

    model_config = ConfigDict(json_schema_extra=_one_of_segment_or_user)

    algorithm: AlgorithmName
    segment: Segment | None = None
    user_id: PathId | None = None
    impressions: Count
    clicks: Annotated[Count, AfterValidator(_within_impressions)]
    conversions: Annotated[Count, AfterValidator(_within_impressions)] = 0
    satisfaction: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        None, description="Mean satisfaction in 0..1 over the impressions."
    )
    timestamp: Timestamp | None = Field(
        None, description="RFC 3339 with a zone, or Unix seconds. Default: now."
    )
    report_id: Id | None = Field(
        None, description="Idempotency key of a single-record report (batches carry their own)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> PerformanceIn:
        if (self.segment is None) == (self.user_id is None):
            raise ValueError("give exactly one of segment or user_id")
        return self


def _report_id_on_the_batch(schema: dict[str, Any]) -> None:
    """``PerformanceBatchIn``'s "report_id once, on the batch", in the JSON schema too."""
    records = schema["properties"]["records"]
    records["items"] = {
        "allOf": [records["items"], {"properties": {"report_id": {"type": "null"}}}]
    }


class PerformanceBatchIn(_In):
    model_config = ConfigDict(json_schema_extra=_report_id_on_the_batch)

    records: Annotated[list[PerformanceIn], Field(min_length=1, max_length=1000)]
    report_id: Id | None = Field(None, description="Idempotency key: a report is applied once.")

    @model_validator(mode="after")
    def _one_report_id(self) -> PerformanceBatchIn:
        for record in self.records:
            if record.report_id is not None:
                raise ValueError("give report_id once, on the batch, not on its records")
        return self


class PerformanceOut(BaseModel):
    report_id: str
    status: Literal["accepted", "duplicate"]
    records: int


class ImpressionOut(BaseModel):
    impression_id: str
    user_id: str
    segment: str
    created_at: float
    epsilon: float
    model_version: str | None
    context: dict[str, Any]
    slate: list[dict[str, Any]]
    feedback: list[dict[str, Any]] = Field(description="Logged events naming this impression.")


# -- experiments -------------------------------------------------------------------

Key = Annotated[str, Field(min_length=1, max_length=64)]


def _weights_by_name(schema: dict[str, Any]) -> None:
    """The keys' rules as ``propertyNames`` (pydantic states a key's pattern as
    ``patternProperties``, which constrains the values of matching keys, not the keys);
    the app names the configured algorithms there (``api.app.name_algorithms``)."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") != "object":
            continue
        values = next(iter(option.pop("patternProperties", {}).values()), None)
        if values is not None:
            option["additionalProperties"] = values
        option["propertyNames"] = {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "pattern": ID_PATTERN,
        }


class VariantConfigIn(_In):
    """What a variant changes in the strategy of its users."""

    weights: dict[AlgorithmName, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] | None = (
        Field(
            None,
            json_schema_extra=_weights_by_name,
            description="Over the configured algorithms only; 0 switches one off. With mode "
            "override_all (default) they are renormalised and omitted algorithms get 0; with "
            "override_some they are shares (sum at most 1) and the others keep the segment's "
            "weights, scaled to the rest.",
        )
    )
    mode: Literal["override_all", "override_some"] | None = None
    epsilon: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        None, description="The variant's exploration ceiling; 0: no exploration."
    )
    model_slot: Literal["blue", "green"] | None = None


class VariantIn(_In):
    key: Key
    weight: Annotated[float, Field(gt=0.0, le=1.0)]
    config: VariantConfigIn | None = None


class _MetricIn(_In):
    name: Key
    higher_is_better: bool = Field(
        True, description="For a guardrail: a significant move the other way halts a rollout."
    )
    margin: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = Field(
        None,
        description="For a guardrail: the non-inferiority margin (absolute) a rollout step "
        "with non_inferior waits for.",
    )


class BinomialMetricIn(_MetricIn):
    """The share of exposed users with at least one ``event``."""

    type: Literal["binomial"]
    event: FeedbackType


class ContinuousMetricIn(_MetricIn):
    """Per exposed user, the number of ``event``s (``count``) or the sum of their values
    (``sum``)."""

    type: Literal["continuous"]
    event: FeedbackType
    aggregate: Literal["sum", "count"] = "count"


class RatioMetricIn(_MetricIn):
    """``numerator`` events over ``denominator`` events, e.g. clicks per impression."""

    type: Literal["ratio"]
    numerator: FeedbackType
    denominator: FeedbackType


MetricIn = Annotated[
    BinomialMetricIn | ContinuousMetricIn | RatioMetricIn, Field(discriminator="type")
]
"""A metric definition: its ``type`` says which fields it takes (the document's
``discriminator``), as ``GET /experiments/{experiment_id}`` returns it."""


class NamespaceIn(_In):
    """A GrowthBook namespace range: users hashed into ``[start, end)`` of the namespace
    (GrowthBook's ``inNamespace``); experiments with disjoint ranges of one namespace never
    share a user."""

    name: Key
    range: Annotated[
        list[Annotated[float, Field(ge=0.0, le=1.0)]], Field(min_length=2, max_length=2)
    ] = Field(description="[start, end), 0 <= start < end <= 1.")


class RolloutStepIn(_In):
    at: FiniteFloat = Field(description="When (epoch seconds).")
    traffic_allocation: Annotated[float, Field(ge=0.0, le=1.0)]
    non_inferior: bool = Field(
        False,
        description="Also wait until every guardrail with a margin is non-inferior by the "
        "anytime-valid (sequential) confidence sequence.",
    )


class ExperimentIn(_In):
    experiment_id: PathId
    name: Annotated[str, Field(min_length=1, max_length=200)]
    hypothesis: Annotated[str, Field(max_length=2000)] | None = None
    variants: Annotated[list[VariantIn], Field(min_length=2, max_length=20)]
    traffic_allocation: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    namespace: NamespaceIn | None = None
    rollout: Annotated[list[RolloutStepIn], Field(max_length=100)] = Field(
        [],
        description="Steps raising traffic_allocation (GrowthBook's coverage) at given "
        "times, in increasing time and allocation; a guardrail significantly worse halts it.",
    )
    seed: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    hash_version: Literal[1, 2] = 2
    metrics: Annotated[list[MetricIn], Field(min_length=1, max_length=50)]
    guardrails: Annotated[list[MetricIn], Field(max_length=50)] = []
    alpha: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    sequential: bool = False


class ExperimentPatch(_In):
    """Fields to change. While running only name, hypothesis, traffic_allocation (ramps),
    alpha, sequential, metrics and guardrails may change.

    A field left out is unchanged; only ``hypothesis`` may be set to null (cleared): the
    others have no null value, so a null is refused with their name (the defaults below
    are never validated, they only mark a field as absent)."""

    name: Annotated[str, Field(min_length=1, max_length=200)] = None  # type: ignore[assignment]
    hypothesis: Annotated[str, Field(max_length=2000)] | None = None
    variants: Annotated[list[VariantIn], Field(min_length=2, max_length=20)] = None  # type: ignore[assignment]
    traffic_allocation: Annotated[float, Field(ge=0.0, le=1.0)] = None  # type: ignore[assignment]
    namespace: NamespaceIn = None  # type: ignore[assignment]
    rollout: Annotated[list[RolloutStepIn], Field(max_length=100)] = Field(  # type: ignore[assignment]
        None, description="A new plan: replaces the steps, and resumes a halted rollout."
    )
    seed: Annotated[str, Field(min_length=1, max_length=128)] = None  # type: ignore[assignment]
    hash_version: Literal[1, 2] = None  # type: ignore[assignment]
    metrics: Annotated[list[MetricIn], Field(min_length=1, max_length=50)] = None  # type: ignore[assignment]
    guardrails: Annotated[list[MetricIn], Field(max_length=50)] = None  # type: ignore[assignment]
    alpha: Annotated[float, Field(gt=0.0, lt=1.0)] = None  # type: ignore[assignment]
    sequential: bool = None  # type: ignore[assignment]


class ExperimentOut(BaseModel):
    experiment_id: str
    name: str
    hypothesis: str | None
    variants: list[dict[str, Any]]
    traffic_allocation: float
    namespace: dict[str, Any] | None
    rollout: list[dict[str, Any]]
    rollout_step: int = Field(description="How many rollout steps were taken.")
    rollout_halted: str | None = Field(description="Why the rollout stopped; None: it goes on.")
    seed: str
    hash_version: int
    metrics: list[dict[str, Any]]
    guardrails: list[dict[str, Any]]
    alpha: float
    sequential: bool
    status: Literal["draft", "running", "stopped"]
    created_at: float
    started_at: float | None
    stopped_at: float | None


class AssignmentOut(BaseModel):
    experiment_id: str
    user_id: str
    variant: str | None
    in_experiment: bool
    overridden_by: str | None = Field(
        None,
        description="The running experiment whose overrides the user gets instead: the user "
        "is then not in this one (not counted in its results).",
    )


class SrmOut(BaseModel):
    p_value: float | None
    flagged: bool
    observed: dict[str, int]
    expected: dict[str, float]


class VariantResultOut(BaseModel):
    key: str
    users: int
    mean: float | None
    stddev: float | None
    conversions: int | None = None


class ComparisonOut(BaseModel):
    variant: str
    baseline: str
    absolute_effect: float | None
    ci_absolute: list[float] | None
    relative_effect: float | None
    ci_relative: list[float] | None
    p_value: float | None
    p_value_adjusted: float | None
    significant: bool
    test: Literal["z", "welch_t", "delta"]
    cuped: bool
    reason: str | None = None


class MetricResultOut(BaseModel):
    name: str
    type: Literal["binomial", "continuous", "ratio"]
    guardrail: bool
    variants: list[VariantResultOut]
    comparisons: list[ComparisonOut]
    provisional: bool | None = Field(
        description="Accepted events this metric listens to are not applied yet: it will "
        "move (None: this process cannot tell, a distributed API instance)."
    )


class BufferedOut(BaseModel):
    events: int = Field(
        description="Accepted, not yet applied events of users counted in the experiment, "
        "after their exposure, of a type a metric listens to."
    )
    complete: bool = Field(
        description="False if some accepted events were not looked at yet (the embedded "
        "processor has not taken them; a distributed worker has not fetched them) or a count "
        "read from the log stopped at experiments.pending_scan_max events."
    )
    as_of: float | None = Field(
        description="Distributed: when the workers reported the count (the oldest of their "
        "last reports, epoch seconds); None: the count is of now (embedded)."
    )


class ResultsOut(BaseModel):
    experiment_id: str
    status: str
    correction: Literal["holm", "bh"]
    sequential: bool
    alpha: float
    srm: SrmOut
    metrics: list[MetricResultOut]
    buffered: BufferedOut | None = Field(
        description="None: this process cannot tell (a distributed API instance before "
        "any worker reported)."
    )
    covariates_pending: int = Field(
        description="Counted users whose CUPED covariate (pre-period metric) is not read "
        "yet (embedded: read within experiments.covariate_seconds of their exposure)."
    )
    overridden: dict[str, int] = Field(
        description="Users who fell in this experiment but got another's overrides, per "
        "winning experiment: not counted as exposed."
    )
    warnings: list[str]


class PowerIn(_In):
    baseline: Annotated[float, Field(gt=0.0)] = Field(
        description="Baseline conversion rate (binomial) or mean (continuous)."
    )
    mde: Annotated[float, Field(gt=0.0)] = Field(description="Minimum detectable effect.")
    relative: bool = Field(True, description="mde relative to the baseline (else absolute).")
    alpha: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    power: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.8
    metric: Literal["binomial", "continuous"] = "binomial"
    stddev: Annotated[float, Field(gt=0.0)] | None = Field(
        None, description="Per-user standard deviation; required for continuous metrics."
    )


class PowerOut(BaseModel):
    users_per_variant: int


# -- guard -------------------------------------------------------------------------


class SignalOut(BaseModel):
    value: float | None = Field(description="None: not enough evidence to measure it yet.")
    fired: bool


class ReliabilityOut(BaseModel):
    user_id: str
    score: float = Field(description="0..100; it scales the user's learning rate.")
    status: Literal["trusted", "suspect", "blocked"]
    signals: dict[str, SignalOut]
    since: float | None = Field(description="When the user reached this status.")
    manual: bool
    reason: str


class SuspectOut(BaseModel):
    user_id: str
    score: float
    status: Literal["trusted", "suspect", "blocked"]
    since: float
    manual: bool
    reason: str


class BlockIn(_In):
    reason: Reason | None = None
