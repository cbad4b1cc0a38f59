"""A request's rate-limit asks: a one-event request's built directly, as the batch's."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from recloop.core.events import FEEDBACK_TYPES, Event
from recloop.services.ingest import _asks, _asks_of_batch

TYPES = sorted(FEEDBACK_TYPES)


@given(st.sampled_from(TYPES), st.text(min_size=1, max_size=5), st.integers(0, 3))
def test_one_event_asks_as_a_batch_of_one(kind: str, user_id: str, index: int) -> None:
    """The one-event shortcut against the batch's passes (the computation it skips)."""
    pending = [(index, Event("e", user_id, "i", kind, 1.0, 1.0))]
    assert _asks(pending) == _asks_of_batch(pending)


def test_batch_asks_count_each_users_events_in_order_of_first() -> None:
    pending = [
        (n, Event(f"e{n}", user, "i", kind, 1.0, 1.0))
        for n, (user, kind) in enumerate(
            [("b", "view"), ("a", "like"), ("b", "click"), ("a", "rating"), ("c", "view")]
        )
    ]
    assert _asks(pending) == [
        ("explicit", [("a", 2)]),
        ("implicit", [("b", 2), ("c", 1)]),
    ]
