"""The embedded deployment's writer lock: one process writes a SQLite file's event log.

An embedded ``recloop serve`` applies the events it logs in its own process, from an
in-memory queue and arrays of user state; a second process writing the same file (an
embedded ``recloop import``, another server) would append events the first never
applies and overwrite its checkpoints. So each of them holds an advisory lock
(``flock``) on ``FILE.writer.lock`` beside the database while it runs: the second
one finds it held and refuses, naming the holder (its pid and command, written into
the lock file). The operating system releases the lock when its process exits,
however it exits, so a crash leaves no stale lock behind.

Readers (``recloop train``, the client commands) take no lock.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

if sys.platform != "win32":
    import fcntl


class WriterBusy(RuntimeError):
    """Another process holds the database's writer lock; the message says which."""


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL, or None (another database, or SQLite in memory).

    >>> sqlite_file("sqlite+aiosqlite:///data/recloop.db"), sqlite_file("memory://")
    (PosixPath('data/recloop.db'), None)
    >>> sqlite_file("postgresql+asyncpg://postgres@127.0.0.1/recloop") is None
    True
    """
    if url.startswith("memory:"):
        return None
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None
    return Path(database)


def lock_path(database: Path) -> Path:
    """``FILE.writer.lock`` beside the database file.

    >>> lock_path(Path("data/recloop.db")).name
    'recloop.db.writer.lock'
    """
    return database.with_name(f"{database.name}.writer.lock")


class WriterLock:
    """The writer lock of one SQLite file, held from :meth:`acquire` to :meth:`release`
    (or the process's exit). ``holder`` says who holds it (``recloop serve``...)."""

    @classmethod
    def of(cls, url: str, holder: str) -> WriterLock | None:
        """The lock of the SQLite file ``url`` names; None for any other database."""
        database = sqlite_file(url)
        return None if database is None else cls(database, holder)

    def __init__(self, database: Path, holder: str) -> None:
        self.database = database
        self.path = lock_path(database)
        self._holder = holder
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`WriterBusy` naming who holds it."""
        if self._file is not None or sys.platform == "win32":  # no flock there: unchecked
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise WriterBusy(f"{holder} is writing {self.database}") from None
        except BaseException:
            file.close()
            raise
        file.seek(0)
        file.truncate()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        file.write(f"{self._holder} (pid {os.getpid()}, since {stamp})\n")
        file.flush()
        self._file = file

    def release(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.seek(0)
                file.truncate()
            file.close()  # closing the descriptor releases the flock
