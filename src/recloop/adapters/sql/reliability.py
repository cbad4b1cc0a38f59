"""Users' standing with the guard over SQL (the ``ReliabilityStore`` role of the state
store)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from recloop.adapters.sql.base import SqlRole, upsert
from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.tables import user_reliability
from recloop.ports import ReliabilityRecord


class SqlReliabilityStore(SqlRole):
    def __init__(self, db: SqlDatabase, pg_lane: bool | None = None) -> None:
        super().__init__(db, pg_lane)
        self._put_reliability = upsert(db, user_reliability, "user_id")

    async def get_reliability(self) -> list[ReliabilityRecord]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(user_reliability))).mappings().all()
        return [ReliabilityRecord(**row) for row in rows]

    async def put_reliability(self, records: Sequence[ReliabilityRecord]) -> None:
        if not records:
            return
        rows = [{n: getattr(r, n) for n in ReliabilityRecord.__slots__} for r in records]
        async with self._db.write() as conn:
            await conn.execute(self._put_reliability, rows)
