"""The msgspec decoding of POST /feedback (api.wire) against the pydantic model that
documents it (api.schemas.FeedbackIn): the same bodies accepted, with the same content,
and the same refused, naming a field pydantic names too."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from recloop.api import wire
from recloop.api.schemas import FeedbackIn
from recloop.api.wire import FeedbackWire, WireError, _Batch, decode_feedback, error_of
from recloop.core.events import FEEDBACK_TYPES
from recloop.core.ids import ID_MESSAGE, PATH_ID_MESSAGE

BASE = {"user_id": "u", "item_id": "i", "type": "like"}

EDGE_CASES: list[dict[str, Any]] = [
    BASE,
    {**BASE, "event_id": "e", "value": 3, "text": "t", "context": {"a": [1, {"b": None}]}},
    # types
    {**BASE, "value": "5"},
    {**BASE, "value": True},
    {**BASE, "value": None},
    {**BASE, "value": 10**30},
    {**BASE, "value": -1.5e308},
    {**BASE, "user_id": 5},
    {**BASE, "type": "teleport"},
    {**BASE, "type": None},
    {**BASE, "context": []},
    {**BASE, "context": "x"},
    {**BASE, "text": 5},
    # bounds and ids
    {**BASE, "user_id": ""},
    {**BASE, "user_id": "x" * 128},
    {**BASE, "user_id": "x" * 129},
    {**BASE, "event_id": "x" * 129},
    {**BASE, "text": "x" * 5000},
    {**BASE, "text": "x" * 5001},
    {**BASE, "user_id": "a/b"},
    {**BASE, "item_id": "a\x00b"},
    {**BASE, "item_id": "a\n"},
    {**BASE, "event_id": "a/b"},
    {**BASE, "event_id": "a\x7f"},
    {**BASE, "event_id": "a\x1f"},
    {**BASE, "user_id": "a%2Fb"},
    {**BASE, "user_id": ".."},
    {**BASE, "item_id": "."},
    {**BASE, "item_id": "..."},
    {**BASE, "event_id": ".."},
    {**BASE, "user_id": "\u200f\u00e9\U0001f600"},
    {**BASE, "attribution": {"experiment_id": "x/y"}},
    {**BASE, "attribution": {"impression_id": "x\ty"}},
    {**BASE, "attribution": {"algorithm": "a\x00"}},
    {**BASE, "attribution": {"algorithm": "a/b", "variant": "v/1"}},
    {**BASE, "attribution": {"propensity": 0}},
    {**BASE, "attribution": {"propensity": 1}},
    {**BASE, "attribution": {"propensity": True}},
    {**BASE, "attribution": {"surprise": 1}},
    {**BASE, "attribution": {"variant": None, "algorithm": "x" * 64}},
    {**BASE, "attribution": {"model_version": "x" * 65}},
    {**BASE, "attribution": None},
    # missing values are check_event's (a rating needs one): the schema lets them through
    {**BASE, "type": "rating"},
    {**BASE, "type": "dwell", "value": -1},
    # unknown and missing fields
    {**BASE, "surprise": 1},
    {"user_id": "u", "type": "like"},
    {},
    # timestamps
    {**BASE, "timestamp": "2026-01-01T00:00:00Z"},
    {**BASE, "timestamp": "2026-01-01T00:00:00.123456+01:30"},
    {**BASE, "timestamp": "2026-01-01 00:00:00+00:00"},
    {**BASE, "timestamp": "2026-01-01t00:00:00z"},
    {**BASE, "timestamp": "2026-01-01T00:00:00"},
    {**BASE, "timestamp": "2026-01-01"},
    {**BASE, "timestamp": "1767225600"},
    {**BASE, "timestamp": "yesterday"},
    {**BASE, "timestamp": 1767225600},
    {**BASE, "timestamp": 1767225600.5},
    {**BASE, "timestamp": -1},
    {**BASE, "timestamp": 2e10},
    {**BASE, "timestamp": 2e10 + 1},
    {**BASE, "timestamp": -1e12},
    {**BASE, "timestamp": 1767225600000},
    {**BASE, "timestamp": True},
    {**BASE, "timestamp": None},
]


def _pydantic(body: bytes) -> FeedbackIn | ValidationError | None:
    """As the route did before msgspec: orjson, then the model (None: not JSON)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    try:
        return FeedbackIn.model_validate(data)
    except ValidationError as exc:
        return exc


