"""What the state store's role classes share (``users.py``, ``experiments.py``, ...): the
database, each dialect's insert, and SQLite's fast lane (statements compiled once to
plain SQL with positional parameters, run on the lane's ``sqlite3`` connection).

PostgreSQL's lane (:mod:`~recloop.adapters.sql.pg`) compiles its statements the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

import numpy as np
from sqlalchemy.dialects import postgresql, sqlite

from recloop.adapters.sql.database import SqlDatabase

SQLITE_IN_CHUNK = 10_000  # below SQLite's limit of 32,766 bound parameters


class SqlRole:
    """The base of the state store's role classes: the database they share and the fast
    lane's statements they compiled (by the id of the SQLAlchemy statement, which lives
    as long as the store).

    Every role class takes the same arguments and passes them on (``super().__init__``),
    so :class:`~recloop.adapters.sql.store.SqlStateStore`, which inherits all of them,
    prepares each role's statements once over one database.
    """

    def __init__(self, db: SqlDatabase, pg_lane: bool | None = None) -> None:
        """``pg_lane``: on PostgreSQL, the hot statements (the state commit, users' reads)
        through :mod:`~recloop.adapters.sql.pg` (the default); False keeps SQLAlchemy's
        path for them, the oracle of the differential tests."""
        self._db = db
        self._pg_lane = db.pg_lane if pg_lane is None else pg_lane and db.pg_lane
        self._compiled: dict[int, SqliteStatement] = {}

    def _compile(self, *statements: Any) -> None:
        """Compile ``statements`` for the fast lane (``self._compiled[id(stmt)]``)."""
        self._compiled.update({id(stmt): SqliteStatement(stmt) for stmt in statements})


def dialect_insert(db: SqlDatabase, table: Any) -> Any:
    """``table``'s insert in ``db``'s dialect (for its ``on_conflict_do_*``)."""
    dialect = postgresql if db.dialect == "postgresql" else sqlite
    return dialect.insert(table)


def upsert(db: SqlDatabase, table: Any, *keys: str) -> Any:
    """``table``'s insert in ``db``'s dialect that, on a conflict on ``keys``, replaces
    every other column with the inserted row's."""
    insert = dialect_insert(db, table)
    return insert.on_conflict_do_update(
        index_elements=list(keys),
        set_={c.name: insert.excluded[c.name] for c in table.c if c.name not in keys},
    )


def vector_of(blob: bytes) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A stored vector column (little-endian float64) as an array."""
    return np.frombuffer(blob, dtype="<f8").copy()


class SqliteStatement:
    """A SQLAlchemy statement compiled once for SQLite, for the fast lane's plain tuples."""

    def __init__(self, stmt: Any) -> None:
        compiled = stmt.compile(dialect=sqlite.dialect())
        self.sql = str(compiled)
        self.order: list[str] = list(compiled.positiontup or ())

    def bind(self, rows: Sequence[dict[str, Any]]) -> tuple[str, list[tuple[Any, ...]]]:
        order = self.order
        return self.sql, [tuple(row[k] for k in order) for row in rows]


def executemany(
    batches: Sequence[tuple[str, list[tuple[Any, ...]]]], conn: sqlite3.Connection
) -> None:
    """Each batch's rows through its SQL, in order (fast lane: one transaction)."""
    for sql, rows in batches:
        conn.executemany(sql, rows)


def select_in(
    table: Any, key: str, values: Sequence[str], conn: sqlite3.Connection
) -> list[dict[str, Any]]:
    """Rows of ``table`` whose ``key`` is in ``values``, as mappings (fast lane)."""
    names = _column_names(table)
    found: list[dict[str, Any]] = []
    values = list(values)
    for start in range(0, len(values), SQLITE_IN_CHUNK):
        chunk = values[start : start + SQLITE_IN_CHUNK]
        sql = _select_in_sql(table, key, len(chunk))
        found.extend(dict(zip(names, row, strict=True)) for row in conn.execute(sql, chunk))
    return found


@cache
def _column_names(table: Any) -> tuple[str, ...]:
    """``table``'s column names, in order (a read of one user, the read path's miss, asked
    for them each time: listing a SQLAlchemy table's columns costs more than the query)."""
    return tuple(c.name for c in table.c)


@lru_cache(maxsize=256)
def _select_in_sql(table: Any, key: str, count: int) -> str:
    """The query of :func:`select_in` for ``count`` values, built once per size."""
    columns = ", ".join(f'"{n}"' for n in _column_names(table))
    marks = ",".join("?" * count)
    return f'SELECT {columns} FROM {table.name} WHERE "{key}" IN ({marks})'
