"""Group commit: many concurrent callers, one write per round.

Callers :meth:`GroupCommit.submit` a batch and wait; one task takes every
batch waiting (up to ``max_items``), writes them with a single call of
``write``, then answers each caller with its slice of the results. Under load
rounds grow, so the cost of a transaction (and an fsync) is shared by every
request that arrived while the previous one ran; unloaded, a round is one
request and adds no delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ShuttingDown(RuntimeError):
    """Raised to callers that submit after :meth:`GroupCommit.stop` began."""


class GroupCommit(Generic[T, R]):
    """Coalesces submitted batches into rounds of ``write``.

    Parameters
    ----------
    write
        Writes a round's items; returns one result per item, in order. If it
        raises, every caller of the round gets the exception.
    after
        Optional; runs after each successful round, before the next one starts,
        with the round's items and results (e.g. hand logged events on in order).
    """

    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], Awaitable[Sequence[R]]],
        max_items: int = 20_000,
        after: Callable[[list[T], Sequence[R]], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self._write = write
        self._after = after
        self._max_items = max_items
        self._pending: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.rounds = 0

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Write what is pending, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def pending(self) -> int:
        return sum(len(items) for items, _ in self._pending)

    async def submit(self, items: list[T]) -> list[R]:
        """Write ``items`` in the next round; their results once it is committed."""
        if self._closing:
            raise ShuttingDown(f"{self.name} is shutting down")
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            taken, count = 0, 0
            while taken < len(self._pending) and count < self._max_items:
                count += len(self._pending[taken][0])
                taken += 1
            round_, self._pending = self._pending[:taken], self._pending[taken:]
            flat = [item for items, _ in round_ for item in items]
            try:
                results = await self._write(flat)
            except Exception as exc:
                for _, future in round_:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.rounds += 1
            start = 0
            for items, future in round_:
                if not future.done():
                    future.set_result(list(results[start : start + len(items)]))
                start += len(items)
            if self._after is not None:
                await self._after(flat, results)
