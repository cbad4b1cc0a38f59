"""Rate limits per user and action class, and per API key, with the ``limits`` library.

Classes: ``explicit`` and ``implicit`` (per user), ``key`` (per API key or
client address). Each class may have several limits (``60/minute;1000/day``);
a unit is admitted only if every limit of its class has room, and only
admitted units are counted, so a refused event consumes nothing.
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
        if all(lim.test(item, action, identity, cost=count) for item in items):
            for item in items:
                lim.hit(item, action, identity, cost=count)
            return Admission(count)
        stats = [(lim.get_window_stats(item, action, identity), item) for item in items]
        window, tightest = min(stats, key=lambda s: s[0].remaining)
        allowed = max(0, min(window.remaining, count))
        if allowed:
            for item in items:
                lim.hit(item, action, identity, cost=allowed)
        return Admission(allowed, str(tightest), window.reset_time)
