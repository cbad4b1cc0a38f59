"""Events that failed to apply, over SQL (the ``DeadLetterStore`` role of the state
store)."""

from __future__ import annotations

import time

import orjson
from sqlalchemy import func, select

from recloop.adapters.sql.base import SqlRole
from recloop.adapters.sql.tables import dead_letters
from recloop.core.events import Event


class SqlDeadLetterStore(SqlRole):
    async def add_dead_letter(self, event: Event, reason: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                dead_letters.insert(),
                {
                    "offset": event.offset,
                    "event_id": event.event_id,
                    "user_id": event.user_id,
                    "payload": orjson.dumps(event.to_record()),
                    "reason": reason,
                    "failed_at": time.time(),
                },
            )

    async def count_dead_letters(self) -> int:
        async with self._db.read() as conn:
            value = (await conn.execute(select(func.count()).select_from(dead_letters))).scalar()
        return int(value or 0)
