"""Items over SQL: their vectors and attributes (the ``ItemStore`` role of the state
store)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import orjson
from sqlalchemy import select

from recloop.adapters.sql.base import SqlRole, select_in, upsert, vector_of
from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.tables import items
from recloop.core.items import Item


class SqlItemStore(SqlRole):
    def __init__(self, db: SqlDatabase, pg_lane: bool | None = None) -> None:
        super().__init__(db, pg_lane)
        self._save_item = upsert(db, items, "item_id")

    async def put_items(self, batch: Sequence[Item]) -> None:
        rows = [
            {
                "item_id": item.item_id,
                "vector": item.vector.astype("<f8").tobytes(),
                "vector_source": item.vector_source,
                "attributes": dict(item.attributes),
                "updated_at": item.updated_at,
            }
            for item in batch
        ]
        async with self._db.write() as conn:
            await conn.execute(self._save_item, rows)

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        if not item_ids:
            return {}
        rows: Sequence[Any]
        if self._db.fast_lane:
            rows = await self._db.run_read(partial(select_in, items, "item_id", item_ids))
        else:
            query = select(items).where(items.c.item_id.in_(list(item_ids)))
            async with self._db.read() as conn:
                rows = (await conn.execute(query)).mappings().all()
        return {
            row["item_id"]: Item(
                item_id=row["item_id"],
                vector=vector_of(row["vector"]),
                vector_source=row["vector_source"],
                attributes=row["attributes"]
                if isinstance(row["attributes"], dict)
                else orjson.loads(row["attributes"]),
                updated_at=row["updated_at"],
            )
            for row in rows
        }
