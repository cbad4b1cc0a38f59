"""The console's history points in process (same contract as SQL)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from recloop.ports import HistoryPoint

_Key = tuple[str, str, str]


class InMemoryHistoryStore:
    def __init__(self) -> None:
        self._series: dict[_Key, list[HistoryPoint]] = {}  # each sorted by ``at``

    async def append(self, points: Sequence[HistoryPoint]) -> None:
        for p in points:
            held = self._series.setdefault((p.kind, p.scope, p.subject), [])
            i = bisect.bisect_left(held, p.at, key=lambda h: h.at)
            if i < len(held) and held[i].at == p.at:
                continue  # held already: left as it is
            values = {
                k: None if v is None or not math.isfinite(v) else float(v)
                for k, v in p.values.items()
            }
            held.insert(i, HistoryPoint(p.kind, p.scope, p.subject, p.at, values))

    async def read(
        self, kind: str, scope: str | None, since: float, limit: int
    ) -> list[HistoryPoint]:
        found: list[HistoryPoint] = []
        for key in sorted(self._series):
            if key[0] != kind or (scope is not None and key[1] != scope):
                continue
            held = self._series[key]
            found.extend(held[bisect.bisect_left(held, since, key=lambda h: h.at) :])
            if len(found) >= limit:
                break
        return found[: max(limit, 0)]

    async def purge(self, before: float, limit: int) -> int:
        if limit < 1:
            return 0
        times = sorted(p.at for held in self._series.values() for p in held if p.at < before)
        if not times:
            return 0
        last = times[min(limit, len(times)) - 1]
        deleted = 0
        for key in list(self._series):
            held = self._series[key]
            kept = [p for p in held if p.at > last or p.at >= before]
            deleted += len(held) - len(kept)
            if kept:
                self._series[key] = kept
            else:
                del self._series[key]
        return deleted
