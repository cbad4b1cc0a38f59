"""In-memory event log and state store: same contract as the SQL adapter, no durability."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from recloop.core.events import Event
from recloop.core.items import Item
from recloop.core.preferences import UserState


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


def _with_offset(event: Event, offset: int) -> Event:
    return Event.from_record(event.to_record(), offset)


class InMemoryStateStore:
    def __init__(self) -> None:
        self._users: dict[str, UserState] = {}
        self._items: dict[str, Item] = {}
        self._watermark = 0
        self.dead_letters: list[tuple[Event, str]] = []

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        return {u: copy.deepcopy(self._users[u]) for u in user_ids if u in self._users}

    async def save_users(self, states: Sequence[UserState], watermark: int | None) -> None:
        for state in states:
            self._users[state.user_id] = copy.deepcopy(state)
        if watermark is not None:
            self._watermark = max(self._watermark, watermark)

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
