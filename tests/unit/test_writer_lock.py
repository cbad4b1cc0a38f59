"""``adapters.sql.writer_lock``: one writer per embedded database file."""

from __future__ import annotations

from pathlib import Path

import pytest

from recloop.adapters.sql.writer_lock import WriterBusy, WriterLock, sqlite_file


def test_a_second_writer_is_refused_naming_the_first_until_it_lets_go(tmp_path: Path) -> None:
    database = tmp_path / "data" / "recloop.db"
    server = WriterLock(database, "recloop serve")
    server.acquire()
    importer = WriterLock(database, "recloop import")
    with pytest.raises(WriterBusy, match=r"recloop serve \(pid \d+, since .*\) is writing"):
        importer.acquire()
    server.release()
    importer.acquire()  # free again
    with pytest.raises(WriterBusy, match="recloop import"):
        server.acquire()
    importer.release()


def test_only_sqlite_files_have_a_lock() -> None:
    assert WriterLock.of("memory://", "x") is None
    assert WriterLock.of("sqlite+aiosqlite:///:memory:", "x") is None
    assert WriterLock.of("postgresql+asyncpg://postgres@127.0.0.1/recloop", "x") is None
    assert sqlite_file("sqlite+aiosqlite:////var/lib/recloop/recloop.db") == Path(
        "/var/lib/recloop/recloop.db"
    )
