"""The console's history points over SQL (SQLite or PostgreSQL)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import orjson
from sqlalchemy import delete, select

from recloop.adapters.sql.base import dialect_insert
from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.tables import history_points
from recloop.ports import HistoryPoint

_COLUMNS = (
    history_points.c.kind,
    history_points.c.scope,
    history_points.c.subject,
    history_points.c.at,
    history_points.c.figures,
)


def _figures(values: dict[str, float | None]) -> bytes:
    """orjson of the values; NaN and infinities are stored as None (JSON has neither)."""
    return orjson.dumps(
        {k: None if v is None or not math.isfinite(v) else float(v) for k, v in values.items()}
    )


class SqlHistoryStore:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db
        self._insert = dialect_insert(db, history_points).on_conflict_do_nothing(
            index_elements=["kind", "scope", "subject", "at"]
        )

    async def append(self, points: Sequence[HistoryPoint]) -> None:
        if not points:
            return
        rows = [
            {
                "kind": p.kind,
                "scope": p.scope,
                "subject": p.subject,
                "at": p.at,
                "figures": _figures(p.values),
            }
            for p in points
        ]
        async with self._db.write() as conn:
            await conn.execute(self._insert, rows)

    async def read(
        self, kind: str, scope: str | None, since: float, limit: int
    ) -> list[HistoryPoint]:
        query = select(*_COLUMNS).where(history_points.c.kind == kind)
        if scope is not None:
            query = query.where(history_points.c.scope == scope)
        query = query.where(history_points.c.at >= since)
        query = query.order_by(
            history_points.c.scope, history_points.c.subject, history_points.c.at
        ).limit(limit)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [HistoryPoint(r[0], r[1], r[2], r[3], orjson.loads(r[4])) for r in rows]

    async def purge(self, before: float, limit: int) -> int:
        if limit < 1:
            return 0
        # The limit-th oldest point's time: whole samples go, so ties there go too.
        bound = (
            select(history_points.c.at)
            .where(history_points.c.at < before)
            .order_by(history_points.c.at)
            .offset(limit - 1)
            .limit(1)
        )
        async with self._db.write() as conn:
            last = (await conn.execute(bound)).scalar()
            doomed = delete(history_points).where(history_points.c.at < before)
            if last is not None:
                doomed = doomed.where(history_points.c.at <= last)
            result = await conn.execute(doomed)
        return int(result.rowcount or 0)
