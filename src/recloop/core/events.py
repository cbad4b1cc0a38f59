"""Feedback events: the types, which are explicit, and the signal each carries.

A *signal* is the signed amount one event moves a preference vector by,
before the learning rate's base and reliability are applied:
``signal = strength(type, value) * multiplier(type)``. Its sign is the
direction of the update, its magnitude scales the learning rate
(``core.preferences.learning_rate``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from recloop.core.errors import InvalidInput

EXPLICIT_TYPES: Final = frozenset({"rating", "like", "dislike", "share", "save", "review"})
IMPLICIT_TYPES: Final = frozenset(
    {"impression", "view", "click", "dwell", "skip", "add_to_cart", "purchase"}
)
FEEDBACK_TYPES: Final = EXPLICIT_TYPES | IMPLICIT_TYPES

VALUELESS_TYPES: Final = frozenset(
    {"like", "dislike", "share", "save", "review", "skip", "impression"}
)
"""Types whose signal is fixed: a ``value`` with one is refused rather than ignored. ``rating``
and ``dwell`` need one; ``view``, ``click``, ``add_to_cart`` and ``purchase`` may carry one
(an amount, summed by ``aggregate: sum`` experiment metrics)."""

RATING_MIN: Final = 1.0
RATING_MAX: Final = 5.0

UNIX_SECONDS_LIMIT: Final = 2e10
"""A timestamp sent as a number is Unix seconds within ± this (years 1336 to 2603); a larger
magnitude (milliseconds, say) is refused rather than guessed at."""


def is_explicit(event_type: str) -> bool:
    """Whether ``event_type`` is applied at once (explicit) rather than aggregated.

    >>> is_explicit("like"), is_explicit("click")
    (True, False)
    """
    return event_type in EXPLICIT_TYPES


@dataclass(frozen=True, slots=True)
class TypeWeight:
    """How strongly, and in which direction, one feedback type moves a vector."""

    strength: float
    multiplier: float


@dataclass(frozen=True, slots=True)
class SignalTable:
    """Per-type weights plus the two value-dependent rules (rating, dwell)."""

    weights: Mapping[str, TypeWeight]
    dwell_full_seconds: float = 300.0
    _table: list[Any] = field(default_factory=list, init=False, repr=False, compare=False)

    def _columns(
        self,
    ) -> tuple[
        dict[str, int], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int8]
    ]:
        """The weights as columns behind a code per type (code 0: no weight, NaN)."""
        if not self._table:
            names = {t: i for i, t in enumerate(self.weights, start=1)}
            w = list(self.weights.values())
            nan = [math.nan]
            self._table.extend(
                (
                    names,
                    np.array(nan + [x.strength for x in w]),
                    np.array(nan + [x.multiplier for x in w]),
                    np.array([0] + [_VALUE_KIND.get(t, 0) for t in names], dtype=np.int8),
                )
            )
        names, strengths, multipliers, kinds = self._table
        return names, strengths, multipliers, kinds

    def signal(self, event_type: str, value: float | None) -> float:
        """The signed signal of one event.

        A rating ``r`` has strength ``(r - 3) / 2`` (1 → -1, 3 → 0, 5 → +1);
        dwell of ``s`` seconds has strength ``log1p(s) / log1p(dwell_full_seconds)``
        capped at 1; both are scaled by the type's configured strength.

        >>> t = SignalTable({"rating": TypeWeight(1.0, 1.0), "dwell": TypeWeight(1.0, 0.5)})
        >>> t.signal("rating", 5), t.signal("rating", 2), t.signal("dwell", 300.0)
        (1.0, -0.5, 0.5)
        """
        w = self.weights[event_type]
        if event_type == "rating":
            if value is None:
                raise ValueError("a rating needs a value")
            return w.strength * (value - 3.0) / 2.0 * w.multiplier
        if event_type == "dwell":
            if value is None:
                raise ValueError("dwell needs a value")
            grown = math.log1p(max(value, 0.0)) / math.log1p(self.dwell_full_seconds)
            return w.strength * min(grown, 1.0) * w.multiplier
        return w.strength * w.multiplier

    def signals(
        self, types: Sequence[str], values: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """:meth:`signal` of many events at once (``values`` NaN where an event has none),
        to the last bit; NaN where :meth:`signal` would raise (a rating or dwell without
        a value, a type without a weight).

        >>> t = SignalTable({"rating": TypeWeight(1.0, 1.0), "dwell": TypeWeight(1.0, 0.5),
        ...                  "like": TypeWeight(1.0, 2.0)})
        >>> t.signals(["rating", "dwell", "like", "rating"],
        ...           np.array([5.0, 300.0, np.nan, np.nan])).tolist()
        [1.0, 0.5, 2.0, nan]
        """
        names, strengths, multipliers, kinds_of = self._columns()
        code = names.get
        codes = np.fromiter((code(t, 0) for t in types), np.int64, len(types))
        strength, multiplier, kinds = strengths[codes], multipliers[codes], kinds_of[codes]
        out: npt.NDArray[np.float64] = strength * multiplier
        rating = kinds == 1
        if rating.any():
            v = values[rating]
            out[rating] = strength[rating] * (v - 3.0) / 2.0 * multiplier[rating]
        dwell = kinds == 2
        if dwell.any():
            v = values[dwell]
            # math.log1p, not numpy's: numpy's vectorised log1p differs from the C library's
            # in the last bit on some CPUs, and a dwell must weigh what :meth:`signal` says.
            logs = [math.log1p(x) for x in np.maximum(v, 0.0).tolist()]
            grown = np.array(logs, np.float64) / math.log1p(self.dwell_full_seconds)
            out[dwell] = strength[dwell] * np.minimum(grown, 1.0) * multiplier[dwell]
            out[dwell & np.isnan(values)] = math.nan
        return out


_VALUE_KIND: Final = {"rating": 1, "dwell": 2}
"""Types whose signal depends on the value: 1 rating, 2 dwell."""


class Event(msgspec.Struct, gc=False):
    """One accepted feedback event, as the processors see it.

    ``offset`` is its position in the event log: ``-1`` until the log assigns
    it, once, when the event is logged (the only field ever set after
    construction; copying 10^5 events per second to set it would cost more
    than the rest of ingestion). ``timestamp`` is when the user acted, in
    seconds since the epoch.

    A msgspec ``Struct`` rather than a dataclass: every accepted event is built
    once on the ingest path (and again by a worker from its log), and a Struct
    is built in C (docs/benchmarks.md, "Session 12: events as Structs"). ``gc=False``:
    an event refers to no event, so it is never part of a reference cycle and the
    collector need not track it (its ``context`` and ``attribution`` mappings are
    tracked on their own). Copy one with :func:`msgspec.structs.replace`.
    """

    event_id: str
    user_id: str
    item_id: str
    type: str
    timestamp: float
    value: float | None = None
    text: str | None = None
    context: Mapping[str, Any] = msgspec.field(default_factory=dict)
    attribution: Mapping[str, Any] = msgspec.field(default_factory=dict)
    offset: int = -1
    partition: int = 0
    """The log partition ``offset`` counts in: always 0 in the embedded log; in the
    distributed one, the Kafka partition (set by the worker, like ``offset``)."""
    request_id: str | None = None
    """The correlation id of the request that brought the event (``X-Request-ID``): it
    travels with the event into the log and the worker, for their log lines about it."""

    def to_record(self) -> dict[str, Any]:
        """The event as a JSON-ready mapping (without its offset)."""
        record: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "type": self.type,
            "timestamp": self.timestamp,
        }
        if self.value is not None:
            record["value"] = self.value
        if self.text is not None:
            record["text"] = self.text
        if self.context:
            record["context"] = dict(self.context)
        if self.attribution:
            record["attribution"] = dict(self.attribution)
        if self.request_id is not None:
            record["request_id"] = self.request_id
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any], offset: int) -> Event:
        """Rebuild an event read back from the log."""
        return cls(
            event_id=record["event_id"],
            user_id=record["user_id"],
            item_id=record["item_id"],
            type=record["type"],
            timestamp=float(record["timestamp"]),
            value=record.get("value"),
            text=record.get("text"),
            context=record.get("context") or {},
            attribution=record.get("attribution") or {},
            offset=offset,
            request_id=record.get("request_id"),
        )


class Fields:
    """An :class:`Event`'s fields as getters, for ``map`` over a batch's events (a loop in
    C, where a generator expression runs a Python frame per event)."""

    user_id: Final = attrgetter("user_id")
    item_id: Final = attrgetter("item_id")
    type: Final = attrgetter("type")
    value: Final = attrgetter("value")
    timestamp: Final = attrgetter("timestamp")
    text: Final = attrgetter("text")
    offset: Final = attrgetter("offset")
    partition: Final = attrgetter("partition")


def check_event(
    event_type: str, value: float | None, timestamp: float, now: float, max_future_seconds: float
) -> None:
    """Refuse what the types alone cannot: values per type and future timestamps.

    Raises
    ------
    InvalidInput
        naming the field, e.g. ``value`` for a rating of 7.

    >>> check_event("rating", 4.0, 0.0, 0.0, 300.0)
    >>> check_event("rating", 7.0, 0.0, 0.0, 300.0)
    Traceback (most recent call last):
    ...
    recloop.core.errors.InvalidInput: value: a rating must be between 1 and 5, got 7.0
    >>> check_event("like", -50.0, 0.0, 0.0, 300.0)
    Traceback (most recent call last):
    ...
    recloop.core.errors.InvalidInput: value: a like takes no value, got -50.0
    """
    if event_type == "rating":
        if value is None:
            raise InvalidInput("value", "a rating needs a value between 1 and 5")
        if not RATING_MIN <= value <= RATING_MAX:
            raise InvalidInput("value", f"a rating must be between 1 and 5, got {value}")
    elif event_type == "dwell":
        if value is None:
            raise InvalidInput("value", "dwell needs a value in seconds (>= 0)")
        if value < 0:
            raise InvalidInput("value", f"dwell seconds must be >= 0, got {value}")
    elif value is not None and event_type in VALUELESS_TYPES:
        raise InvalidInput("value", f"a {event_type} takes no value, got {value}")
    if value is not None and not math.isfinite(value):
        raise InvalidInput("value", "must be a finite number")
    if timestamp > now + max_future_seconds:
        raise InvalidInput(
            "timestamp",
            f"is {timestamp - now:.0f} s in the future; at most {max_future_seconds:.0f} s allowed",
        )
