"""A fresh PostgreSQL database per test, on the server at 127.0.0.1:5432 (trust auth)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import service_unavailable

PG_DSN = os.environ.get("RECLOOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin(statement: str) -> None:
    """Run one statement on the server's maintenance database (in a thread of its own,
    so that it works whether or not the caller runs inside an event loop)."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of an empty database, dropped afterwards."""
    name = f"recloop_test_{uuid.uuid4().hex[:12]}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        service_unavailable("PostgreSQL", f"{PG_DSN}: {exc}")
    base = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
