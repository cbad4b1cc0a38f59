"""The event loop's lag probe (``recloop.metrics.loop``): what it observes, and its task."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from recloop.metrics.loop import LoopLag, lag_histogram
from tests.prometheus import samples, value


def _lag(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = value(
        samples(_exposition(registry)), f"recloop_event_loop_lag_seconds_{name}", **labels
    )
    assert found is not None
    return found


def _exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


async def test_a_callback_holding_the_loop_is_observed_as_lag() -> None:
    registry = CollectorRegistry()
    probe = LoopLag(lag_histogram(registry), every=0.005)
    probe.start()
    await asyncio.sleep(0.02)
    # holds the loop (the point of the test): the probe's wake, due within 5 ms, waits
    time.sleep(0.08)  # noqa: ASYNC251
    await asyncio.sleep(0.02)
    await probe.stop()
    observed = _lag(registry, "count")
    assert observed >= 2
    # at least one wake came more than 50 ms late (it can only be later than the hold)
    assert _lag(registry, "bucket", le="0.05") < observed
    assert _lag(registry, "sum") >= 0.07


async def test_lag_is_measured_from_when_the_wake_was_due() -> None:
    registry = CollectorRegistry()
    # due at 10.001, woke at 10.25; then every wake on time (due 20.001, woke "at" 20.0)
    ticks = itertools.chain([10.0, 10.25], itertools.repeat(20.0))
    probe = LoopLag(lag_histogram(registry), every=0.001, clock=lambda: next(ticks))
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(0.05)
    task.cancel()
    assert _lag(registry, "count") >= 1
    assert _lag(registry, "sum") == pytest.approx(0.249)
    on_time = _lag(registry, "bucket", le="0.1")
    assert _lag(registry, "bucket", le="0.25") == on_time + 1
    assert _lag(registry, "count") == on_time + 1


async def test_stop_ends_the_probe_and_start_twice_runs_one() -> None:
    registry = CollectorRegistry()
    probe = LoopLag(lag_histogram(registry), every=0.001)
    probe.start()
    probe.start()
    assert sum(t.get_name() == "loop-lag" for t in asyncio.all_tasks()) == 1
    await asyncio.sleep(0.01)
    await probe.stop()
    assert not any(t.get_name() == "loop-lag" for t in asyncio.all_tasks())
    count = _lag(registry, "count")
    await asyncio.sleep(0.01)
    assert _lag(registry, "count") == count
    await probe.stop()  # stopping a stopped probe is nothing
