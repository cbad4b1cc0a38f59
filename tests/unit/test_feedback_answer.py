"""The 202's body of a single event, built directly, as the batch's answer builds it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from recloop.api.routers.feedback import _answer, _answer_one
from recloop.services.ingest import EventOutcome


@given(st.text(max_size=8), st.sampled_from(["accepted", "duplicate"]))
def test_a_single_events_answer_as_a_batch_of_one(event_id: str, status: str) -> None:
    """A single event answered with a 202 was accepted or a duplicate (refusals are
    errors): its body against :func:`_answer`'s counting passes."""
    outcome = EventOutcome(event_id, status)
    assert _answer_one(outcome) == _answer([outcome])
