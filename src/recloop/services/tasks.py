"""Background tasks a service starts and, on stop, cancels and waits for."""

from __future__ import annotations

import asyncio
from typing import Any


async def stop_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` (None: not started) and wait until every one has stopped.

    A task's cancellation is expected and not raised; an error a task ended with is
    (the first, once all have stopped), and so is the cancellation of the caller
    itself: a stop that is cancelled does not carry on as if its tasks had stopped.

    >>> async def main() -> bool:
    ...     task = asyncio.create_task(asyncio.sleep(3600))
    ...     await stop_tasks(task, None)
    ...     return task.cancelled()
    >>> asyncio.run(main())
    True
    """
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    # gather raises CancelledError if the caller is cancelled meanwhile.
    outcomes = await asyncio.gather(*running, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
