"""Typed request and response bodies.

Responses are frozen dataclasses named after the server's schemas (``PreferencesOut``
→ :class:`Preferences`); fields the server adds later land in ``extra`` instead of
breaking the client. Inputs (:class:`Event`, :class:`Candidate`, ...) turn themselves
into JSON with ``to_json()``, leaving out what is unset.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from recloop_client._errors import RecloopError

T = TypeVar("T")

FeedbackType = Literal[
    "rating",
    "like",
    "dislike",
    "share",
    "save",
    "review",
    "impression",
    "view",
    "click",
    "dwell",
    "skip",
    "add_to_cart",
    "purchase",
]
Segment = Literal["new", "inactive", "power", "regular"]
Timestamp = datetime | float | int | str
"""An aware ``datetime``, Unix seconds, or an RFC 3339 string with a zone."""


# -- decoding ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Out:
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)
    """Fields of the response this client does not know (a newer server)."""


_HINTS: dict[type[Any], dict[str, Any]] = {}


def decode(cls: type[T], data: Any) -> T:
    """``data`` (decoded JSON) as a ``cls``; unknown keys go to ``extra``."""
    if not isinstance(data, Mapping):
        raise RecloopError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    known: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == "extra":
            continue
        if f.name in data:
            known[f.name] = _convert(hints[f.name], data[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecloopError(f"response for {cls.__name__} lacks the field {f.name!r}")
    extra = {k: v for k, v in data.items() if k not in known and k != "extra"}
    build: Any = cls
    return build(**known, extra=extra)  # type: ignore[no-any-return]


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            if arg is not type(None):
                return _convert(arg, value)
    if origin is list and isinstance(value, list):
        (inner,) = get_args(tp)
        return [_convert(inner, v) for v in value]
    if origin is tuple and isinstance(value, list):
        inner = get_args(tp)[0]
        return tuple(_convert(inner, v) for v in value)
    if origin is dict and isinstance(value, Mapping):
        inner = get_args(tp)[1]
        return {k: _convert(inner, v) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return decode(tp, value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _timestamp(value: Timestamp | None, name: str = "timestamp") -> float | str | None:
    if value is None or isinstance(value, (int, float, str)):
        return value
    if value.tzinfo is None:
        raise ValueError(f"{name} {value!r} has no time zone (recloop needs an aware datetime)")
    return value.isoformat()


def _drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# -- feedback ----------------------------------------------------------------------


@dataclass(frozen=True)
class Attribution:
    """Which recommendation produced the item the user acted on."""

    algorithm: str | None = None
    experiment_id: str | None = None
    variant: str | None = None
    model_version: str | None = None
    impression_id: str | None = None
    propensity: float | None = None
    credit_weights: dict[str, float] | None = None
    """What ``rank`` answered as the slot's ``credit_weights`` (inverse-propensity credit)."""

    def to_json(self) -> dict[str, Any]:
        return _drop_none(**dataclasses.asdict(self))


@dataclass(frozen=True)
class Event:
    """One feedback event (``POST /feedback``)."""

    user_id: str
    item_id: str
    type: FeedbackType | str
    value: float | None = None
    event_id: str | None = None
    text: str | None = None
    timestamp: Timestamp | None = None
    context: Mapping[str, Any] | None = None
    attribution: Attribution | Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        attribution = self.attribution
        if isinstance(attribution, Attribution):
            attribution = attribution.to_json()
        return _drop_none(
            event_id=self.event_id,
            user_id=self.user_id,
            item_id=self.item_id,
            type=self.type,
            value=self.value,
            text=self.text,
            timestamp=_timestamp(self.timestamp),
            context=dict(self.context) if self.context is not None else None,
            attribution=dict(attribution) if attribution is not None else None,
        )


@dataclass(frozen=True)
class FieldError(_Out):
    field: str | None
    message: str


@dataclass(frozen=True)
class EventOutcome(_Out):
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected", "rate_limited", "blocked"]
    error: FieldError | None = None
    limit: str | None = None
    """``rate_limited`` only: the limit the event's user is over."""
    retry_after: float | None = None
    """``rate_limited`` only: seconds before the user's events are let in again."""


@dataclass(frozen=True)
class FeedbackResult(_Out):
    accepted: int
    duplicates: int
    rejected: int
    rate_limited: int
    blocked: int
    results: list[EventOutcome]


# -- items and users ---------------------------------------------------------------


@dataclass(frozen=True)
class Item(_Out):
    item_id: str
    vector: list[float]
    vector_source: Literal["given", "hashed"]
    attributes: dict[str, Any]
    updated_at: float


