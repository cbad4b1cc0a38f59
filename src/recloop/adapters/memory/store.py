"""In-memory event log and state store: same contract as the SQL adapter, no durability."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from recloop.core.availability import AlgorithmStatus
from recloop.core.bandit import PerformanceCounts
from recloop.core.events import Event
from recloop.core.items import Item
from recloop.core.preferences import UserState
from recloop.ports import AlgorithmCount, Impression


class InMemoryEventLog:
    def __init__(self) -> None:
        self._events: list[Event] = []
        self._ids: set[str] = set()

    async def append(self, events: Sequence[Event]) -> list[int | None]:
        offsets: list[int | None] = []
        for event in events:
            if event.event_id in self._ids:
                offsets.append(None)
                continue
            self._ids.add(event.event_id)
            offset = len(self._events) + 1
            self._events.append(_with_offset(event, offset))
            offsets.append(offset)
        return offsets

    async def read(self, after: int, limit: int) -> list[Event]:
        return self._events[max(after, 0) : max(after, 0) + limit]

    async def last_offset(self) -> int:
        return len(self._events)

    async def read_impression_feedback(self, impression_id: str) -> list[Event]:
        return [e for e in self._events if e.attribution.get("impression_id") == impression_id]


def _with_offset(event: Event, offset: int) -> Event:
    return Event.from_record(event.to_record(), offset)


class InMemoryStateStore:
    def __init__(self) -> None:
        self._users: dict[str, UserState] = {}
        self._items: dict[str, Item] = {}
        self._watermark = 0
        self._counts: dict[tuple[str, str, float], PerformanceCounts] = {}
        self._reports: dict[str, bytes] = {}
        self._status: dict[tuple[str, str], AlgorithmStatus] = {}
        self._impressions: dict[str, Impression] = {}
        self.dead_letters: list[tuple[Event, str]] = []

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        return {u: copy.deepcopy(self._users[u]) for u in user_ids if u in self._users}

    async def save_users(
        self,
        states: Sequence[UserState],
        watermark: int | None,
        algorithm_counts: Sequence[AlgorithmCount] = (),
    ) -> None:
        for state in states:
            self._users[state.user_id] = copy.deepcopy(state)
        self._add_counts(algorithm_counts)
        if watermark is not None:
            self._watermark = max(self._watermark, watermark)

    def _add_counts(self, rows: Sequence[AlgorithmCount]) -> None:
        for row in rows:
            key = (row.segment, row.algorithm, row.bucket_start)
            self._counts[key] = self._counts.get(key, PerformanceCounts()) + row.counts

    async def get_algorithm_counts(self, since: float) -> list[AlgorithmCount]:
        return [
            AlgorithmCount(segment, algorithm, bucket, counts)
            for (segment, algorithm, bucket), counts in self._counts.items()
            if bucket >= since
        ]

    async def add_performance_report(
        self, report_id: str, payload: bytes, counts: Sequence[AlgorithmCount]
    ) -> bool:
        if report_id in self._reports:
            return False
        self._reports[report_id] = payload
        self._add_counts(counts)
        return True

    async def get_algorithm_status(self) -> list[AlgorithmStatus]:
        return list(self._status.values())

    async def put_algorithm_status(self, statuses: Sequence[AlgorithmStatus]) -> None:
        for status in statuses:
            self._status[(status.segment, status.algorithm)] = status

    async def add_impressions(self, impressions: Sequence[Impression]) -> None:
        for impression in impressions:
            self._impressions[impression.impression_id] = copy.deepcopy(impression)

    async def get_impression(self, impression_id: str) -> Impression | None:
        return copy.deepcopy(self._impressions.get(impression_id))

    async def get_watermark(self) -> int:
        return self._watermark

    async def put_items(self, items: Sequence[Item]) -> None:
        for item in items:
            self._items[item.item_id] = item

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        return {i: self._items[i] for i in item_ids if i in self._items}

    async def add_dead_letter(self, event: Event, reason: str) -> None:
        self.dead_letters.append((event, reason))

    async def count_dead_letters(self) -> int:
        return len(self.dead_letters)

    async def ping(self) -> None:
        return None
