"""Turning validated request events into logged events."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Final, Protocol, cast

import msgspec

from recloop.core.algorithms import check_algorithm
from recloop.core.errors import InvalidInput
from recloop.core.events import EXPLICIT_TYPES, Event, check_event
from recloop.core.ids import uuid7
from recloop.services.batching import GroupCommit
from recloop.services.guard import GuardService
from recloop.services.limits import Admission, RateLimits

REQUEST_ID: ContextVar[str | None] = ContextVar("recloop_request_id", default=None)
"""The id of the HTTP request being served, set by the HTTP middleware (which also binds
it in ``structlog.contextvars`` for the logs): each event logged keeps it."""


class EventOutcome(msgspec.Struct, frozen=True, gc=False):
    """What became of one event of a request. A Struct, built in C: a batch builds one
    per event (a frozen dataclass's ``__init__`` cost ten times as much)."""

    event_id: str | None
    status: str  # accepted | duplicate | rejected | rate_limited | blocked
    error: dict[str, Any] | None = None
    limit: str | None = None
    reset_at: float | None = None


_ACCEPTED: Final = "accepted"
_DUPLICATE: Final = "duplicate"


class EventFields(Protocol):
    """One event as decoded from a request, schema-valid (``api.wire.FeedbackWire``).

    ``timestamp`` is an aware datetime, Unix seconds, or None for "now".
    """

    @property
    def event_id(self) -> str | None: ...
    @property
    def user_id(self) -> str: ...
    @property
    def item_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime | float | None: ...
    @property
    def context(self) -> Mapping[str, Any] | None: ...
    def attribution_record(self) -> Mapping[str, Any]:
        """The attribution's given fields; empty without one."""
        ...


class IngestService:
    """Checks each event's domain rules, logs the good ones durably, reports per event."""

    def __init__(
        self,
        committer: GroupCommit[Event, int | None],
        max_future_seconds: float,
        clock: Callable[[], float] = time.time,
        limits: RateLimits | None = None,
        guard: GuardService | None = None,
        user_key: Callable[[str], str] | None = None,
        algorithms: Collection[str] | None = None,
    ) -> None:
        """``guard`` refuses the events of blocked users here; the evidence it gathers
        comes from the processor (embedded) or the workers (distributed), after the 202.
        ``user_key`` maps each raw user id to the id stored (pseudonymization).
        ``algorithms``: the configured ones, which ``attribution.algorithm`` must name
        (``core.algorithms``); None takes any."""
        self._algorithms = algorithms
        self._user_key = user_key
        self._limits = limits
        self._guard = guard
        self._committer = committer
        self._max_future = max_future_seconds
        self._clock = clock

    @property
    def limits(self) -> RateLimits | None:
        return self._limits

    def build(self, fields: EventFields, now: float, request_id: str | None = None) -> Event:
        """An :class:`Event` from schema-valid fields; raises InvalidInput on a domain rule."""
        timestamp = fields.timestamp
        if timestamp is None:
            ts = now
        elif isinstance(timestamp, datetime):
            ts = timestamp.timestamp()
        else:
            ts = float(timestamp)
        value = fields.value
        check_event(fields.type, value, ts, now, self._max_future)
        user_id = fields.user_id
        attribution = fields.attribution_record()
        if attribution and self._algorithms is not None:
            check_algorithm("attribution.algorithm", attribution.get("algorithm"), self._algorithms)
            for name in attribution.get("credit_weights") or ():
                check_algorithm("attribution.credit_weights", name, self._algorithms)
        return Event(
            event_id=fields.event_id or uuid7(),
            user_id=user_id if self._user_key is None else self._user_key(user_id),
            item_id=fields.item_id,
            type=fields.type,
            timestamp=ts,
            value=value,
            text=fields.text,
            context=fields.context or {},
            attribution=attribution,
            request_id=request_id,
        )

    async def submit(
        self,
        candidates: Sequence[EventFields | Exception],
        principal: str = "anonymous",
    ) -> list[EventOutcome]:
        """Log every valid, admitted candidate; report each one's outcome, in order.

        ``candidates`` holds schema-valid events, or the error that
        already rejected an event at the schema level. ``principal`` names the
        API key (or client) for its rate limit.
        """
        if len(candidates) == 1:
            return [await self.submit_one(candidates[0], principal)]
        return await self._submit_batch(candidates, principal)

    async def submit_one(
        self, candidate: EventFields | Exception, principal: str = "anonymous"
    ) -> EventOutcome:
        """:meth:`submit` of a one-event request, its outcome (:meth:`_submit_batch` of
        one, without its lists and passes over the candidates)."""
        if isinstance(candidate, Exception):
            return EventOutcome(None, "rejected", _error(candidate))
        try:
            event = self.build(candidate, self._clock(), REQUEST_ID.get())
        except InvalidInput as exc:
            return EventOutcome(candidate.event_id, "rejected", _error(exc))
        if self._guard is not None and (reason := self._guard.blocked(event.user_id)) is not None:
            return _blocked(event, reason)  # :meth:`_screen` of one
        if self._limits is not None:
            outcomes: list[EventOutcome | None] = [None]
            if not await self._admit([(0, event)], outcomes, principal):
                return cast(EventOutcome, outcomes[0])  # refused: set
        (offset,) = await self._committer.submit([event])
        return EventOutcome(event.event_id, _ACCEPTED if offset is not None else _DUPLICATE)

    async def _submit_batch(
        self, candidates: Sequence[EventFields | Exception], principal: str
    ) -> list[EventOutcome]:
        """:meth:`submit`, candidate by candidate."""
        now = self._clock()
        request_id = REQUEST_ID.get()
        outcomes: list[EventOutcome | None] = [None] * len(candidates)
        indices: list[int] = []
        events: list[Event] = []
        build = self.build
        for i, candidate in enumerate(candidates):
            if isinstance(candidate, Exception):
                outcomes[i] = EventOutcome(None, "rejected", _error(candidate))
                continue
            try:
                events.append(build(candidate, now, request_id))
            except InvalidInput as exc:
                outcomes[i] = EventOutcome(candidate.event_id, "rejected", _error(exc))
                continue
            indices.append(i)
        pending = list(zip(indices, events, strict=True))
        if self._guard is not None and pending:
            pending = self._screen(pending, outcomes)
        if self._limits is not None and pending:
            pending = await self._admit(pending, outcomes, principal)
        if len(pending) != len(events):
            events = [event for _, event in pending]
        offsets = await self._committer.submit(events) if events else []
        for (i, event), offset in zip(pending, offsets, strict=True):
            outcomes[i] = EventOutcome(
                event.event_id, _ACCEPTED if offset is not None else _DUPLICATE
            )
        return cast(list[EventOutcome], outcomes)  # every one is set by now

    def _screen(
        self, pending: list[tuple[int, Event]], outcomes: list[EventOutcome | None]
    ) -> list[tuple[int, Event]]:
        """Refuse the events of blocked users."""
        assert self._guard is not None
        blocked = self._guard.blocked_among(event.user_id for _, event in pending)
        if not blocked:
            return pending
        kept = []
        for i, event in pending:
            if event.user_id not in blocked:
                kept.append((i, event))
                continue
            outcomes[i] = _blocked(event, self._guard.blocked(event.user_id))
        return kept

    async def _admit(
        self,
        pending: list[tuple[int, Event]],
        outcomes: list[EventOutcome | None],
        principal: str,
    ) -> list[tuple[int, Event]]:
        """Keep the events within their limits: the API key's first, then each user's.

        Within one user and class, the earliest events in the request pass. All the
        limits are asked in one call; if the API key's limit refuses some events, the
        users' limits are asked again for the events it kept.
        """
        assert self._limits is not None
        asks = _asks(pending)
        key, *shorts = await self._limits.admit_groups(
            [("key", [(principal, len(pending))]), *asks], gate=True
        )
        if key:  # not all admitted: the users' limits were not asked
            admission = key[0]
            for i, event in pending[admission.admitted :]:
                outcomes[i] = _limited(event, admission, f"API key {principal!r}")
            pending = pending[: admission.admitted]
            asks = _asks(pending)
            shorts = [await self._limits.admit_many(action, users) for action, users in asks]
        refused: set[int] = set()
        for (action, users), short in zip(asks, shorts, strict=True):
            if not short:
                continue
            members = _members(pending, action == "explicit")
            for n, cut in short.items():
                user_id = users[n][0]
                for i, event in members[user_id][cut.admitted :]:
                    outcomes[i] = _limited(event, cut, f"{action} events of user {user_id!r}")
                    refused.add(i)
        if not refused:
            return pending
        return [entry for entry in pending if entry[0] not in refused]


def _asks(pending: list[tuple[int, Event]]) -> list[tuple[str, list[tuple[str, int]]]]:
    """Each class's asks (explicit, implicit): (user, how many events), users in the order
    of their first event (:func:`_asks_of_batch`; a one-event request's without its
    passes over a batch)."""
    if len(pending) != 1:
        return _asks_of_batch(pending)
    event = pending[0][1]
    ask = [(event.user_id, 1)]
    if event.type in EXPLICIT_TYPES:
        return [("explicit", ask), ("implicit", [])]
    return [("explicit", []), ("implicit", ask)]


def _asks_of_batch(pending: list[tuple[int, Event]]) -> list[tuple[str, list[tuple[str, int]]]]:
    """:func:`_asks`, counted in C: no list per user unless a limit refuses."""
    explicit = [e.user_id for _, e in pending if e.type in EXPLICIT_TYPES]
    implicit = (
        [e.user_id for _, e in pending if e.type not in EXPLICIT_TYPES]
        if len(explicit) < len(pending)
        else []
    )
    return [("explicit", _counted(explicit)), ("implicit", _counted(implicit))]


def _counted(users: list[str]) -> list[tuple[str, int]]:
    """Each user's number of occurrences, in order of their first (a single one without
    the ``Counter``, which costs a microsecond to set up)."""
    return list(Counter(users).items()) if len(users) > 1 else [(u, 1) for u in users]


def _members(
    pending: list[tuple[int, Event]], explicit: bool
) -> dict[str, list[tuple[int, Event]]]:
    """The events of one class (explicit or implicit), by user, in order."""
    users: dict[str, list[tuple[int, Event]]] = {}
    for entry in pending:
        event = entry[1]
        if (event.type in EXPLICIT_TYPES) == explicit:
            users.setdefault(event.user_id, []).append(entry)
    return users


def _blocked(event: Event, reason: str | None) -> EventOutcome:
    message = f"user {event.user_id!r} is blocked: {reason}"
    return EventOutcome(event.event_id, "blocked", {"field": "user_id", "message": message})


def _limited(event: Event, admission: Admission, whom: str) -> EventOutcome:
    message = f"rate limit {admission.limit} for {whom} exceeded"
    return EventOutcome(
        event.event_id,
        "rate_limited",
        {"field": None, "message": message},
        admission.limit,
        admission.reset_at,
    )


def _error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, InvalidInput):
        return {"field": exc.field, "message": exc.message}
    return {"field": getattr(exc, "field", None), "message": str(exc)}
