"""Retry policies for recloop's calls to its dependencies, and what may be retried.

A retry runs an operation again after a failure that may have come *after* the
dependency did the work (the connection dropped before the answer arrived). So
only an operation whose second run leaves the same effect as the first, an
*idempotent* one, may be retried blindly. Which are:

- **Reads** of the state store and the event log (:data:`READS`): ``get_users``
  (preferences), ``get_items`` (items, vectors), ``get_impression``,
  ``read_impression_feedback`` and ``read_user_events`` (an experiment's first
  exposure). They change nothing. They are retried on a
  :class:`~recloop.core.errors.TransientError` only (a dropped, refused or timed-out
  connection), a bounded number of times, so that a request answers within about a
  second either way: a blip costs a little latency instead of a 500, an outage
  gives a 503 quickly. A :class:`~recloop.core.errors.CircuitOpen` is not retried:
  the breaker already knows the dependency is down.
- **The processor's work** (:data:`FOREVER`, :class:`recloop.services.feedback.Processor`):
  loading user states and items (reads), writing a dead letter, and committing a
  round of state changes. Every event in a round is acknowledged (202) and must not
  be dropped, so these are retried until they succeed, with jittered exponential
  backoff capped at two seconds. The commit is idempotent in what matters most: a
  user's state is written only if its applied offsets do not go back (a second
  write of the same state changes nothing) and the watermark and partition
  positions are overwritten with the same values. Its additive parts (the
  optimizer's counts, the experiments' sums) are *added*, so each commit carries a
  commit id stored in the same transaction: a retry of a commit that went through
  but whose answer was lost finds its id and does nothing. A dead letter retried
  after such a loss is stored twice. An error that is not the dependency being
  unavailable (:func:`unavailable`) and repeats is the data failing, not the store:
  the event is dead-lettered (or, in a commit, the rows the store refuses are
  quarantined, :mod:`recloop.services.refusals`) and the stream moves on.

Not retried (the caller decides): appending to the event log (``POST /feedback``
answers 503 and the client sends again, with the same ``event_id``s if it gave
them; the log writer finds the events of an append whose outcome was unknown, see
:func:`recloop.services.feedback.event_log_writer`), and every write made for a
request: items, experiments, reports, impressions, erasures. Nor is anything that
goes to Redis: rate limits fall back to in-process counters and the shared cache to
the database (their circuit breakers, :mod:`recloop.core.breaker`).

Retries are counted per operation (:class:`RetryCounts`, exported as
``recloop_retries_total{operation}``) and each one is logged at WARNING with its
attempt number.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    stop_never,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from recloop.core.errors import TransientError, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class RetryCounts:
    """How many retries each operation needed since the process started."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def add(self, operation: str, n: int = 1) -> None:
        self._counts[operation] = self._counts.get(operation, 0) + n

    def get(self, operation: str) -> int:
        return self._counts.get(operation, 0)

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and after how long, to try again.

    The first retry follows the failure at once (a connection found dead in the
    pool is replaced by a fresh one); then the wait grows from ``initial_seconds``,
    doubling, to at most ``max_seconds``. Each wait is jittered within its last
    ``jitter_seconds``: tenacity's ``wait_exponential_jitter`` clamps to its maximum
    *after* adding the jitter, so every caller of a long outage would wait exactly the
    maximum, in step with the others; here even the capped waits are spread.

    Parameters
    ----------
    retries
        Retries after the first attempt; None: until it succeeds.
    deadline_seconds
        No retry is started that would begin later than this after the first
        retry (None: no deadline).
    """

    retries: int | None
    initial_seconds: float
    max_seconds: float
    jitter_seconds: float
    deadline_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.retries is not None and self.retries < 0:
            raise ValueError(f"RetryPolicy 'retries' must be >= 0, got {self.retries!r}")
        if not 0 <= self.jitter_seconds <= self.max_seconds:
            raise ValueError(
                f"RetryPolicy 'jitter_seconds' must be within 0..max_seconds, "
                f"got {self.jitter_seconds!r}"
            )

    def wait(self, retry_state: RetryCallState) -> float:
        """The pause before the next retry (tenacity's ``wait``)."""
        backoff = wait_exponential(
            multiplier=self.initial_seconds, max=self.max_seconds - self.jitter_seconds
        ) + wait_random(0, self.jitter_seconds)
        return float(backoff(retry_state))


READS = RetryPolicy(
    retries=2, initial_seconds=0.1, max_seconds=0.4, jitter_seconds=0.1, deadline_seconds=0.8
)
"""Idempotent reads on a request's path: 3 attempts (at once, then after 0.1-0.2 s),
never starting one later than 0.8 s after the first retry."""

FOREVER = RetryPolicy(retries=None, initial_seconds=0.05, max_seconds=2.0, jitter_seconds=0.25)
"""The processor's work, which must not be dropped: until it succeeds, at most ~2 s apart."""


def transient(exc: BaseException) -> bool:
    """Whether a retry may fix ``exc``: a :class:`~recloop.core.errors.TransientError`
    (not a :class:`~recloop.core.errors.CircuitOpen`, nor an error of the request's own)."""
    return isinstance(exc, TransientError)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says a dependency cannot serve now, so that the same call may
    succeed later: a :class:`~recloop.core.errors.Unavailable` (a dropped connection,
    an open breaker), a connection error or a timeout. Any other error is *deterministic*:
    the data itself fails (a value the database refuses, a constraint), and calling
    again with the same data fails again."""
    return isinstance(exc, Unavailable | ConnectionError | TimeoutError)


class Deterministic(Exception):
    """A call failed the same way ``attempts`` times for a reason no retry fixes (see
    :func:`unavailable`); the original error is its ``__cause__``."""


async def retry_unless_deterministic(
    operation: str,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    attempts: int = 3,
    counts: RetryCounts | None = None,
    on_error: Callable[[BaseException], None] | None = None,
) -> T:
    """``await fn(*args)``: retried forever while the dependency is unavailable (as
    :func:`retry_forever`), but raising :class:`Deterministic` once any other error
    has happened ``attempts`` times."""
    failures = 0
    while True:
        try:
            return await call(
                FOREVER, operation, fn, *args, retry_on=unavailable, counts=counts,
                on_error=on_error,
            )  # fmt: skip
        except Exception as exc:
            failures += 1
            _failed(operation, failures, exc, 0.0, counts, on_error)
            if failures >= attempts:
                raise Deterministic(f"{operation}: {type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(FOREVER.initial_seconds * failures)


def any_error(exc: BaseException) -> bool:
    """Every error (but not a cancellation)."""
    return isinstance(exc, Exception)


async def retry_read(
    operation: str,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    counts: RetryCounts | None = None,
    policy: RetryPolicy = READS,
) -> T:
    """``await fn(*args)``, an idempotent read, retried on a transient error (:data:`READS`)."""
    return await call(policy, operation, fn, *args, retry_on=transient, counts=counts)


async def retry_forever(
    operation: str,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    counts: RetryCounts | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    policy: RetryPolicy = FOREVER,
) -> T:
    """``await fn(*args)`` until it succeeds, retrying every error (:data:`FOREVER`).

    ``on_error`` sees each failure before its retry. A cancellation is not retried.
    """
    return await call(
        policy, operation, fn, *args, retry_on=any_error, counts=counts, on_error=on_error
    )


async def call(
    policy: RetryPolicy,
    operation: str,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    retry_on: Callable[[BaseException], bool],
    counts: RetryCounts | None = None,
    on_error: Callable[[BaseException], None] | None = None,
) -> T:
    """``await fn(*args)``, retried by ``policy`` while ``retry_on(error)`` holds.

    The first attempt runs without tenacity (it is the common case, and tenacity's
    machinery costs more than the call itself on the hot path); after it fails,
    tenacity makes the retries.
    The last error is raised once the policy gives up.
    """
    try:
        return await fn(*args)
    except Exception as exc:
        if not retry_on(exc) or policy.retries == 0:
            raise
        _failed(operation, 1, exc, 0.0, counts, on_error)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        sleep = state.upcoming_sleep
        if exc is not None:
            _failed(operation, state.attempt_number + 1, exc, sleep, counts, on_error)

    stop: stop_base = stop_never if policy.retries is None else stop_after_attempt(policy.retries)
    if policy.deadline_seconds is not None:
        stop = stop | stop_before_delay(policy.deadline_seconds)
    retrying = AsyncRetrying(
        stop=stop,
        wait=policy.wait,
        retry=retry_if_exception(retry_on),
        before_sleep=before_sleep,
        reraise=True,
    )
    return await retrying(fn, *args)


def _failed(
    operation: str,
    attempt: int,
    exc: BaseException,
    sleep: float,
    counts: RetryCounts | None,
    on_error: Callable[[BaseException], None] | None,
) -> None:
    if counts is not None:
        counts.add(operation)
    if on_error is not None:
        on_error(exc)
    log.warning(
        "%s failed (attempt %d), retrying in %.2fs: %s: %s",
        operation,
        attempt,
        sleep,
        type(exc).__name__,
        exc,
    )


__all__ = [
    "FOREVER",
    "READS",
    "Deterministic",
    "RetryCounts",
    "RetryPolicy",
    "any_error",
    "call",
    "retry_forever",
    "retry_read",
    "retry_unless_deterministic",
    "transient",
    "unavailable",
]