def _msgspec(body: bytes) -> FeedbackWire | WireError:
    try:
        decoded = decode_feedback(body, 1000)
    except WireError as exc:
        return exc
    assert isinstance(decoded, FeedbackWire)
    return decoded


def _seconds(t: datetime | float | None) -> float | None:
    return t.timestamp() if isinstance(t, datetime) else t


def assert_agree(event: Any) -> None:
    body = json.dumps(event).encode()
    theirs, ours = _pydantic(body), _msgspec(body)
    if theirs is None:  # NaN or Infinity, say: no JSON
        assert isinstance(ours, WireError)
        assert (ours.field, ours.kind) == ("", "json_invalid")
        return
    if isinstance(theirs, ValidationError):
        assert isinstance(ours, WireError), f"msgspec accepts what pydantic refuses: {theirs}"
        fields = {".".join(str(p) for p in e["loc"]) for e in theirs.errors()}
        assert ours.field in fields, (ours.field, fields)
        return
    assert not isinstance(ours, WireError), f"msgspec refuses what pydantic accepts: {ours}"
    assert (ours.event_id, ours.user_id, ours.item_id, ours.type) == (
        theirs.event_id,
        theirs.user_id,
        theirs.item_id,
        theirs.type,
    )
    assert (ours.value, ours.text, ours.context) == (theirs.value, theirs.text, theirs.context)
    assert _seconds(ours.timestamp) == _seconds(theirs.timestamp)
    expected = (
        {} if theirs.attribution is None else theirs.attribution.model_dump(exclude_none=True)
    )
    assert ours.attribution_record() == expected


@pytest.mark.parametrize("event", EDGE_CASES)
def test_edge_cases_agree(event: dict[str, Any]) -> None:
    assert_agree(event)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, st.none(), st.integers(), st.booleans(), st.floats(), st.text())


