"""Rate limits per user and action class, and per API key, with the ``limits`` library.

Classes: ``explicit`` and ``implicit`` (per user), ``key`` (per API key or
client address). Each class may have several limits (``60/minute;1000/day``);
a unit is admitted only if every limit of its class has room.

Counting is optimistic: each limit is hit in the configured order and the
common case costs one call per limit. ``limits`` has no atomic hit of several
limits, so when an earlier limit admits a request and a later one refuses it,
the earlier one is charged for the refused units too (e.g. a user at the
daily limit is charged minute quota for events that are refused anyway).
Refused events are never logged nor applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter


@dataclass(frozen=True, slots=True)
class Admission:
    """How many of the asked units were admitted; if not all, which limit stopped them."""

    admitted: int
    limit: str | None = None
    reset_at: float | None = None


class RateLimits:
    """Sliding-window counters (``limits.SlidingWindowCounterRateLimiter``), in process.

    The in-process storage answers synchronously in a few microseconds, so
    admission runs inline on the event loop.
    """

    def __init__(self, classes: Mapping[str, str]) -> None:
        self._classes: dict[str, Sequence[RateLimitItem]] = {
            name: parse_many(spec) for name, spec in classes.items()
        }
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    def admit(self, action: str, identity: str, count: int) -> Admission:
        """Admit up to ``count`` units of ``action`` for ``identity``; count what is admitted."""
        items = self._classes[action]
        lim = self._limiter
        charged = 0
        for item in items:
            if not lim.hit(item, action, identity, cost=count):
                break
            charged += 1
        else:
            return Admission(count)
        # Refused at items[charged]: admit what every limit still has room for.
        stats = [(lim.get_window_stats(item, action, identity), item) for item in items]
        window, tightest = min(stats[charged:], key=lambda s: s[0].remaining)
        allowed = max(0, min(window.remaining, count))
        if allowed:
            for item in items[charged:]:
                lim.hit(item, action, identity, cost=allowed)
        return Admission(allowed, str(tightest), window.reset_time)
