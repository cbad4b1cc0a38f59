"""The SQL engine, its SQLite tuning, and Alembic migrations."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from recloop.core.breaker import CircuitBreaker
from recloop.core.errors import CircuitOpen, TransientError, Unavailable

MIGRATIONS = Path(__file__).with_name("migrations")

T = TypeVar("T")

PG_LANE_CONNECTIONS = 4
"""The most connections :meth:`SqlDatabase.pg_write` and ``pg_read`` hold open at once."""
PG_CONNECT_TIMEOUT = 10.0
"""Seconds a new connection of that pool may take to open."""


class SqlDatabase:
    """An async engine plus what its dialect needs.

    SQLite allows one writer at a time and its busy handler sleeps in steps of
    milliseconds, so writers here queue on an asyncio lock instead; PostgreSQL
    writers run concurrently.

    SQLite also gets a fast lane for the hot statements (:meth:`run_write`,
    :meth:`run_read`): a whole transaction runs as one call in a dedicated
    thread on a plain ``sqlite3`` connection. Through SQLAlchemy's async
    layer every statement is a thread hand-off and per-row parameter
    processing; measured here, that is 3-5x the CPU of the transaction itself.

    Every call goes through :attr:`breaker` (the ``storage`` circuit breaker): while
    it is open, calls fail at once with :class:`~recloop.core.errors.CircuitOpen`.
    A call that cannot reach the database (the connection is refused, dropped or
    times out; SQLite's write lock stays taken past ``busy_timeout``) counts as a
    failure and raises :class:`~recloop.core.errors.TransientError` (from the driver's
    error); any
    other outcome, an error of the database's own included, counts as a success.
    """

    def __init__(
        self, url: str, sqlite_synchronous: str = "FULL", breaker: CircuitBreaker | None = None
    ) -> None:
        self.breaker = breaker if breaker is not None else CircuitBreaker("storage")
        parsed = make_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        self._synchronous = sqlite_synchronous
        self._file: str | None = None
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                self._file = database
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        # hide_parameters: a database error's message (logged, dead-lettered) names the
        # statement, not the values of the event or request that it carried.
        self.engine: AsyncEngine = create_async_engine(url, hide_parameters=True, **kwargs)
        self._write_lock: asyncio.Lock | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._raw_write: sqlite3.Connection | None = None
        self._raw_read: sqlite3.Connection | None = None
        self._pg: Any = None  # pg_write's asyncpg pool, opened at its first call
        self._pg_opening = asyncio.Lock()
        self._raw_point: sqlite3.Connection | None = None
        if self.dialect == "sqlite":
            self._write_lock = asyncio.Lock()

            @event.listens_for(self.engine.sync_engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                self._tune(dbapi_connection)

    def _tune(self, connection: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={self._synchronous}")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @property
    def fast_lane(self) -> bool:
        """Whether :meth:`run_write` and :meth:`run_read` are available (a SQLite file)."""
        return self._file is not None

    def _open(self) -> sqlite3.Connection:
        assert self._file is not None
        conn = sqlite3.connect(self._file, isolation_level=None, check_same_thread=False)
        self._tune(conn)
        return conn

    async def run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """SQLite: ``fn(conn)`` inside ``BEGIN IMMEDIATE``/``COMMIT`` in the writer thread.

        Rolled back if ``fn`` raises. Serialised with every other writer.
        """
        assert self._write_lock is not None
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        async with self._guarded(), self._write_lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._writer, self._transaction, fn)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._raw_write is None:
            self._raw_write = self._open()
        conn = self._raw_write
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """SQLite: ``fn(conn)`` in the reader thread (WAL: readers never wait for the writer)."""
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        async with self._guarded():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._reader, self._read, fn)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._raw_read is None:
            self._raw_read = self._open()
        return fn(self._raw_read)

    async def run_point_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """SQLite: ``fn(conn)`` at once, on the calling thread's own connection: for a
        read by primary key of a row or a few (a never-seen user on the read path), which
        costs a tenth of the hand-off to the reader thread and back. ``fn`` must be that
        small: it holds the event loop while it runs. WAL: the read never waits for the
        writer; where SQLite answers busy at once (``busy_timeout=0``: a WAL reset or a
        recovery under way), the reader thread reads instead, waiting as it does."""
        async with self._guarded():
            conn = self._raw_point
            if conn is None:
                conn = self._raw_point = self._open()
                conn.execute("PRAGMA busy_timeout=0")
            try:
                return fn(conn)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
        return await self.run_read(fn)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction that commits on exit, rolls back on error.

        SQLite: a task cancelled meanwhile (a background loop stopped) leaves the database
        as it found it. Through SQLAlchemy's async layer, a cancellation that lands while
        a statement is on its way to aiosqlite's thread could leave that connection in
        its transaction, holding SQLite's write lock for good (every later writer then
        fails "database is locked"); here each statement, the commit and the rollback run
        to their end, and the cancellation is raised after them.
        """
        async with self._guarded():
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    yield conn
            else:
                async with self._write_lock, _Finishing(self.engine) as conn:
                    transaction = conn.begin()
                    await _finish(transaction.start())
                    try:
                        yield conn
                    except BaseException:
                        await _finish(transaction.rollback())
                        raise
                    await _finish(transaction.commit())

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._guarded(), self.engine.connect() as conn:
            yield conn

    @property
    def pg_lane(self) -> bool:
        """Whether :meth:`pg_write` and :meth:`pg_read` are available (PostgreSQL)."""
        return self.dialect == "postgresql"

    @contextlib.asynccontextmanager
    async def pg_write(self) -> AsyncIterator[Any]:
        """PostgreSQL: an asyncpg connection in a transaction that commits on exit and rolls
        back on error.

        The hot statements of the distributed worker (the archive, the state commit) run
        here with their parameters as arrays or through asyncpg's ``executemany``, compiled
        once (:mod:`recloop.adapters.sql.pg`): through SQLAlchemy every row is a mapping
        processed in Python, and a multi-row ``VALUES`` is a new statement for PostgreSQL
        to parse and plan whenever the number of rows changes. The connections come from
        a small asyncpg pool of their own, opened at the first call: SQLAlchemy's pool
        pings every connection it lends (``BEGIN``, a query, ``ROLLBACK``: three round
        trips before each transaction). Without the ping, a connection that the server
        closed fails its call (a :class:`~recloop.core.errors.TransientError`, retried
        like any other) and the pool replaces it. The breaker is :meth:`write`'s.
        """
        async with self._guarded(), _plain_errors():
            pool = await self._pg_pool()
            async with pool.acquire() as conn, conn.transaction():
                yield conn

    @contextlib.asynccontextmanager
    async def pg_read(self) -> AsyncIterator[Any]:
        """PostgreSQL: an asyncpg connection of :meth:`pg_write`'s pool, for reads."""
        async with self._guarded(), _plain_errors():
            pool = await self._pg_pool()
            async with pool.acquire() as conn:
                yield conn

    async def _pg_pool(self) -> Any:
        if self._pg is None:
            import asyncpg

            async with self._pg_opening:
                if self._pg is None:
                    dsn = self.engine.url.set(drivername="postgresql")
                    self._pg = await asyncpg.create_pool(
                        dsn.render_as_string(hide_password=False),
                        min_size=1,
                        max_size=PG_LANE_CONNECTIONS,
                        timeout=PG_CONNECT_TIMEOUT,
                    )
        return self._pg

    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        """The breaker around one call: refused while it is open, told how the call went."""
        self._enter()
        try:
            yield
        except BaseException as exc:
            error = self._failed(exc)
            if error is exc:
                raise
            raise error from exc
        self.breaker.success()

    def _enter(self) -> None:
        """Refuse the call if the breaker is open."""
        if not self.breaker.allow():
            raise CircuitOpen(self.breaker.name, self.breaker.retry_after())

    def _failed(self, exc: BaseException) -> BaseException:
        """Report a call that raised ``exc`` to the breaker; the exception to raise."""
        if isinstance(exc, Unavailable) or not isinstance(exc, Exception):
            # Reported already (a nested call) or refused; or cancelled: no verdict here.
            self.breaker.release()
            return exc
        if not _unreachable(exc):
            self.breaker.success()  # the database answered, with an error of its own
            return exc
        self.breaker.failure()
        return TransientError(self.breaker.name, f"{type(exc).__name__}: {exc}")

    async def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with Alembic."""
        async with self.write() as conn:
            await conn.run_sync(_upgrade, revision)

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        loop = asyncio.get_running_loop()
        for pool, conn in ((self._writer, self._raw_write), (self._reader, self._raw_read)):
            if pool is not None:
                if conn is not None:
                    await loop.run_in_executor(pool, conn.close)
                pool.shutdown(wait=True)
        self._writer = self._reader = None
        self._raw_write = self._raw_read = None
        if self._raw_point is not None:
            self._raw_point.close()
            self._raw_point = None
        pg, self._pg = self._pg, None
        if pg is not None:
            await pg.close()
        await self.engine.dispose()


class _Finishing(AsyncConnection):
    """An AsyncConnection whose statements run to their end if the task is cancelled
    (:meth:`SqlDatabase.write` on SQLite)."""

    async def execute(
        self, statement: Any, parameters: Any = None, *, execution_options: Any = None
    ) -> Any:
        run = super().execute(statement, parameters, execution_options=execution_options)
        return await _finish(run)

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await _finish(super().run_sync(fn, *args, **kwargs))


async def _finish(work: Coroutine[Any, Any, T]) -> T:
    """``await work`` in a task of its own, to its end even if the caller is cancelled
    meanwhile; then the cancellation is raised (and wins over the work's own error).

    >>> async def main() -> list[str]:
    ...     done: list[str] = []
    ...     async def work() -> None:
    ...         await asyncio.sleep(0.01)
    ...         done.append("work")
    ...     caller = asyncio.create_task(_finish(work()))
    ...     await asyncio.sleep(0)
    ...     caller.cancel()
    ...     try:
    ...         await caller
    ...     except asyncio.CancelledError:
    ...         done.append("cancelled")
    ...     return done
    >>> asyncio.run(main())
    ['work', 'cancelled']
    """
    task = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})  # unlike wait_for, never cancels the task
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the caller's cancellation is what it sees
        raise cancelled
    return task.result()


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused ``exc``'s statement for a lock held elsewhere."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))
    return "locked" in str(exc) or "busy" in str(exc)


@contextlib.asynccontextmanager
async def _plain_errors() -> AsyncIterator[None]:
    """The database's errors as SQLAlchemy shows them: the message without its ``DETAIL``,
    which quotes the row's values (a user id refused by a constraint would reach the log);
    the same exception type, the original not chained."""
    import asyncpg

    try:
        yield
    except asyncpg.PostgresError as exc:
        if not getattr(exc, "detail", None):
            raise
        plain = type(exc)(exc.args[0] if exc.args else type(exc).__name__)
        raise plain from None


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database was not reached (or the connection was lost, or
    SQLite's write lock stayed taken past ``busy_timeout``), rather than that it answered
    with an error of the data's own."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError | sa_exc.TimeoutError):  # OSError: TimeoutError too
            return True
        if isinstance(error, sqlite3.OperationalError) and _busy(error):
            return True  # SQLite's lock held elsewhere past busy_timeout: not the data's fault
        if isinstance(error, sa_exc.DBAPIError) and (
            error.connection_invalidated or isinstance(error, sa_exc.InterfaceError)
        ):
            return True
        if type(error).__module__.startswith("asyncpg") and _asyncpg_unreachable(error):
            return True
        orig = getattr(error, "orig", None)
        error = orig if isinstance(orig, BaseException) else error.__cause__
    return False


def _asyncpg_unreachable(error: BaseException) -> bool:
    import asyncpg.exceptions as pg  # type: ignore[import-untyped]

    return isinstance(
        error,
        pg.InterfaceError  # "connection is closed"
        | pg.PostgresConnectionError  # class 08: connection exceptions
        | pg.OperatorInterventionError  # shutting down, starting up (cannot connect now)
        | pg.TooManyConnectionsError,
    )


def _upgrade(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
