"""A durable local spool in front of the Kafka producer, for when Kafka is down.

::

    append ──▶ KafkaEventLog.append (acks=all) ──acknowledged──▶ positions
       │  Unavailable, or slower than send_timeout,
       │  or the spool already holds events
       ▼
    SQLite spool file ──▶ drain task (every retry_seconds) ──▶ KafkaEventLog.append
    (WAL, synchronous=FULL)        chunk by chunk, in spool order;
                                   a chunk is deleted once acknowledged

An API instance of the distributed deployment appends through
:class:`SpooledEventLog` instead of a bare
:class:`~recloop.adapters.kafka.KafkaEventLog`, so it keeps accepting
feedback through a Kafka outage.

Guarantees and where they come from
-----------------------------------
- *Durable*: :meth:`SpooledEventLog.append` returns only once every event is
  acknowledged by Kafka or written to the spool in a committed SQLite
  transaction (``synchronous=FULL``: the commit is on disk).
- *In order per user*: once the spool holds anything, every new append goes to
  the spool, behind it, until the drain task has replayed the spool to Kafka
  (in the order of the spool's autoincrement id) and emptied it. Deciding
  "direct or spool" and writing to the spool happen under one lock, and a
  chunk leaves the spool only once Kafka acknowledged it, so an append sent
  directly never overtakes an event spooled before it began.
- *At least once, not exactly once*: a batch that failed or timed out may
  have partly reached Kafka before it was spooled whole (what the producer
  still holds of it is sent ahead of the spool's copy), and a drained chunk
  whose acknowledgement was lost is sent again. Either way an ``event_id`` can
  be in the topic twice; consumers drop the repeat by ``event_id`` (see
  :mod:`recloop.adapters.kafka.log`). One gap remains with a producer that is
  not idempotent: if it expires an earlier batch of a partition and then
  delivers a later one, the later events' first copies come before the
  earlier events' spooled copies. An idempotent producer never expires a batch.
- *Survives restarts*: the spool is a file. :meth:`SpooledEventLog.start`
  drains what a previous process left in it; :meth:`SpooledEventLog.stop`
  tries one last drain within ``send_timeout`` and leaves the rest in the file.

One process per spool file: two instances draining the same file would both
send its events (duplicates, and no order between them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

import orjson

from recloop.adapters.kafka.log import KafkaEventLog, KafkaPosition
from recloop.core.errors import ConfigError, Unavailable
from recloop.core.events import Event
from recloop.core.records import dumps as encode_record

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order events are sent to Kafka in
    record BLOB NOT NULL                   -- orjson of Event.to_record()
)
"""


