"""``adapters.redis.packing`` writes the bytes redis-py's own asyncio packer writes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from recloop.adapters.redis.packing import pack_command, with_fast_packing

ARGUMENT = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False),
    st.binary(min_size=7_000, max_size=7_000),  # past redis-py's buffer cutoff
    st.binary(max_size=20).map(memoryview),
)
COMMAND = st.sampled_from(["EVALSHA", "SET", "CONFIG GET", b"EVALSHA", b"CLIENT SETNAME"])


def oracle(connection: Connection, args: tuple[Any, ...]) -> bytes:
    return b"".join(bytes(chunk) for chunk in Connection.pack_command(connection, *args))


@settings(max_examples=300)
@given(command=COMMAND, args=st.lists(ARGUMENT, max_size=40))
def test_same_bytes_as_redis_py(command: str | bytes, args: list[Any]) -> None:
    connection = Connection(encoding="utf-8")
    full = (command, *args)
    assert b"".join(pack_command(connection, full)) == oracle(connection, full)


def test_large_script_call_and_other_encodings() -> None:
    keys = [f"recloop:{{LIMITER/explicit/user-{n}/60/1/minute}}" for n in range(3_000)]
    full = ("EVALSHA", "a" * 40, len(keys), *keys, 0, *range(3_000))
    for connection in (Connection(), Connection(encoding="latin-1", encoding_errors="replace")):
        assert b"".join(pack_command(connection, full)) == oracle(connection, full)
    latin = Connection(encoding="latin-1", encoding_errors="replace")
    assert oracle(latin, ("SET", "ü€", 1)) == b"".join(pack_command(latin, ("SET", "ü€", 1)))


@pytest.mark.parametrize("bad", [True, None, object()])
def test_what_redis_py_refuses_is_refused(bad: Any) -> None:
    connection = Connection()
    with pytest.raises(DataError):
        oracle(connection, ("SET", "k", bad))
    with pytest.raises(DataError):
        pack_command(connection, ("SET", "k", bad))


async def test_a_client_packs_with_it() -> None:
    client = with_fast_packing(Redis.from_url("redis://127.0.0.1:1/0"))
    try:
        connection = client.connection_pool.make_connection()
        assert connection.pack_command("SET", "k", 1) == [
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n"
        ]
        assert isinstance(connection, Connection)
    finally:
        await client.aclose()