_ids = st.one_of(
    st.text(max_size=130),
    st.sampled_from(["", "a/b", "a\x00", "a\n", "x" * 128, "x" * 129, "%2F", "..", "."]),
)
_timestamps = st.one_of(
    st.floats(-3e10, 3e10),
    st.integers(-(10**13), 10**13),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC))).map(lambda d: d.isoformat()),
)
_attribution = st.fixed_dictionaries(
    {},
    optional={
        "algorithm": _maybe(_ids),
        "experiment_id": _maybe(_ids),
        "variant": _maybe(_ids),
        "model_version": _maybe(_ids),
        "impression_id": _maybe(_ids),
        "propensity": _maybe(st.floats(-0.5, 1.5)),
        "other": st.integers(),
    },
)
_events = st.fixed_dictionaries(
    {},
    optional={
        "event_id": _maybe(_ids),
        "user_id": _maybe(_ids),
        "item_id": _maybe(_ids),
        "type": st.one_of(st.sampled_from(sorted(FEEDBACK_TYPES)), _maybe(st.just("x"))),
        "value": _maybe(st.floats(allow_nan=False, allow_infinity=False)),
        "text": _maybe(st.text(max_size=20)),
        "timestamp": _maybe(_timestamps),
        "context": _maybe(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
        "attribution": _maybe(_attribution),
        "surprise": st.integers(),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(event=_events)
def test_generated_bodies_agree(event: dict[str, Any]) -> None:
    assert_agree(event)


def _outcome(decode: Any, body: bytes) -> Any:
    try:
        decoded = decode(body, 3)
    except WireError as exc:
        return ("refused", exc.field, exc.message, exc.kind, exc.label)
    if isinstance(decoded, list):
        return [
            (e.field, e.message, e.kind, e.label) if isinstance(e, WireError) else e
            for e in decoded
        ]
    return decoded


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    event=_events,
    based=st.booleans(),
    wrap=st.sampled_from(["single", "batch", "escaped", "context"]),
)
def test_single_event_first_decodes_as_batch_first(
    event: dict[str, Any], based: bool, wrap: str
) -> None:
    """A body without ``events`` is first decoded as one event: the same answer (events,
    refusals, field, message, kind, label) as the batch-first order, the oracle."""
    if based:  # mostly valid: a few fields changed
        event = {**BASE, **event}
    body = {
        "single": lambda: json.dumps(event),
        "batch": lambda: json.dumps({"events": [event, BASE]}),
        "escaped": lambda: json.dumps({"events": [event]}).replace("events", "\\u0065vents"),
        "context": lambda: json.dumps({**event, "context": {"events": 1}}),
    }[wrap]().encode()
    assert _outcome(decode_feedback, body) == _outcome(_decode_batch_first_oracle, body)


def _decode_batch_first_oracle(body: bytes, max_events: int) -> Any:
    try:
        return wire._decode_batch_first(body, max_events)
    except msgspec.ValidationError as exc:
        raise wire.error_of(exc) from None
    except msgspec.DecodeError as exc:
        raise WireError("", f"invalid JSON: {exc}", "json_invalid") from None


def test_a_valid_batch_is_decoded_whole() -> None:
    body = json.dumps({"events": [BASE, {**BASE, "type": "rating", "value": 4}]}).encode()
    decoded = decode_feedback(body, 2)
    assert isinstance(decoded, list)
    assert [(e.type, e.value) for e in decoded if isinstance(e, FeedbackWire)] == [
        ("like", None),
        ("rating", 4.0),
    ]


def test_a_batch_rejects_only_its_bad_events_naming_the_field() -> None:
    events = [
        BASE,
        {**BASE, "user_id": "a/b"},
        {**BASE, "event_id": "a\x00"},
        {**BASE, "surprise": 1},
        {"user_id": "u", "type": "click"},
        {**BASE, "attribution": {"propensity": 2}},
    ]
    decoded = decode_feedback(json.dumps({"events": events}).encode(), 10)
    assert isinstance(decoded, list)
    assert isinstance(decoded[0], FeedbackWire)
    errors = [
        (e.field, e.message, e.kind, e.label) for e in decoded[1:] if isinstance(e, WireError)
    ]
    assert errors == [
        ("user_id", PATH_ID_MESSAGE, "string_pattern_mismatch", "like"),
        ("event_id", ID_MESSAGE, "string_pattern_mismatch", "like"),
        ("surprise", "unknown field", "extra_forbidden", "like"),
        ("item_id", "field required", "missing", "click"),
        ("attribution.propensity", "Expected `float` <= 1.0", "value_error", "like"),
    ]


@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        (b"{not json", "", "json_invalid"),
        (b"[1, 2]", "", "model_type"),
        (b'{"events": []}', "events", "value_error"),
        (b'{"events": "x"}', "events", "value_error"),
        (b'{"events": null}', "events", "value_error"),
        (b'{"events": [{}], "more": 1}', "more", "extra_forbidden"),
        (b'{"events": [{}, {}, {}]}', "events", "value_error"),
        (b'{"events": [{}, [null]]}', "events.1", "model_type"),  # not an object: no event
        (b'{"user_id": "u", "type": "like"}', "item_id", "missing"),
        (
            b'{"user_id": "u", "item_id": "i", "type": "like", "value": 1e400}',
            "value",
            "value_error",
        ),
    ],
)
def test_bodies_refused_whole(body: bytes, field: str, kind: str) -> None:
    with pytest.raises(WireError) as caught:
        decode_feedback(body, 2)
    assert (caught.value.field, caught.value.kind) == (field, kind)
    # Only a single event refused is counted under its type; a body refused whole is not.
    assert (caught.value.label is not None) == body.startswith(b'{"user_id"')


def test_the_location_of_a_nested_error_is_a_dotted_path() -> None:
    body = json.dumps({"events": [BASE, {**BASE, "attribution": {"propensity": 0}}]}).encode()
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(body, type=_Batch)
    assert error_of(caught.value).field == "events.1.attribution.propensity"
