"""Impressions over SQL: the slates shown, stored compact (``core.slates``' header,
numbers and float32 features, the features' names once per feature set) (the
``ImpressionStore`` role of the state store)."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from functools import partial
from typing import Any

import orjson
from sqlalchemy import select

from recloop.adapters.sql.base import SqlRole, dialect_insert, executemany
from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.tables import feature_sets, impressions
from recloop.core.slates import Slate, feature_set_id, shown_item_ids
from recloop.core.slates import decode as decode_slate
from recloop.core.slates import encode as encode_slate
from recloop.pauses import let_requests_in
from recloop.ports import Impression, ImpressionHead


class SqlImpressionStore(SqlRole):
    def __init__(self, db: SqlDatabase, pg_lane: bool | None = None) -> None:
        super().__init__(db, pg_lane)
        self._feature_sets: dict[str, tuple[str, ...]] = {}  # stored by this process
        self._add_impression = impressions.insert()
        self._add_feature_sets = dialect_insert(db, feature_sets).on_conflict_do_nothing()
        self._compile(self._add_impression, self._add_feature_sets)

    async def add_impressions(self, batch: Sequence[Impression]) -> None:
        if not batch:
            return
        rows = []
        sets: dict[str, tuple[str, ...]] = {}
        for i in batch:
            header, numbers, features = encode_slate(i.shown)
            names = i.shown.feature_names
            set_id = _feature_set_of(names)
            if set_id not in self._feature_sets:
                sets[set_id] = names
            rows.append(
                {
                    "impression_id": i.impression_id,
                    "user_id": i.user_id,
                    "segment": i.segment,
                    "created_at": i.created_at,
                    "epsilon": i.epsilon,
                    "model_version": i.model_version,
                    "slate": header,
                    "numbers": numbers,
                    "features": features,
                    "feature_set": set_id,
                    "context": orjson.dumps(i.context),
                    "experiments": orjson.dumps(i.experiments),
                    "model_slot": i.model_slot,
                }
            )
        batches = [(self._add_impression, rows)]
        if sets:
            named = [{"feature_set": k, "names": orjson.dumps(v)} for k, v in sets.items()]
            batches.insert(0, (self._add_feature_sets, named))
        if self._db.fast_lane:
            # One call in the writer thread: through SQLAlchemy's async layer this was
            # three thread hand-offs (begin, insert, commit) and per-row processing.
            raw = [self._compiled[id(stmt)].bind(rows) for stmt, rows in batches]
            await self._db.run_write(partial(executemany, raw))
        else:
            async with self._db.write() as conn:
                for stmt, rows in batches:
                    await conn.execute(stmt, rows)
        self._feature_sets.update(sets)

    async def get_impression(self, impression_id: str) -> Impression | None:
        query = impression_query().where(impressions.c.impression_id == impression_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else impression_from_row(row)

    async def get_impressions(self, since: float, until: float) -> list[Impression]:
        query = (
            impression_query()
            .where(impressions.c.created_at >= since, impressions.c.created_at < until)
            .order_by(impressions.c.created_at, impressions.c.impression_id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [impression_from_row(row) for row in rows]

    async def get_impression_heads(
        self, since: float, until: float, known: Container[str] = ()
    ) -> list[ImpressionHead]:
        c = impressions.c
        query = (
            select(
                c.impression_id,
                c.user_id,
                c.created_at,
                c.slate,
                c.feature_set,
                c.model_version,
                c.model_slot,
            )
            .where(c.created_at >= since, c.created_at < until)
            .order_by(c.created_at, c.impression_id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        heads: list[ImpressionHead] = []
        for start in range(0, len(rows), _DECODE_CHUNK):
            if start:  # a minute of a busy server's impressions: let requests in between
                await let_requests_in()
            heads.extend(
                ImpressionHead(row[0], row[1], row[2], _shown_ids(row[3], row[4]), row[5], row[6])
                for row in rows[start : start + _DECODE_CHUNK]
                if row[0] not in known
            )
        return heads


_DECODE_CHUNK = 250
"""Heads decoded between two pauses for requests (the look-back after a busy minute holds
thousands)."""


def impression_query() -> Any:
    """Impressions with their feature set's names (NULL for rows logged before 0010)."""
    return select(impressions, feature_sets.c.names).select_from(
        impressions.outerjoin(feature_sets, impressions.c.feature_set == feature_sets.c.feature_set)
    )


_NAMES: dict[str, tuple[str, ...]] = {}
"""Feature sets' names by id (an id is the hash of its names: never stale)."""


_SET_IDS: dict[tuple[str, ...], str] = {}


def _feature_set_of(names: tuple[str, ...]) -> str:
    set_id = _SET_IDS.get(names)
    if set_id is None:
        set_id = _SET_IDS[names] = feature_set_id(names)
        _NAMES.setdefault(set_id, names)
    return set_id


def _shown_ids(slate: bytes, feature_set: str | None) -> tuple[str, ...]:
    """The shown items' ids from an impression's ``slate`` column: the header's
    (:func:`~recloop.core.slates.shown_item_ids`), or, for a row logged before 0010
    (``feature_set`` NULL), the mappings' in slot order."""
    if feature_set is None:
        return Slate.from_slate(orjson.loads(slate)).item_ids
    return shown_item_ids(slate)


def impression_from_row(row: Mapping[str, Any]) -> Impression:
    """A row of :func:`impression_query` as an :class:`Impression`."""
    set_id = row["feature_set"]
    if set_id is None:  # logged before 0010: the slate as mappings
        shown = Slate.from_slate(orjson.loads(row["slate"]))
    else:
        names = _NAMES.get(set_id)
        if names is None:
            names = _NAMES[set_id] = tuple(orjson.loads(row["names"]))
        shown = decode_slate(row["slate"], row["numbers"], row["features"], names)
    return Impression(
        impression_id=row["impression_id"],
        user_id=row["user_id"],
        segment=row["segment"],
        created_at=row["created_at"],
        epsilon=row["epsilon"],
        shown=shown,
        context=orjson.loads(row["context"]),
        experiments=orjson.loads(row["experiments"] or b"[]"),
        model_version=row["model_version"],
        model_slot=row["model_slot"],
    )
