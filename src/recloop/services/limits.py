"""Rate limits per user and action class, and per API key: which limiter counts, and when.

Classes: ``explicit`` and ``implicit`` (per user), ``key`` (per API key or
client address). Each class may have several limits (``60/minute;1000/day``);
a unit is admitted only if every limit of its class has room. The arithmetic
is ``limits``' sliding-window counter, batched (:mod:`recloop.core.ratelimit`
states the rules, including how a refused ask is admitted in part).

Counting is optimistic: each limit is hit in the configured order. When an
earlier limit admits an ask and a later one refuses it, the earlier one is
charged for the refused units too (e.g. a user at the daily limit is charged
minute quota for events that are refused anyway). Refused events are never
logged nor applied.

:class:`RateLimits` counts in process (a :class:`~recloop.ports.RateLimiter`
over arrays), or in a shared storage (Redis) when one is given. If the shared
storage fails, admission falls back to the in-process counters (each instance
then enforces the limits on its own share of the traffic), the failure is
logged once and health reports ``degraded``. Calls to the shared storage go
through a circuit breaker (:mod:`recloop.core.breaker`, named ``rate_limits``):
once it opens, admission counts in process at once, without trying the shared
storage, until the breaker lets a trial call through; the first call that
succeeds ends the fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from recloop.core.breaker import CircuitBreaker
from recloop.core.ratelimit import Admission
from recloop.ports import RateLimiter

__all__ = ["Admission", "RateLimits"]

log = logging.getLogger(__name__)


class RateLimits:
    """The local limiter, or the shared one with the local one as its fallback."""

    def __init__(
        self,
        local: RateLimiter,
        shared: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """``breaker`` guards the shared limiter (default: a ``rate_limits`` breaker
        with the default settings); it is unused without one."""
        self.local = local
        self._shared = shared
        self.breaker = breaker if breaker is not None else CircuitBreaker("rate_limits")
        self._failing = False  # the last call to the shared storage failed
        self.last_error: str | None = None

    async def close(self) -> None:
        """Close the shared storage's connections."""
        if self._shared is not None:
            await self._shared.close()

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
        return (await self.admit_many(action, [(identity, count)])).get(0, Admission(count))

    async def admit_many(
        self, action: str, asks: Sequence[tuple[str, int]]
    ) -> dict[int, Admission]:
        """:meth:`admit` for each ``(identity, count)``, in order; what was not admitted in
        full, by the ask's index (the common case, all admitted, builds nothing)."""
        if not asks:
            return {}  # no call: says nothing about the storage
        return (await self.admit_groups([(action, asks)]))[0] or {}

    async def admit_groups(
        self, groups: Sequence[tuple[str, Sequence[tuple[str, int]]]], gate: bool = False
    ) -> list[dict[int, Admission] | None]:
        """:meth:`admit_many` for each ``(action, asks)`` group, in order: a request's
        asks of every class in one call to the shared storage. With ``gate``, the later
        groups are decided only if the first is admitted in full (else they are None).

        If the shared storage fails, every group is counted in process (what it may
        have admitted before failing stays charged there too).
        """
        shared = self._shared
        if shared is not None and self.breaker.allow():
            try:
                decided = await shared.admit_groups(groups, gate)
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
                return decided
        return await self.local.admit_groups(groups, gate)

    async def forget(
        self, identity: str, actions: Sequence[str] = ("explicit", "implicit")
    ) -> None:
        """Delete ``identity``'s counters of ``actions`` (an erased user), here and in the
        shared storage (a failure there is logged: its keys expire with their windows)."""
        await self.local.forget(identity, actions)
        if self._shared is not None:
            try:
                await self._shared.forget(identity, actions)
            except Exception as exc:
                log.warning("rate-limit counters of an erased user not cleared: %s", exc)
