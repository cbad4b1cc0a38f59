"""The low watermark of applied log offsets (core.offsets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.offsets import OffsetTracker


@st.composite
def begun_and_finish_order(draw: st.DrawFn) -> tuple[int, list[int], list[int]]:
    start = draw(st.integers(-1, 1_000))
    gaps = draw(st.lists(st.integers(1, 5), min_size=1, max_size=40))
    offsets, o = [], start
    for gap in gaps:
        o += gap
        offsets.append(o)
    return start, offsets, draw(st.permutations(offsets))


def oracle(start: int, begun: list[int], done: set[int]) -> int:
    """The largest begun offset with every begun offset up to it done, else the start."""
    watermark = start
    for o in sorted(begun):
        if o not in done:
            break
        watermark = o
    return watermark


@settings(deadline=None)
@given(case=begun_and_finish_order())
def test_watermark_matches_oracle(case: tuple[int, list[int], list[int]]) -> None:
    start, offsets, finish_order = case
    tracker = OffsetTracker(watermark=start)
    for o in offsets:
        tracker.begin(o)
    assert tracker.in_flight == len(offsets)
    assert tracker.last_begun == offsets[-1]
    done: set[int] = set()
    previous = tracker.watermark
    for o in finish_order:
        tracker.done(o)
        done.add(o)
        assert tracker.watermark == oracle(start, offsets, done)
        assert tracker.watermark >= previous
        assert tracker.in_flight == len(offsets) - len(done)
        previous = tracker.watermark
    assert tracker.watermark == offsets[-1]


@settings(deadline=None)
@given(case=begun_and_finish_order(), split=st.integers(0, 40))
def test_begin_between_dones(case: tuple[int, list[int], list[int]], split: int) -> None:
    # begin a first batch, finish it, then begin and finish the rest
    start, offsets, _ = case
    first, rest = offsets[:split], offsets[split:]
    tracker = OffsetTracker(watermark=start)
    for o in first:
        tracker.begin(o)
    for o in reversed(first):
        tracker.done(o)
    assert tracker.watermark == (first[-1] if first else start)
    for o in rest:
        tracker.begin(o)
    for o in rest:
        tracker.done(o)
    assert tracker.watermark == offsets[-1]
    assert tracker.in_flight == 0


def test_watermark_with_gaps() -> None:
    tracker = OffsetTracker(watermark=10)
    for o in (12, 15, 20):
        tracker.begin(o)
    tracker.done(15)
    assert tracker.watermark == 10
    tracker.done(12)
    assert (tracker.watermark, tracker.in_flight) == (15, 1)
    tracker.done(20)
    assert (tracker.watermark, tracker.in_flight) == (20, 0)


@pytest.mark.parametrize("offset", [5, 3])
def test_begin_out_of_order_raises(offset: int) -> None:
    tracker = OffsetTracker(watermark=0)
    tracker.begin(5)
    with pytest.raises(ValueError, match="out of order"):
        tracker.begin(offset)
    assert tracker.last_begun == 5


def test_begin_at_or_below_start_raises() -> None:
    with pytest.raises(ValueError, match="out of order"):
        OffsetTracker(watermark=10).begin(10)
