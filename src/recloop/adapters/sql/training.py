"""The training process's read-only view of the SQL storage (the ``TrainingReader`` port).

The server hands a training job a :class:`SqlTrainingReader` (the database URL: a plain
value, pickled to the spawned process); the job opens its own read-only connection
there, so reading and joining the window never hold the server's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url

from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.log import SqlEventLog
from recloop.adapters.sql.store import SqlStateStore


def readable_elsewhere(url: str) -> bool:
    """Whether another process can open the database at ``url``: PostgreSQL, a SQLite
    file (not SQLite's in-memory database, private to its connection, nor ``memory://``)."""
    try:
        parsed = make_url(url)
    except Exception:  # not a SQLAlchemy URL
        return False
    backend = parsed.get_backend_name()
    if backend != "sqlite":
        return backend == "postgresql"
    database = parsed.database or ""
    return bool(database) and database != ":memory:" and "mode=memory" not in database


class ReadOnlyDatabase(SqlDatabase):
    """A :class:`SqlDatabase` whose connections refuse to write: SQLite's ``query_only``
    (a WAL reader beside the server's writer), PostgreSQL's read-only transactions.
    Never migrated."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        if self.dialect != "sqlite":

            @event.listens_for(self.engine.sync_engine, "connect")
            def _read_only(dbapi_connection: Any, _record: Any) -> None:
                # On the driver's own connection: outside the transaction SQLAlchemy's
                # adapter would begin (which a pool's rollback would take back).
                dbapi_connection.run_async(
                    lambda conn: conn.execute(
                        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
                    )
                )

    def _tune(self, connection: Any) -> None:
        super()._tune(connection)  # WAL already: the server set it, nothing is written
        cursor = connection.cursor()
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    async def migrate(self, revision: str = "head") -> None:
        raise RuntimeError("the training process's database is read-only: never migrated")


@dataclass(frozen=True)
class SqlTrainingReader:
    """Opens the database at ``url`` read-only: its impressions, reliability records and
    the feedback naming the impressions."""

    url: str

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[tuple[SqlStateStore, SqlEventLog]]:
        db = ReadOnlyDatabase(self.url)
        try:
            yield SqlStateStore(db), SqlEventLog(db)
        finally:
            await db.dispose()


def training_reader(url: str) -> SqlTrainingReader | None:
    """The reader a training process can use for the database at ``url`` (None: only this
    process can read it, the job reads through the server's own store)."""
    return SqlTrainingReader(url) if readable_elsewhere(url) else None
