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

Storage: in process (``memory://``), or shared by every API instance through
Redis (``async+redis://host:port``). If the shared storage fails, admission
falls back to the in-process counters (each instance then enforces the
limits on its own share of the traffic), the failure is logged once and health
reports ``degraded``. Calls to the shared storage go through a circuit breaker
(:mod:`recloop.core.breaker`, named ``rate_limits``): once it opens, admission
counts in process at once, without trying Redis, until the breaker lets a trial
call through; the first call that succeeds ends the fallback.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from limits import strategies as sync_strategies
from limits.aio import strategies as aio_strategies
from limits.storage import MemoryStorage, storage_from_string

from recloop.core.breaker import CircuitBreaker

log = logging.getLogger(__name__)


class _LazySweepMemoryStorage(MemoryStorage):
    """``limits``' in-process storage, sweeping expired keys every few seconds.

    Upstream schedules a sweep of *every* key 10 ms after each increment, on a
    timer thread; with a key per user that is O(users) work a hundred times a
    second, contending for the interpreter lock with the event loop (measured:
    it more than doubled the CPU per ingested event). Reads already drop an
    expired key when they meet it (``MemoryStorage.get``), so the sweep only
    reclaims the memory of idle keys and can run rarely.
    """

    sweep_seconds = 5.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # overrides upstream's private hook
        if not self.timer.is_alive():
            sweep = getattr(self, "_MemoryStorage__expire_events")  # noqa: B009 (private upstream)
            self.timer = threading.Timer(self.sweep_seconds, sweep)
            self.timer.daemon = True
            self.timer.start()


# ``Storage.__init_subclass__`` wraps these methods in an error translator on every
# subclass, so a subclass of MemoryStorage would translate twice per call (measured:
# ~15 % of a hit). Keep upstream's single wrapping.
for _name in ("incr", "get", "get_expiry", "check", "reset", "clear"):
    setattr(_LazySweepMemoryStorage, _name, MemoryStorage.__dict__[_name])


@dataclass(frozen=True, slots=True)
class Admission:
    """How many of the asked units were admitted; if not all, which limit stopped them."""

    admitted: int
    limit: str | None = None
    reset_at: float | None = None


async def _value(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


async def _hit(lim: Any, item: RateLimitItem, action: str, identity: str, cost: int) -> bool:
    """``lim.hit``, sync (in-process storage) or async (shared storage)."""
    hit = lim.hit(item, action, identity, cost=cost)
    return hit if hit.__class__ is bool else await hit


class RateLimits:
    """Sliding-window counters (``limits``' ``SlidingWindowCounterRateLimiter``)."""

    def __init__(
        self,
        classes: Mapping[str, str],
        storage: str = "memory://",
        key_prefix: str = "recloop",
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """``breaker`` guards the shared storage (default: a ``rate_limits`` breaker with
        the default settings); it is unused with ``memory://``."""
        self._classes: dict[str, Sequence[RateLimitItem]] = {
            name: parse_many(spec) for name, spec in classes.items()
        }
        self._local = sync_strategies.SlidingWindowCounterRateLimiter(_LazySweepMemoryStorage())
        self._shared: aio_strategies.SlidingWindowCounterRateLimiter | None = None
        self._backend: Any = None
        if storage != "memory://":
            self._backend = storage_from_string(
                storage, implementation="redispy", key_prefix=key_prefix, wrap_exceptions=True
            )
            self._shared = aio_strategies.SlidingWindowCounterRateLimiter(self._backend)
        self.breaker = breaker if breaker is not None else CircuitBreaker("rate_limits")
        self._failing = False  # the last call to the shared storage failed
        self.last_error: str | None = None

    async def close(self) -> None:
        """Close the shared storage's connections."""
        # limits has no public close; its redis-py bridge holds the client.
        client = getattr(getattr(self._backend, "bridge", None), "storage", None)
        if client is not None:
            await client.aclose()

    @property
    def shared(self) -> bool:
        """Whether the counters live in a shared storage (Redis)."""
        return self._shared is not None

    @property
    def degraded(self) -> bool:
        """Whether the in-process fallback is counting: the shared storage's last call
        failed, or its breaker is not closed."""
        return self._shared is not None and (self._failing or self.breaker.state != "closed")

    async def admit(self, action: str, identity: str, count: int) -> Admission:
        """Admit up to ``count`` units of ``action`` for ``identity``; count what is admitted."""
        shared = self._shared
        if shared is not None and self.breaker.allow():
            try:
                admission = await self._admit(shared, action, identity, count)
            except Exception as exc:  # the storage is down: keep serving, counted locally
                self.breaker.failure()
                self.last_error = f"{type(exc).__name__}: {exc}"
                if not self._failing:
                    self._failing = True
                    log.warning("rate-limit storage failed, counting in process: %s", exc)
            except BaseException:  # cancelled: no verdict
                self.breaker.release()
                raise
            else:
                self.breaker.success()
                if self._failing:
                    self._failing = False
                    log.info("rate-limit storage is back")
                return admission
        return await self._admit(self._local, action, identity, count)

    async def forget(
        self, identity: str, actions: Sequence[str] = ("explicit", "implicit")
    ) -> None:
        """Delete ``identity``'s counters of ``actions`` (an erased user), here and in the
        shared storage (a failure there is logged: its keys expire with their windows)."""
        for action in actions:
            for item in self._classes.get(action, ()):
                self._local.clear(item, action, identity)
                if self._shared is not None:
                    try:
                        await self._shared.clear(item, action, identity)
                    except Exception as exc:
                        log.warning("rate-limit counters of an erased user not cleared: %s", exc)

    async def _admit(self, lim: Any, action: str, identity: str, count: int) -> Admission:
        items = self._classes[action]
        charged = 0
        for item in items:
            if not await _hit(lim, item, action, identity, count):
                break
            charged += 1
        else:
            return Admission(count)
        # Refused at items[charged]: admit what every limit still has room for.
        stats = [(await _value(lim.get_window_stats(i, action, identity)), i) for i in items]
        window, tightest = min(stats[charged:], key=lambda s: s[0].remaining)
        allowed = max(0, min(window.remaining, count))
        if allowed:
            for item in items[charged:]:
                await _hit(lim, item, action, identity, allowed)
        return Admission(allowed, str(tightest), window.reset_time)
