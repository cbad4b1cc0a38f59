"""The body of ``POST /feedback``, decoded once with msgspec.

A batch is decoded into :class:`FeedbackWire` structs in one call, constraints
included; only when that fails is it decoded again, event by event, to reject just
the bad ones, each with a field-level error. The id rule (``core.ids``) is checked
after decoding, and only when a search of the body's bytes finds something that
could break it (``core.ids.json_may_break_id_rule``): a pattern per id in the
struct would cost several times the rest of the decoding. The structs are what
ingestion keeps: ``IngestService.build`` turns each into a ``core.events.Event``
in one step.

``api.schemas.FeedbackIn`` (pydantic) documents the same body in the OpenAPI
document; ``tests/unit/test_wire.py`` checks that the two accept and refuse the
same bodies. The id rule and the number range of timestamps are defined in
``core`` (``core.ids``, ``core.events.UNIX_SECONDS_LIMIT``), and both use them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Raw, Struct

from recloop.core.errors import InvalidInput
from recloop.core.events import FEEDBACK_TYPES, UNIX_SECONDS_LIMIT
from recloop.core.ids import ID_MAX_LENGTH, id_problem, json_may_break_id_rule

Id = Annotated[str, Meta(min_length=1, max_length=ID_MAX_LENGTH)]
"""An id (``core.ids``' rule is checked after decoding: :func:`id_error`)."""
Name = Annotated[str, Meta(min_length=1, max_length=64)]
CREDIT_WEIGHT_MAX: Final = 1e9
"""As ``api.schemas.CREDIT_WEIGHT_MAX``."""
Timestamp = (
    Annotated[datetime, Meta(tz=True)]
    | Annotated[float, Meta(ge=-UNIX_SECONDS_LIMIT, le=UNIX_SECONDS_LIMIT)]
)
"""RFC 3339 with a zone, or Unix seconds (a JSON number; ``true`` and ``"5"`` are neither)."""

FeedbackType = Literal[
    "rating", "like", "dislike", "share", "save", "review",
    "impression", "view", "click", "dwell", "skip", "add_to_cart", "purchase",
]  # fmt: skip


class AttributionWire(Struct, forbid_unknown_fields=True, gc=False):
    """Which recommendation produced the item the user acted on."""

    algorithm: Name | None = None
    experiment_id: Id | None = None
    variant: Name | None = None
    model_version: Name | None = None
    impression_id: Id | None = None
    propensity: Annotated[float, Meta(gt=0.0, le=1.0)] | None = None
    credit_weights: dict[Name, Annotated[float, Meta(gt=0.0, le=CREDIT_WEIGHT_MAX)]] | None = None


class FeedbackWire(Struct, forbid_unknown_fields=True, gc=False):
    """One feedback event as sent; the value rules per type are ``core.events.check_event``'s.

    Not tracked by the garbage collector: decoded JSON holds no reference cycles.
    """

    user_id: Id
    item_id: Id
    type: FeedbackType
    event_id: Id | None = None
    value: float | None = None  # JSON has no NaN; a number out of float's range is refused
    text: Annotated[str, Meta(max_length=5000)] | None = None
    timestamp: Timestamp | None = None
    context: dict[str, Any] | None = None
    attribution: AttributionWire | None = None

    def attribution_record(self) -> dict[str, Any]:
        """The attribution's given fields (none of them null), as the event log keeps them."""
        a = self.attribution
        if a is None:
            return {}
        return {f: v for f in a.__struct_fields__ if (v := getattr(a, f)) is not None}


class _Batch(Struct, forbid_unknown_fields=True):
    events: Annotated[list[FeedbackWire], Meta(min_length=1)]


class _RawBatch(Struct, forbid_unknown_fields=True):
    events: Annotated[list[Raw], Meta(min_length=1)]


class _Envelope(Struct):
    """Tells a batch (it has ``events``) from a single event; other fields are skipped."""

    events: Raw = Raw()


class _TypeOnly(Struct):
    type: Any = None


_batch: Final = msgspec.json.Decoder(_Batch)
_raw_batch: Final = msgspec.json.Decoder(_RawBatch)
_envelope: Final = msgspec.json.Decoder(_Envelope)
_one: Final = msgspec.json.Decoder(FeedbackWire)
_type_only: Final = msgspec.json.Decoder(_TypeOnly)
_timestamp: Final = msgspec.json.Decoder(Timestamp)


class WireError(InvalidInput):
    """A body or an event refused by decoding: the field, the message and the error's kind
    (FastAPI's ``type`` in a 422: ``missing``, ``extra_forbidden``, ``json_invalid``...).

    ``label`` is the refused event's type for the metrics (``unknown`` if it names none),
    or None when the body as a whole is refused.
    """

    def __init__(self, field: str, message: str, kind: str = "value_error") -> None:
        super().__init__(field, message)
        self.kind = kind
        self.label: str | None = None


def decode_feedback(body: bytes, max_events: int) -> FeedbackWire | list[FeedbackWire | WireError]:
    """One event, or a batch: each event decoded, or the error that rejects it alone.

    Raises
    ------
    WireError
        when the body as a whole is refused: not JSON, neither an event nor
        ``{"events": [...]}``, a single invalid event, or more than ``max_events``.
    """
    try:
        return _decode(body, max_events)
    except msgspec.ValidationError as exc:
        raise error_of(exc) from None
    except msgspec.DecodeError as exc:  # (after ValidationError, its subclass)
        raise WireError("", f"invalid JSON: {exc}", "json_invalid") from None
    except RecursionError:  # nested deeper than the interpreter's recursion limit (~1000)
        raise WireError("", "invalid JSON: nested too deeply", "json_invalid") from None


def _decode(body: bytes, max_events: int) -> FeedbackWire | list[FeedbackWire | WireError]:
    if b"events" not in body:  # no batch (one whose key is spelled with escapes: below)
        try:
            event = _one.decode(body)
        except (msgspec.DecodeError, RecursionError):
            pass  # the batch-first order below names what is wrong
        else:
            # What decodes as one event is no batch (each refuses the other's fields): the
            # answer of the batch-first order, without its failed decodes.
            return _checked(event, body)
    return _decode_batch_first(body, max_events)


def _decode_batch_first(
    body: bytes, max_events: int
) -> FeedbackWire | list[FeedbackWire | WireError]:
    events: list[FeedbackWire | WireError]
    try:
        events = list(_batch.decode(body).events)
    except msgspec.ValidationError:  # not a valid batch: find out what it is, and what is wrong
        if not _is_batch(body):
            return _decode_single(body)
        raws = _raw_batch.decode(body).events
        _check_size(len(raws), max_events)
        events = [_decode_one(i, raw) for i, raw in enumerate(raws)]
    else:
        _check_size(len(events), max_events)
    if json_may_break_id_rule(body):
        events = [(id_error(e) or e) if isinstance(e, FeedbackWire) else e for e in events]
    return events


def _is_batch(body: bytes) -> bool:
    try:
        return bool(_envelope.decode(body).events)
    except msgspec.ValidationError:
        expected = 'expected an event object or {"events": [...]}'
        raise WireError("", expected, "model_type") from None


def _decode_single(body: bytes) -> FeedbackWire:
    try:
        event = _one.decode(body)
    except msgspec.ValidationError as exc:
        error = error_of(exc)
        error.label = type_label(body)
        raise error from None
    return _checked(event, body)


def _checked(event: FeedbackWire, body: bytes) -> FeedbackWire:
    """``event``, decoded from ``body``, if its ids keep the id rule; raises otherwise."""
    if json_may_break_id_rule(body) and (error := id_error(event)) is not None:
        raise error
    return event


def _check_size(n: int, max_events: int) -> None:
    if n > max_events:
        raise WireError("events", f"at most {max_events} events per request, got {n}")


def _decode_one(index: int, raw: Raw) -> FeedbackWire | WireError:
    try:
        return _one.decode(raw)
    except msgspec.ValidationError as exc:
        error = error_of(exc)
    if not error.field:  # not an object: the batch is malformed (its schema says so)
        raise WireError(f"events.{index}", error.message, "model_type")
    error.label = type_label(raw)
    return error


_PATH_IDS: Final = ("user_id", "item_id")
_ATTRIBUTION_IDS: Final = (
    ("experiment_id", True),
    ("impression_id", True),
    ("algorithm", False),
    ("variant", False),
    ("model_version", False),
)


def id_error(event: FeedbackWire) -> WireError | None:
    """The first id of ``event`` that breaks ``core.ids``' rule, as a field-level error.

    Users, items, experiments and impressions are named in URL paths; event ids,
    algorithms, variants and model versions are not.
    """
    checks = [(name, getattr(event, name), True) for name in _PATH_IDS]
    if event.event_id is not None:
        checks.append(("event_id", event.event_id, False))
    if event.attribution is not None:
        for name, in_path in _ATTRIBUTION_IDS:
            checks.append((f"attribution.{name}", getattr(event.attribution, name), in_path))
    for field, value, in_path in checks:
        problem = None if value is None else id_problem(value, in_path)
        if problem is not None:
            error = WireError(field, problem, "string_pattern_mismatch")
            error.label = event.type
            return error
    return None


def type_label(raw: bytes | Raw) -> str:
    """The ``type`` of an event refused by decoding, if it names one; else ``unknown``."""
    try:
        value = _type_only.decode(raw).type
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "unknown"
    return value if isinstance(value, str) and value in FEEDBACK_TYPES else "unknown"


def parse_timestamp(value: Any) -> datetime:
    """A timestamp as :data:`Timestamp` accepts it, from a JSON value (for pydantic models).

    >>> parse_timestamp("2026-01-01T00:00:00Z") == parse_timestamp(1767225600)
    True

    Raises
    ------
    ValueError
        saying why ``value`` is no timestamp.
    """
    try:
        parsed = msgspec.convert(value, Timestamp)
    except msgspec.ValidationError as exc:
        raise ValueError(_split(str(exc))[0]) from None
    return parsed if isinstance(parsed, datetime) else datetime.fromtimestamp(parsed, UTC)


_AT: Final = re.compile(r" - at `\$(.*)`$")
_STEP: Final = re.compile(r"\.(\w+)|\[(\d+|\.\.\.)\]")  # a field, an index, a key
_MISSING: Final = re.compile(r"Object missing required field `(.+)`")
_UNKNOWN: Final = re.compile(r"Object contains unknown field `(.+)`")


def _split(text: str) -> tuple[str, str]:
    """msgspec's message without its location, and the location as a dotted path."""
    at = _AT.search(text)
    if at is None:
        return text, ""
    path = ".".join(name or index for name, index in _STEP.findall(at.group(1)))
    return text[: at.start()], path


def error_of(exc: msgspec.ValidationError) -> WireError:
    """msgspec's error as a field-level one: the field's dotted path and what is wrong.

    >>> try:
    ...     _one.decode(b'{"user_id": "u", "type": "like"}')
    ... except msgspec.ValidationError as exc:
    ...     e = error_of(exc)
    >>> e.field, e.message, e.kind
    ('item_id', 'field required', 'missing')
    """
    message, path = _split(str(exc))
    if m := _MISSING.fullmatch(message):
        return WireError(_join(path, m.group(1)), "field required", "missing")
    if m := _UNKNOWN.fullmatch(message):
        return WireError(_join(path, m.group(1)), "unknown field", "extra_forbidden")
    return WireError(path, message)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
