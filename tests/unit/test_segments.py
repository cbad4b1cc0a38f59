"""User segments and their precedence (core.segments)."""

from __future__ import annotations

import pytest

from recloop.core.errors import InvalidInput
from recloop.core.segments import SEGMENTS, SegmentRules, segment_of

DAY = 86_400.0
NOW = 1_000 * DAY
IDLE = NOW - 30 * DAY  # exactly the default inactivity threshold ago
RECENT = NOW - DAY


@pytest.mark.parametrize(
    ("interactions", "last_event_at", "expected"),
    [
        (0, None, "new"),  # never seen
        (4, RECENT, "new"),
        (4, IDLE, "new"),  # new wins over inactive
        (5, RECENT, "regular"),
        (5, None, "regular"),
        (100, RECENT, "regular"),  # power is > 100
        (101, RECENT, "power"),
        (101, None, "power"),
        (101, IDLE, "inactive"),  # inactive wins over power
        (50, IDLE, "inactive"),  # exactly 30 days idle
        (50, IDLE + 1.0, "regular"),  # one second short of 30 days
        (50, NOW + DAY, "regular"),  # last event in the future (clock skew)
    ],
)
def test_precedence_new_inactive_power_regular(
    interactions: int, last_event_at: float | None, expected: str
) -> None:
    assert segment_of(interactions, last_event_at, NOW) == expected


def test_custom_rules() -> None:
    rules = SegmentRules(new_max_interactions=1, inactive_days=7.0, power_min_interactions=10)
    assert segment_of(0, None, NOW, rules) == "new"
    assert segment_of(1, RECENT, NOW, rules) == "regular"
    assert segment_of(11, RECENT, NOW, rules) == "power"
    assert segment_of(11, NOW - 7 * DAY, NOW, rules) == "inactive"


def test_every_result_is_a_segment() -> None:
    results = {segment_of(n, t, NOW) for n in (0, 5, 500) for t in (None, RECENT, IDLE)}
    assert results == set(SEGMENTS)


def test_negative_interactions_are_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        segment_of(-1, None, NOW)
    assert info.value.field == "interactions"
