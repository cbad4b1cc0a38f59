"""Which log offsets are fully applied: the low watermark replay starts after."""

from __future__ import annotations

import heapq


class OffsetTracker:
    """Tracks offsets handed to processors and those whose state is committed.

    The watermark is the highest offset below which every offset is done, so
    replay after a crash may start right after it. Offsets are begun in
    increasing order; they may finish in any order.

    >>> t = OffsetTracker(watermark=10)
    >>> for o in (11, 12, 13):
    ...     t.begin(o)
    >>> t.done(12); t.watermark
    10
    >>> t.done(11); t.watermark
    12
    >>> t.done(13); t.watermark, t.in_flight
    (13, 0)
    """

    def __init__(self, watermark: int = 0) -> None:
        self._watermark = watermark
        self._last_begun = watermark
        self._pending: list[int] = []
        self._finished: set[int] = set()

    @property
    def watermark(self) -> int:
        return self._watermark

    @property
    def last_begun(self) -> int:
        return self._last_begun

    @property
    def in_flight(self) -> int:
        return len(self._pending) - len(self._finished)

    def begin(self, offset: int) -> None:
        if offset <= self._last_begun:
            raise ValueError(f"offset {offset} begun out of order (last {self._last_begun})")
        self._last_begun = offset
        heapq.heappush(self._pending, offset)

    def done(self, offset: int) -> None:
        self._finished.add(offset)
        pending = self._pending
        while pending and pending[0] in self._finished:
            self._finished.discard(pending[0])
            self._watermark = heapq.heappop(pending)
        if not pending:
            self._watermark = self._last_begun