class SpooledEventLog:
    """Appends events to Kafka, or to a local SQLite spool while Kafka cannot take them.

    It owns ``kafka``: :meth:`start` starts it and :meth:`stop` stops it. If
    Kafka is down at start, it starts anyway (appends go to the spool) and
    keeps trying to connect every ``retry_seconds``.

    Parameters
    ----------
    kafka
        The producer events go to.
    spool_path
        The SQLite file of the spool; created (with its directory) if missing.
    retry_seconds
        How long the drain task waits after a failed attempt before the next.
    send_timeout
        How long a direct append may take before its batch goes to the spool;
        also how long Kafka's start, and :meth:`stop`'s last drain, may take.
    chunk_size
        How many spooled events the drain sends to Kafka at a time.

    Attributes
    ----------
    last_error
        The last failure to reach Kafka (or the spool) as ``"Type: message"``;
        None until the first one, and kept after recovery.

    Notes
    -----
    A drain attempt is not cut short by ``send_timeout``: it waits for
    ``KafkaEventLog.append`` to succeed or fail (the producer gives up on a
    batch after ``request_timeout_ms``, or, when idempotent, keeps retrying
    until Kafka is back). Cancelling it would leave the chunk queued in the
    producer, and every retry would queue another copy.

    Examples
    --------
    ::

        spooled = SpooledEventLog(KafkaEventLog(config), "/var/lib/recloop/spool.db")
        await spooled.start()
        positions = await spooled.append(events)  # None for each event that was spooled
        await spooled.stop()
    """

    def __init__(
        self,
        kafka: KafkaEventLog,
        spool_path: str | Path,
        retry_seconds: float = 1.0,
        send_timeout: float = 5.0,
        *,
        chunk_size: int = 500,
    ) -> None:
        for name, value in (("retry_seconds", retry_seconds), ("send_timeout", send_timeout)):
            if not value > 0:
                raise ConfigError(f"Spool '{name}' must be > 0, got {value}.")
        if chunk_size < 1:
            raise ConfigError(f"Spool 'chunk_size' must be >= 1, got {chunk_size}.")
        self.kafka = kafka
        self.spool_path = Path(spool_path)
        self.retry_seconds = retry_seconds
        self.send_timeout = send_timeout
        self.chunk_size = chunk_size
        self.last_error: str | None = None
        # Changed only in the spool's thread (single writer); the loop reads it.
        self._spooled = 0
        self._replayed = 0  # events drained since the spool last became non-empty
        self._connected = False  # kafka.start() succeeded
        self._failing = False  # the last attempt to reach Kafka failed
        self._closing = False
        self._lock = asyncio.Lock()  # "direct or spool" and writes to the spool
        self._wake = asyncio.Event()  # something to drain or connect, or stop() was called
        self._stopping = asyncio.Event()  # cuts the drain's retry pause short
        self._task: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    @property
    def spooled(self) -> int:
        """How many events wait in the spool for Kafka."""
        return self._spooled

    @property
    def degraded(self) -> bool:
        """Whether events wait in the spool or the last attempt to reach Kafka failed."""
        return self._spooled > 0 or self._failing or not self._connected

    async def start(self) -> None:
        """Open the spool, connect to Kafka if it answers, and start the drain task.

        Events a previous process left in the spool are drained first: until
        they are in Kafka, new appends queue behind them.

        Raises
        ------
        Unavailable
            if the spool file cannot be opened (Kafka being down is no error).
        """
        if self._task is not None:
            return
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-spool")
        try:
            await self._in_thread(self._open)
        except BaseException:
            await self._close_spool()
            raise
        if self._spooled:
            log.warning(
                "%d events left in spool %s by an earlier run: replaying them to Kafka",
                self._spooled,
                self.spool_path,
            )
        try:
            await self._connect()
        except (Unavailable, TimeoutError) as exc:
            self._failed(exc, "Kafka is unavailable at start, appends go to the spool")
        except BaseException:
            await self._close_spool()
            raise
        self._closing = False
        self._stopping.clear()
        self._wake.set()
        self._task = asyncio.create_task(self._drain_forever(), name="kafka-spool-drain")

    async def stop(self) -> None:
        """Try one last drain (within ``send_timeout``), stop Kafka and close the spool.

        What is not drained by then stays in the spool file for the next
        :meth:`start`. Call it after the last :meth:`append` has returned.

        Stopping the producer waits for the batches it still holds: while
        Kafka is down, up to ``request_timeout_ms`` for a producer that is not
        idempotent, and until Kafka is back for one that is (aiokafka never
        expires an idempotent batch). Those events are in the spool already.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait({task}, timeout=self.send_timeout)
        finally:
            task.cancel()  # no-op if it is done
            await asyncio.gather(task, return_exceptions=True)
        if self._spooled:
            log.warning(
                "%d events stay in spool %s until the next start", self._spooled, self.spool_path
            )
        try:
            await self.kafka.stop()
        finally:
            async with self._lock:
                await self._close_spool()
            self._connected = False

    async def append(self, events: Sequence[Event]) -> list[KafkaPosition | None]:
        """Make ``events`` durable: acknowledged by Kafka, or else committed to the spool.

        The whole batch goes one way: to Kafka if the spool is empty and
        Kafka acknowledges every event within ``send_timeout``; otherwise to
        the spool (behind what it already holds), from where the drain task
        sends it once Kafka is back. Part of a batch that failed may have
        reached Kafka too; consumers drop the repeats by ``event_id``.

        Returns
        -------
        list[KafkaPosition | None]
            Each event's position, in the order of ``events``; None for every
            event of a batch that went to the spool.

        Raises
        ------
        Unavailable
            if neither Kafka nor the spool took the batch (e.g. the disk is full).
        RuntimeError
            if the log is not started (or is stopping).
        """
        if self._task is None or self._closing:
            raise RuntimeError("SpooledEventLog is not started: call start() first")
        if not events:
            return []
        async with self._lock:
            direct = self._connected and self._spooled == 0
            if not direct:
                await self._spool(events)
                return [None] * len(events)
        try:
            async with asyncio.timeout(self.send_timeout):
                positions = await self.kafka.append(events)
        except (Unavailable, TimeoutError) as exc:
            self._failed(exc, "Kafka did not take a batch")
            async with self._lock:
                await self._spool(events)
            return [None] * len(events)
        self._failing = False
        return list(positions)

    async def delete_user(self, user_id: str) -> int:
        """Delete the spooled events of ``user_id`` (an erasure); how many were deleted.

        Events of the user already sent to Kafka, or in the chunk being sent right
        now, stay in the topic: workers skip them by the user's tombstone.
        """
        if self._thread is None:
            return 0
        async with self._lock:
            return await self._in_thread(self._delete_user, user_id)

    # -- the drain task ------------------------------------------------------

    async def _drain_forever(self) -> None:
        """Connect and drain whenever there is something to do; retry after failures."""
        while True:
            if self._spooled == 0 and (self._connected or self._closing):
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._connect()
                await self._drain()
            except Exception as exc:  # Kafka down, or a spool error: both retried
                self._failed(exc, "could not drain the spool")
                if self._closing:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.retry_seconds):
                        await self._stopping.wait()

    async def _connect(self) -> None:
        if self._connected:
            return
        async with asyncio.timeout(self.send_timeout):
            await self.kafka.start()
        self._connected = True
        self._failing = False
        log.info("connected to Kafka at %s", self.kafka.config.bootstrap_servers)

    async def _drain(self) -> None:
        """Send the spool to Kafka chunk by chunk, oldest first, until it is empty."""
        while True:
            rows = await self._in_thread(self._oldest, self.chunk_size)
            if not rows:
                return
            events = [Event.from_record(orjson.loads(record), -1) for _, record in rows]
            await self.kafka.append(events)
            self._failing = False
            await self._in_thread(self._delete_through, rows[-1][0])
            self._replayed += len(rows)
            if self._spooled == 0:
                log.info(
                    "spool drained: %d events replayed to Kafka, appending directly again",
                    self._replayed,
                )
                self._replayed = 0

    def _failed(self, exc: BaseException, what: str) -> None:
        if isinstance(exc, TimeoutError):
            self.last_error = f"TimeoutError: no answer within {self.send_timeout}s"
        else:
            self.last_error = f"{type(exc).__name__}: {exc}"
        if not self._failing:
            log.warning("%s: %s", what, self.last_error)
        else:
            log.debug("%s: %s", what, self.last_error)
        self._failing = True

    # -- the spool file (every call runs in the spool's one thread) ---------------

    async def _spool(self, events: Sequence[Event]) -> None:
        """Commit ``events`` to the spool. Call with ``_lock`` held."""
        records = [encode_record(e.to_record()) for e in events]
        first = self._spooled == 0
        try:
            await self._in_thread(self._insert, records)
        except sqlite3.Error as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise Unavailable(
                f"Kafka did not take {len(records)} events and spool {self.spool_path}"
                f" could not store them: {exc}"
            ) from exc
        if first:
            log.warning(
                "spooling events to %s until Kafka takes them again (%s)",
                self.spool_path,
                self.last_error,
            )
        self._wake.set()

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        if self._thread is None:
            raise RuntimeError("SpooledEventLog is not started: call start() first")
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(fn, *args))

    async def _close_spool(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(thread, self._close)
        finally:
            thread.shutdown(wait=False)

    def _open(self) -> None:
        try:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.spool_path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise Unavailable(f"spool {self.spool_path} cannot be opened: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            (count,) = db.execute("SELECT count(*) FROM spool").fetchone()
        except sqlite3.Error as exc:
            db.close()
            raise Unavailable(f"spool {self.spool_path} cannot be opened: {exc}") from exc
        self._db, self._spooled = db, int(count)

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _insert(self, records: list[bytes]) -> None:
        db = self._open_db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO spool (record) VALUES (?)", [(r,) for r in records])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._spooled += len(records)

    def _oldest(self, limit: int) -> list[tuple[int, bytes]]:
        sql = "SELECT id, record FROM spool ORDER BY id LIMIT ?"
        rows = self._open_db().execute(sql, (limit,)).fetchall()
        return [(int(i), bytes(r)) for i, r in rows]

    def _delete_through(self, last_id: int) -> None:
        # Spool ids only grow, so these are exactly the rows read (and sent) before.
        deleted = self._open_db().execute("DELETE FROM spool WHERE id <= ?", (last_id,)).rowcount
        self._spooled -= deleted

    def _delete_user(self, user_id: str) -> int:
        db = self._open_db()
        rows = db.execute("SELECT id, record FROM spool ORDER BY id").fetchall()
        doomed = [(i,) for i, record in rows if orjson.loads(record).get("user_id") == user_id]
        if not doomed:
            return 0
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = db.executemany("DELETE FROM spool WHERE id = ?", doomed).rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._spooled -= deleted
        return int(deleted)

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the spool is closed")
        return self._db
