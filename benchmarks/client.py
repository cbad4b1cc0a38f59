"""A minimal keep-alive HTTP/1.1 client over asyncio streams, for 127.0.0.1 only.

The load generator shares the machine's two cores with the server, so every
microsecond it spends per request is taken from the server being measured.
httpx costs several times more CPU per request than this client, which does
only what the benchmarks need: one request at a time per connection, JSON
bodies, ``Content-Length`` framed responses.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import orjson

HOST: Final = "127.0.0.1"
"""The only address a benchmark ever sends traffic to."""


class ProtocolError(Exception):
    """The server answered something this client does not parse."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Connection:
    """One keep-alive connection to ``127.0.0.1:port``, opened on first use.

    A request that fails or times out closes the connection, so the next one
    starts on a fresh socket rather than reading a stale response.
    """

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self._port = port
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def request(self, method: str, path: str, body: bytes = b"") -> Response:
        """Send one request and read its whole response."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._exchange(method, path, body)
        except BaseException:
            self._drop()
            raise

    async def post_json(self, path: str, payload: Any) -> Response:
        return await self.request("POST", path, orjson.dumps(payload))

    async def close(self) -> None:
        writer = self._drop()
        if writer is not None:
            with contextlib.suppress(OSError):  # the server may have closed first
                await writer.wait_closed()

    def _drop(self) -> asyncio.StreamWriter | None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
        return writer

    async def _exchange(self, method: str, path: str, body: bytes) -> Response:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self._port)
        reader, writer = self._reader, self._writer
        head = (
            f"{method} {path} HTTP/1.1\r\n"
            f"Host: {HOST}:{self._port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        status_line, _, headers = (await reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise ProtocolError(f"bad status line {status_line!r}") from None
        length, keep_alive = 0, True
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise ProtocolError("chunked responses are not supported")
            elif name == b"connection":
                keep_alive = value.strip().lower() != b"close"
        response = Response(status, await reader.readexactly(length))
        if not keep_alive:
            self._drop()
        return response