@dataclass(frozen=True)
class NewItem:
    """An item to store (``POST /items``): a vector, or attributes to hash into one."""

    item_id: str
    vector: list[float] | None = None
    attributes: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            item_id=self.item_id,
            vector=list(self.vector) if self.vector is not None else None,
            attributes=dict(self.attributes) if self.attributes is not None else None,
        )


@dataclass(frozen=True)
class ItemBatch(_Out):
    stored: int
    items: list[Item]


@dataclass(frozen=True)
class Preferences(_Out):
    user_id: str
    vector: list[float]
    dim: int
    events_applied: int
    events_skipped: int
    interactions: int
    impressions: int
    events_held: int
    first_event_at: float | None
    last_event_at: float | None
    updated_at: float | None


@dataclass(frozen=True)
class DisabledAlgorithm(_Out):
    algorithm: str
    reason: str
    since: float
    manual: bool


@dataclass(frozen=True)
class Weights(_Out):
    user_id: str
    segment: Segment
    weights: dict[str, float]
    disabled: list[DisabledAlgorithm]
    mode: Literal["probability", "sample", "mean"]
    window_days: float
    computed_at: float
    seed: int


@dataclass(frozen=True)
class Exploration(_Out):
    strategy: str
    epsilon: float


@dataclass(frozen=True)
class ModelSlot(_Out):
    version: str | None = None
    slot: str | None = None


@dataclass(frozen=True)
class ExperimentVariant(_Out):
    experiment_id: str
    variant: str


@dataclass(frozen=True)
class Strategy(_Out):
    user_id: str
    segment: Segment
    weights: dict[str, float]
    exploration: Exploration
    model: ModelSlot
    experiments: list[ExperimentVariant]
    preferences_updated_at: float | None


@dataclass(frozen=True)
class Candidate:
    """An item the orchestrator proposes to ``rank``."""

    item_id: str
    algorithm: str | None = None
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        return _drop_none(item_id=self.item_id, algorithm=self.algorithm, score=self.score)


@dataclass(frozen=True)
class RankedItem(_Out):
    item_id: str
    score: float
    propensity: float
    explored: bool


@dataclass(frozen=True)
class Ranking(_Out):
    impression_id: str
    ranking: list[RankedItem]
    epsilon: float
    segment: Segment
    experiments: list[ExperimentVariant] = field(default_factory=list)


@dataclass(frozen=True)
class Impression(_Out):
    impression_id: str
    user_id: str
    segment: str
    created_at: float
    epsilon: float
    model_version: str | None
    context: dict[str, Any]
    slate: list[dict[str, Any]]
    feedback: list[dict[str, Any]]


# -- algorithms --------------------------------------------------------------------


@dataclass(frozen=True)
class PerformanceRecord:
    """Aggregated counts of one algorithm: give exactly one of ``segment`` or ``user_id``."""

    algorithm: str
    impressions: int
    clicks: int
    conversions: int = 0
    satisfaction: float | None = None
    segment: Segment | None = None
    user_id: str | None = None
    timestamp: Timestamp | None = None

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            algorithm=self.algorithm,
            segment=self.segment,
            user_id=self.user_id,
            impressions=self.impressions,
            clicks=self.clicks,
            conversions=self.conversions,
            satisfaction=self.satisfaction,
            timestamp=_timestamp(self.timestamp),
        )


@dataclass(frozen=True)
class PerformanceReport(_Out):
    report_id: str
    status: Literal["accepted", "duplicate"]
    records: int


@dataclass(frozen=True)
class AlgorithmStats(_Out):
    segment: Segment
    algorithm: str
    impressions: float  # whole counts arrive as int; inverse-propensity credit's fractional
    clicks: float
    conversions: float
    ctr: float
    conversion_rate: float
    satisfaction: float | None
    posterior_mean: float
    posterior_interval: list[float]
    enabled: bool
    status_reason: str | None
    weight: float
    effective_impressions: float | None = None
    """The impressions' effective sample size, what the posterior reads (``impressions``
    for whole counts); None from a server that does not report it."""


@dataclass(frozen=True)
class Algorithms(_Out):
    window_days: float
    algorithms: list[AlgorithmStats]


@dataclass(frozen=True)
class Override(_Out):
    algorithm: str
    enabled: bool | None
    segments: list[Segment]


# -- experiments -------------------------------------------------------------------


@dataclass(frozen=True)
class Variant(_Out):
    """An arm of an experiment; ``config`` may hold ``weights``, ``epsilon``, ``model_slot``."""

    key: str
    weight: float
    config: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return _drop_none(key=self.key, weight=self.weight, config=self.config)


