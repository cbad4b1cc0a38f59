"""How late the event loop runs what is due: ``recloop_event_loop_lag_seconds``.

Everything a recloop process serves runs on one event loop (the SQLite and Kafka calls
in threads): a callback that holds it (a large request's work, a judgement round, a
collector's pass) delays every request ready meanwhile. Request latencies show that only
mixed with each request's own work; this histogram shows it alone. A probe task sleeps
:data:`PROBE_SECONDS` at a time and observes how much later than due it woke (the
timers' own granularity is a millisecond): on an idle or lightly loaded loop it stays
in the lowest bucket; a callback that held the loop for 40 ms shows as one observation
of up to 40 ms, and a loop saturated with work shows as a shift of the whole histogram.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram

PROBE_SECONDS = 0.1
"""How often the probe wakes: ten wakes a second cost nothing measurable, and a stall
longer than this is observed whole."""

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds late; the lowest is the timers' granularity."""


def lag_histogram(registry: CollectorRegistry) -> Histogram:
    """``recloop_event_loop_lag_seconds``, in ``registry``."""
    return Histogram(
        "recloop_event_loop_lag_seconds",
        f"How late the event loop ran a timer due every {PROBE_SECONDS} s: what a "
        "request ready at that moment waited for the loop.",
        buckets=LAG_BUCKETS,
        registry=registry,
    )


class LoopLag:
    """The probe task: :meth:`start` it on the loop to watch, :meth:`stop` it before the
    loop closes."""

    def __init__(
        self,
        histogram: Histogram,
        every: float = PROBE_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._histogram = histogram
        self._every = every
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Sleep, and observe how late the wake came, forever."""
        every, clock, observe = self._every, self._clock, self._histogram.observe
        while True:
            due = clock() + every
            await asyncio.sleep(every)
            observe(max(0.0, clock() - due))
