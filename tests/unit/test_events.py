"""Feedback types, signals and event checks (core.events)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.errors import InvalidInput
from recloop.core.events import (
    EXPLICIT_TYPES,
    FEEDBACK_TYPES,
    IMPLICIT_TYPES,
    Event,
    SignalTable,
    TypeWeight,
    check_event,
    is_explicit,
)

TABLE = SignalTable(
    {
        "rating": TypeWeight(1.0, 1.0),
        "like": TypeWeight(1.0, 1.0),
        "dislike": TypeWeight(-1.0, 1.0),
        "share": TypeWeight(1.0, 1.2),
        "impression": TypeWeight(0.0, 0.0),
        "click": TypeWeight(0.3, 0.5),
        "skip": TypeWeight(-0.3, 0.5),
        "dwell": TypeWeight(1.0, 1.0),
    }
)


def test_types_partition() -> None:
    assert EXPLICIT_TYPES.isdisjoint(IMPLICIT_TYPES)
    assert EXPLICIT_TYPES | IMPLICIT_TYPES == FEEDBACK_TYPES
    assert all(is_explicit(t) for t in EXPLICIT_TYPES)
    assert not any(is_explicit(t) for t in IMPLICIT_TYPES)


# -- SignalTable.signal --------------------------------------------------------


@pytest.mark.parametrize(
    ("rating", "expected"), [(1, -1.0), (2, -0.5), (3, 0.0), (3.5, 0.25), (4, 0.5), (5, 1.0)]
)
def test_rating_maps_to_minus_one_plus_one(rating: float, expected: float) -> None:
    assert TABLE.signal("rating", rating) == expected


def test_rating_scaled_by_strength_and_multiplier() -> None:
    table = SignalTable({"rating": TypeWeight(0.5, 2.0)})
    assert table.signal("rating", 5.0) == pytest.approx(1.0)
    assert table.signal("rating", 2.0) == pytest.approx(-0.5)


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("like", 1.0),
        ("dislike", -1.0),
        ("share", 1.2),
        ("click", 0.15),
        ("skip", -0.15),
        ("impression", 0.0),
    ],
)
def test_fixed_type_signals(event_type: str, expected: float) -> None:
    assert TABLE.signal(event_type, None) == pytest.approx(expected)


def test_dwell_log_growth() -> None:
    # log1p(9) / log1p(99) = ln 10 / ln 100 = 1/2
    table = SignalTable({"dwell": TypeWeight(1.0, 0.5)}, dwell_full_seconds=99.0)
    assert table.signal("dwell", 0.0) == 0.0
    assert table.signal("dwell", 9.0) == pytest.approx(0.25)
    assert table.signal("dwell", 99.0) == pytest.approx(0.5)
    assert table.signal("dwell", 10_000.0) == pytest.approx(0.5)  # capped at full strength


@settings(deadline=None)
@given(a=st.floats(0.0, 1e7), b=st.floats(0.0, 1e7))
def test_dwell_monotone_and_capped(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    s_lo, s_hi = TABLE.signal("dwell", lo), TABLE.signal("dwell", hi)
    assert 0.0 <= s_lo <= s_hi <= 1.0


@settings(deadline=None)
@given(
    event_type=st.sampled_from(["rating", "dwell", "like"]),
    value=st.floats(1.0, 5.0),
    strength=st.floats(-1.0, 1.0),
    multiplier=st.floats(0.0, 10.0),
)
def test_multiplier_applied(
    event_type: str, value: float, strength: float, multiplier: float
) -> None:
    plain = SignalTable({event_type: TypeWeight(strength, 1.0)}).signal(event_type, value)
    scaled = SignalTable({event_type: TypeWeight(strength, multiplier)}).signal(event_type, value)
    assert scaled == pytest.approx(plain * multiplier, abs=1e-12)


@pytest.mark.parametrize("event_type", ["rating", "dwell"])
def test_value_required_for_signal(event_type: str) -> None:
    with pytest.raises(ValueError, match="value"):
        TABLE.signal(event_type, None)


# -- check_event ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "value"),
    [
        ("rating", 1.0),
        ("rating", 3.5),
        ("rating", 5.0),
        ("dwell", 0.0),
        ("dwell", 12.5),
        ("like", None),
        ("click", None),
        ("view", 3.0),
    ],
)
def test_check_event_accepts(event_type: str, value: float | None) -> None:
    assert check_event(event_type, value, 100.0, 100.0, 300.0) is None


@pytest.mark.parametrize(
    ("event_type", "value", "words"),
    [
        ("rating", None, "needs a value"),
        ("rating", 0.99, "between 1 and 5"),
        ("rating", 5.01, "between 1 and 5"),
        ("rating", math.nan, "between 1 and 5"),
        ("dwell", None, "needs a value"),
        ("dwell", -0.1, ">= 0"),
        ("dwell", math.inf, "finite"),
        ("like", math.nan, "takes no value"),
        ("view", math.nan, "finite"),
        ("click", -math.inf, "finite"),
        ("like", -50.0, "a like takes no value"),
        ("impression", 0.0, "takes no value"),
    ],
)
def test_check_event_refuses_value(event_type: str, value: float | None, words: str) -> None:
    with pytest.raises(InvalidInput, match=words) as info:
        check_event(event_type, value, 100.0, 100.0, 300.0)
    assert info.value.field == "value"
    assert str(info.value).startswith("value: ")


def test_check_event_future_timestamp() -> None:
    now = 1_000.0
    check_event("like", None, now + 300.0, now, 300.0)  # at the limit: accepted
    check_event("like", None, 0.0, now, 300.0)  # the past: accepted
    with pytest.raises(InvalidInput, match="in the future") as info:
        check_event("like", None, now + 300.5, now, 300.0)
    assert info.value.field == "timestamp"


# -- Event records -------------------------------------------------------------


def test_event_record_round_trip() -> None:
    event = Event(
        "e1",
        "u1",
        "i1",
        "rating",
        12.5,
        value=4.0,
        text="good",
        context={"device": "tv"},
        attribution={"variant": "b"},
        offset=3,
    )
    record = event.to_record()
    assert "offset" not in record
    assert Event.from_record(record, 42) == Event(
        "e1",
        "u1",
        "i1",
        "rating",
        12.5,
        value=4.0,
        text="good",
        context={"device": "tv"},
        attribution={"variant": "b"},
        offset=42,
    )


def test_minimal_event_record_omits_empty_fields() -> None:
    record = Event("e1", "u1", "i1", "like", 1.0).to_record()
    assert record == {
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "i1",
        "type": "like",
        "timestamp": 1.0,
    }
    assert Event.from_record(record, 0) == Event("e1", "u1", "i1", "like", 1.0, offset=0)
