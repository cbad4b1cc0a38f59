"""A circuit breaker: stop calling a dependency that keeps failing, try it again later.

::

               failure_threshold failures within window_seconds
    closed ──────────────────────────────────────────────────▶ open ◀─────────┐
      ▲                                                          │            │
      │ the trial succeeds                   open_seconds passed │            │ the trial fails:
      │                                                          ▼            │ open again, for
      └────────────────────────────────────────────────────── half_open ──────┘ twice as long
                                                        one trial call at a time  (up to
                                                                                 max_open_seconds)

The breaker makes no calls itself. Before each call the caller asks
:meth:`CircuitBreaker.allow`; after it, it reports :meth:`~CircuitBreaker.success`
(the dependency answered, even with an error of its own, such as a constraint
violation) or :meth:`~CircuitBreaker.failure` (it did not answer: a refused or
dropped connection, a timeout), or :meth:`~CircuitBreaker.release` if the call
ended with neither (cancelled). A success clears the failures counted so far, so
the threshold counts failures with no success between them.

A trial that never reports back (its caller hung, or forgot) is presumed lost
after the current open duration, and the next caller gets a new trial. Time
comes from ``clock`` (seconds; default :func:`time.time`, so that
``opened_at`` is a wall-clock time): a clock that goes back counts as the open
duration having passed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from recloop.core.errors import ConfigError

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """What a breaker reports to health checks and metrics."""

    name: str
    state: State
    failures: int
    """Closed: failures within the window. Open or half-open: failures since the last
    success (those that opened it included)."""
    opened_at: float | None
    """When it last opened (``clock`` time); None while closed."""

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state, "failures": self.failures, "opened_at": self.opened_at}


class CircuitBreaker:
    """Closed, open or half-open; see the module docstring.

    Parameters
    ----------
    name
        The dependency, as health checks and metrics name it (``storage``).
    failure_threshold
        Failures within ``window_seconds`` (with no success between) that open it.
    window_seconds
        How far back failures count.
    open_seconds
        How long it stays open before letting one trial call through.
    max_open_seconds
        Each failed trial doubles the open duration, up to this (default:
        ``open_seconds``, no doubling). Closing resets it.
    clock
        Seconds; injectable for tests.

    Examples
    --------
    >>> now = [0.0]
    >>> b = CircuitBreaker("storage", failure_threshold=2, open_seconds=5.0, clock=lambda: now[0])
    >>> b.allow(), b.state
    (True, 'closed')
    >>> b.failure(); b.failure(); b.state
    'open'
    >>> b.allow(), b.retry_after()
    (False, 5.0)
    >>> now[0] = 5.0
    >>> b.state, b.allow(), b.allow()  # one trial at a time
    ('half_open', True, False)
    >>> b.success(); b.state, b.failures
    ('closed', 0)
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        window_seconds: float = 10.0,
        open_seconds: float = 5.0,
        max_open_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigError(
                f"breaker {name!r}: failure_threshold must be >= 1, got {failure_threshold!r}"
            )
        for field, value in (("window_seconds", window_seconds), ("open_seconds", open_seconds)):
            if not value > 0:
                raise ConfigError(f"breaker {name!r}: {field} must be > 0, got {value!r}")
        if max_open_seconds is None:
            max_open_seconds = open_seconds
        if max_open_seconds < open_seconds:
            raise ConfigError(
                f"breaker {name!r}: max_open_seconds must be >= open_seconds "
                f"({open_seconds!r}), got {max_open_seconds!r}"
            )
        self.name = name
        self.failure_threshold = failure_threshold
        self.window_seconds = window_seconds
        self.open_seconds = open_seconds
        self.max_open_seconds = max_open_seconds
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._open_for = open_seconds  # the current open duration
        self._trial_at: float | None = None  # when the half-open trial was let through

    # -- state -------------------------------------------------------------------

    @property
    def state(self) -> State:
        opened_at = self._opened_at
        if opened_at is None:
            return "closed"
        return "half_open" if self._elapsed(opened_at) else "open"

    @property
    def failures(self) -> int:
        if self._opened_at is None:
            self._forget_old(self._clock())
        return len(self._failures)

    @property
    def opened_at(self) -> float | None:
        return self._opened_at

    def retry_after(self) -> float:
        """Seconds until a call would be let through (0 when one would be now)."""
        opened_at = self._opened_at
        if opened_at is None:
            return 0.0
        now = self._clock()
        trial_at = self._trial_at
        if self._elapsed(opened_at) and (trial_at is None or self._elapsed(trial_at)):
            return 0.0
        start = opened_at if trial_at is None else max(opened_at, trial_at)
        return max(0.0, start + self._open_for - now)

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot(self.name, self.state, self.failures, self._opened_at)

    # -- calls -----------------------------------------------------------------------

    def allow(self) -> bool:
        """Whether to make the call now. Closed: yes. Open: no. Half-open: yes for one
        caller (the trial), until it reports back or is presumed lost."""
        opened_at = self._opened_at
        if opened_at is None:
            return True
        if not self._elapsed(opened_at):
            return False
        trial_at = self._trial_at
        if trial_at is not None and not self._elapsed(trial_at):
            return False
        self._trial_at = self._clock()
        return True

    def success(self) -> None:
        """The dependency answered: half-open closes; failures are forgotten."""
        opened_at = self._opened_at
        if opened_at is None:
            if self._failures:
                self._failures.clear()
            return
        if not self._elapsed(opened_at):
            return  # a call let through before it opened: the trial decides
        self._opened_at = None
        self._trial_at = None
        self._open_for = self.open_seconds
        self._failures.clear()

    def failure(self) -> None:
        """The dependency did not answer: count it; open at the threshold (at once when
        half-open, for twice as long as last time)."""
        now = self._clock()
        opened_at = self._opened_at
        if opened_at is not None:
            self._failures.append(now)
            if self._elapsed(opened_at):  # the trial failed
                self._open_for = min(2 * self._open_for, self.max_open_seconds)
                self._opened_at, self._trial_at = now, None
            return
        self._forget_old(now)
        self._failures.append(now)
        if len(self._failures) >= self.failure_threshold:
            self._opened_at, self._trial_at = now, None

    def release(self) -> None:
        """A call let through ended without a verdict (cancelled): free the trial."""
        self._trial_at = None

    # -- internals ---------------------------------------------------------------------

    def _elapsed(self, since: float) -> bool:
        """Whether the current open duration has passed since ``since`` (a clock that
        went back counts as passed)."""
        now = self._clock()
        return now >= since + self._open_for or now < since

    def _forget_old(self, now: float) -> None:
        failures, horizon = self._failures, now - self.window_seconds
        while failures and failures[0] <= horizon:
            failures.popleft()


__all__ = ["BreakerSnapshot", "CircuitBreaker", "State"]