@dataclass(frozen=True)
class Metric(_Out):
    """``binomial``/``continuous`` metrics name an ``event``; ``ratio`` ones a
    ``numerator`` and a ``denominator`` event type."""

    name: str
    type: Literal["binomial", "continuous", "ratio"]
    event: str | None = None
    aggregate: Literal["sum", "count"] | None = None
    numerator: str | None = None
    denominator: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            name=self.name,
            type=self.type,
            event=self.event,
            aggregate=self.aggregate,
            numerator=self.numerator,
            denominator=self.denominator,
        )


@dataclass(frozen=True)
class Experiment(_Out):
    experiment_id: str
    name: str
    hypothesis: str | None
    variants: list[Variant]
    traffic_allocation: float
    seed: str
    hash_version: int
    metrics: list[Metric]
    guardrails: list[Metric]
    alpha: float
    sequential: bool
    status: Literal["draft", "running", "stopped"]
    created_at: float
    started_at: float | None
    stopped_at: float | None


@dataclass(frozen=True)
class Assignment(_Out):
    experiment_id: str
    user_id: str
    variant: str | None
    in_experiment: bool


@dataclass(frozen=True)
class Srm(_Out):
    p_value: float | None
    flagged: bool
    observed: dict[str, int]
    expected: dict[str, float]


@dataclass(frozen=True)
class VariantResult(_Out):
    key: str
    users: int
    mean: float | None
    stddev: float | None
    conversions: int | None = None


@dataclass(frozen=True)
class Comparison(_Out):
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


@dataclass(frozen=True)
class MetricResult(_Out):
    name: str
    type: Literal["binomial", "continuous", "ratio"]
    guardrail: bool
    variants: list[VariantResult]
    comparisons: list[Comparison]


@dataclass(frozen=True)
class Results(_Out):
    experiment_id: str
    status: str
    correction: Literal["holm", "bh"]
    sequential: bool
    alpha: float
    srm: Srm
    metrics: list[MetricResult]
    warnings: list[str]


# -- models, guard, privacy, health ------------------------------------------------


@dataclass(frozen=True)
class ModelRecord(_Out):
    version: str
    created_at: float
    status: str
    reason: str
    kind: str
    sha256: str
    window_start: float
    window_end: float
    examples: int
    positives: int
    metrics: dict[str, Any]
    feature_names: list[str]


@dataclass(frozen=True)
class TrainingJob(_Out):
    job_id: str
    trigger: str
    status: str
    created_at: float
    finished_at: float | None
    version: str | None
    message: str


@dataclass(frozen=True)
class Transition(_Out):
    """One step of a model deployment (deploy, promote, rollback, automatic ones)."""

    at: float
    action: str
    from_version: str | None
    to_version: str | None
    reason: str
    numbers: dict[str, float]
    by: str | None = None
    """Who asked: an API key's name, or ``monitor`` for the canary's own verdicts."""
    forced: bool = False
    """A promotion by hand that skipped the canary's verdict."""


@dataclass(frozen=True)
class Deployment(_Out):
    slots: dict[str, Any]
    live: dict[str, dict[str, int]]
    transitions: list[Transition]


@dataclass(frozen=True)
class Signal(_Out):
    value: float | None
    """None while the signal has no data yet (the server's schema says a number)."""
    fired: bool


@dataclass(frozen=True)
class Reliability(_Out):
    user_id: str
    score: float
    status: Literal["trusted", "suspect", "blocked"]
    signals: dict[str, Signal]
    since: float | None
    manual: bool
    reason: str


@dataclass(frozen=True)
class Suspect(_Out):
    user_id: str
    score: float
    status: Literal["trusted", "suspect", "blocked"]
    since: float | None
    manual: bool
    reason: str


@dataclass(frozen=True)
class Export(_Out):
    user_id: str
    stored_user_id: str
    exported_at: float
    state: dict[str, Any] | None
    events: list[dict[str, Any]]
    impressions: list[dict[str, Any]]
    exposures: list[dict[str, Any]]
    metric_values: list[dict[str, Any]]
    reliability: dict[str, Any] | None
    dead_letters: list[dict[str, Any]]


@dataclass(frozen=True)
class Erasure(_Out):
    user_id: str
    removed: dict[str, int]


@dataclass(frozen=True)
class Health(_Out):
    status: Literal["ok", "degraded", "down"]
    components: dict[str, dict[str, Any]]
    breakers: dict[str, dict[str, Any]] = field(default_factory=dict)
