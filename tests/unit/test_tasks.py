"""services.tasks.stop_tasks: cancel background tasks and wait until they have stopped."""

from __future__ import annotations

import asyncio

import pytest

from recloop.services.tasks import stop_tasks


async def test_cancels_every_task_and_waits_for_its_cleanup() -> None:
    cleaned: list[str] = []

    async def loop(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself takes a turn of the loop
            cleaned.append(name)

    tasks = [asyncio.create_task(loop(n)) for n in ("a", "b")]
    await asyncio.sleep(0)
    await stop_tasks(*tasks, None)
    assert sorted(cleaned) == ["a", "b"]
    assert all(t.cancelled() for t in tasks)


async def test_nothing_to_stop() -> None:
    await stop_tasks()
    await stop_tasks(None)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await stop_tasks(done)  # finished already: nothing to raise


async def test_a_tasks_own_error_is_raised_after_the_others_stopped() -> None:
    async def fails() -> None:
        raise ValueError("broken loop")

    other = asyncio.create_task(asyncio.Event().wait())
    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken loop"):
        await stop_tasks(failed, other)
    assert other.cancelled()


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # its cleanup waits

    background = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    after_stop: list[bool] = []

    async def stopper() -> None:
        await stop_tasks(background)
        after_stop.append(True)

    caller = asyncio.create_task(stopper())
    await asyncio.sleep(0)
    caller.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert after_stop == []
    await asyncio.wait([background], timeout=5)
    assert background.cancelled()
