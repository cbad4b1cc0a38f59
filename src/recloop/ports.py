"""The interfaces services depend on; adapters under ``recloop.adapters`` implement them.

``adapters.memory`` implements every port in process: it is what unit tests
use, and the contract tests run the same cases over it and the SQL adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from recloop.core.events import Event
from recloop.core.items import Item
from recloop.core.preferences import UserState


class EventLog(Protocol):
    """The durable, ordered log of accepted events; ``event_id`` is unique in it."""

    async def append(self, events: Sequence[Event]) -> list[int | None]:
        """Write ``events`` durably, in order, in one commit.

        Returns each event's offset, or None where its ``event_id`` was already logged
        (the event is then not written again).
        """
        ...

    async def read(self, after: int, limit: int) -> list[Event]:
        """Events with offsets above ``after``, in offset order, at most ``limit``."""
        ...

    async def last_offset(self) -> int:
        """The highest offset written so far (0 for an empty log)."""
        ...


class StateStore(Protocol):
    """Learned state: users, items, the applied watermark, dead letters."""

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserState]: ...

    async def save_users(self, states: Sequence[UserState], watermark: int | None) -> None:
        """Store ``states`` and, if given, the consumer's applied ``watermark``, in one commit."""
        ...

    async def get_watermark(self) -> int: ...

    async def put_items(self, items: Sequence[Item]) -> None: ...

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]: ...

    async def add_dead_letter(self, event: Event, reason: str) -> None: ...

    async def count_dead_letters(self) -> int: ...

    async def ping(self) -> None:
        """Raise if the store cannot serve."""
        ...


class Cache(Protocol):
    """Read results cached per key.

    Writers ``set`` the fresh value after they commit (or ``delete`` what they
    cannot recompute); readers filling a miss from the store use ``add``, which
    never overwrites, so a slow reader cannot put back a value older than a
    writer's.
    """

    def get(self, key: str) -> Any | None: ...

    def set(self, key: str, value: Any) -> None: ...

    def add(self, key: str, value: Any) -> None:
        """Set ``key`` only if it holds nothing (or only an expired value)."""
        ...

    def delete(self, key: str) -> None: ...
