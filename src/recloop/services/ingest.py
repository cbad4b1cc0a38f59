"""Turning validated request events into logged events."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from recloop.core.errors import InvalidInput
from recloop.core.events import Event, check_event
from recloop.core.ids import uuid7
from recloop.services.batching import GroupCommit


@dataclass(frozen=True, slots=True)
class EventOutcome:
    event_id: str | None
    status: str  # accepted | duplicate | rejected
    error: dict[str, Any] | None = None


class IngestService:
    """Checks each event's domain rules, logs the good ones durably, reports per event."""

    def __init__(
        self,
        committer: GroupCommit[Event, int | None],
        max_future_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._committer = committer
        self._max_future = max_future_seconds
        self._clock = clock

    def build(self, fields: Mapping[str, Any], now: float) -> Event:
        """An :class:`Event` from schema-valid fields; raises InvalidInput on a domain rule."""
        timestamp = fields.get("timestamp")
        ts = now if timestamp is None else timestamp.timestamp()
        value = fields.get("value")
        check_event(fields["type"], value, ts, now, self._max_future)
        return Event(
            event_id=fields.get("event_id") or uuid7(),
            user_id=fields["user_id"],
            item_id=fields["item_id"],
            type=fields["type"],
            timestamp=ts,
            value=None if value is None else float(value),
            text=fields.get("text"),
            context=fields.get("context") or {},
            attribution=fields.get("attribution") or {},
        )

    async def submit(
        self, candidates: list[Mapping[str, Any] | InvalidInput | Exception]
    ) -> list[EventOutcome]:
        """Log every valid candidate; the others are reported rejected with their error.

        ``candidates`` holds schema-valid field mappings, or the error that
        already rejected an event at the schema level.
        """
        now = self._clock()
        outcomes: list[EventOutcome | None] = []
        events: list[Event] = []
        for candidate in candidates:
            if isinstance(candidate, Exception):
                outcomes.append(EventOutcome(None, "rejected", _error(candidate)))
                continue
            try:
                events.append(self.build(candidate, now))
                outcomes.append(None)
            except InvalidInput as exc:
                outcomes.append(EventOutcome(candidate.get("event_id"), "rejected", _error(exc)))
        offsets = await self._committer.submit(events) if events else []
        it = iter(zip(events, offsets, strict=True))
        result: list[EventOutcome] = []
        for outcome in outcomes:
            if outcome is None:
                event, offset = next(it)
                status = "accepted" if offset is not None else "duplicate"
                outcome = EventOutcome(event.event_id, status)
            result.append(outcome)
        return result


def _error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, InvalidInput):
        return {"field": exc.field, "message": exc.message}
    return {"field": getattr(exc, "field", None), "message": str(exc)}
