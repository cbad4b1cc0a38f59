"""The optimizer's storage over SQL: algorithm counts, performance reports, algorithms'
status (the ``OptimizerStore`` role of the state store).

The counts are also added by the state commit (``users.py``) and taken back by an
erasure (``privacy.py``), both with :func:`add_counts_statement`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, literal_column, select

from recloop.adapters.sql.base import SqlRole, dialect_insert, upsert
from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.tables import algorithm_stats, algorithm_status, performance_reports
from recloop.core.availability import AlgorithmStatus
from recloop.core.bandit import COUNT_LIMIT, PerformanceCounts
from recloop.ports import AlgorithmCount


class SqlOptimizerStore(SqlRole):
    def __init__(self, db: SqlDatabase, pg_lane: bool | None = None) -> None:
        super().__init__(db, pg_lane)
        self._add_report_counts = add_counts_statement(db)
        self._put_status = upsert(db, algorithm_status, "segment", "algorithm")

    async def get_algorithm_counts(self, since: float) -> list[AlgorithmCount]:
        query = select(algorithm_stats).where(algorithm_stats.c.bucket_start >= since)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            AlgorithmCount(
                row["segment"],
                row["algorithm"],
                row["bucket_start"],
                PerformanceCounts(
                    **{
                        name: _count(row[name]) if name in _SATURATING_COUNTS else row[name]
                        for name in _COUNT_COLUMNS
                    }
                ),
            )
            for row in rows
        ]

    async def add_performance_report(
        self, report_id: str, payload: bytes, counts: Sequence[AlgorithmCount]
    ) -> bool:
        record = dialect_insert(self._db, performance_reports).on_conflict_do_nothing(
            index_elements=["report_id"]
        )
        async with self._db.write() as conn:
            result = await conn.execute(
                record, {"report_id": report_id, "received_at": time.time(), "payload": payload}
            )
            if result.rowcount == 0:
                return False
            if counts:
                await conn.execute(self._add_report_counts, [count_to_row(c) for c in counts])
        return True

    async def get_algorithm_status(self) -> list[AlgorithmStatus]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(algorithm_status))).mappings().all()
        return [AlgorithmStatus(**row) for row in rows]

    async def put_algorithm_status(self, statuses: Sequence[AlgorithmStatus]) -> None:
        if not statuses:
            return
        rows = [{name: getattr(s, name) for name in AlgorithmStatus.__slots__} for s in statuses]
        async with self._db.write() as conn:
            await conn.execute(self._put_status, rows)


_COUNT_COLUMNS = (
    "impressions",
    "clicks",
    "conversions",
    "satisfaction_sum",
    "satisfaction_n",
    "impressions_sq_excess",
)


_SATURATING_COUNTS = frozenset(_COUNT_COLUMNS) - {"satisfaction_sum", "impressions_sq_excess"}


def _count(value: Any) -> Any:
    """A stored count as ``PerformanceCounts`` holds it: whole counts as ``int`` (the
    columns are floats since 0015, for inverse-propensity credit's fractions)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def add_counts_statement(db: SqlDatabase) -> Any:
    """The upsert adding :class:`AlgorithmCount` rows (:func:`count_to_row`) to the stored
    ones (deltas: an erasure's are negative)."""
    stats = dialect_insert(db, algorithm_stats)
    return stats.on_conflict_do_update(
        index_elements=["segment", "algorithm", "bucket_start"],
        set_={
            name: _saturating_sum(algorithm_stats.c[name], stats.excluded[name])
            if name in _SATURATING_COUNTS
            else algorithm_stats.c[name] + stats.excluded[name]
            for name in _COUNT_COLUMNS
        },
    )


def _saturating_sum(stored: Any, added: Any) -> Any:
    """``stored + added``, stopping at ``COUNT_LIMIT`` as ``PerformanceCounts`` does, and
    never computing a sum beyond it (the columns were BIGINTs, which would overflow)."""
    limit = literal_column(str(COUNT_LIMIT))  # not a parameter: the fast lane binds rows only
    return case((stored > limit - added, limit), else_=stored + added)


def count_to_row(row: AlgorithmCount) -> dict[str, Any]:
    """An :class:`AlgorithmCount` as a row of :func:`add_counts_statement`."""
    values = {name: getattr(row.counts, name) for name in _COUNT_COLUMNS}
    return {
        "segment": row.segment,
        "algorithm": row.algorithm,
        "bucket_start": row.bucket_start,
        **values,
    }
