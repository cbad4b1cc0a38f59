"""uvicorn's server, saying where it listens once it does, and writing each response once."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class AnnouncingServer(uvicorn.Server):
    """Once listening, tells ``say`` the URL and the API docs' URL, with the port it
    really got (``--port 0`` picks a free one)."""

    def __init__(self, config: uvicorn.Config, say: Callable[[str], object]) -> None:
        super().__init__(config)
        self._say = say

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            url = listening_url(self.config.host, self._bound_port())
            self._say(f"recloop is listening at {url} (API docs: {url}/docs)")

    def _bound_port(self) -> int:
        for listener in getattr(self, "servers", []):
            for sock in listener.sockets:
                return int(sock.getsockname()[1])
        return self.config.port


def listening_url(host: str, port: int) -> str:
    """The base URL of a server listening on ``host``:``port``.

    >>> listening_url("127.0.0.1", 8000), listening_url("::1", 80)
    ('http://127.0.0.1:8000', 'http://[::1]:80')
    """
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


_SIZED = b"\r\ncontent-length: "
"""In a response's head as uvicorn writes it (names lower-cased) when the body's size is set."""
_CONTINUE = b"HTTP/1.1 100 "


class OneWrite:
    """A connection's transport that writes a response of known size in one write: its
    head is held until its body (or its first piece) is written, and goes with it.

    uvicorn writes a response's head and its body apart; over loopback each write is a
    send of its own, with the kernel's work and a wake-up of the reader for each. A
    head without ``content-length`` (a streamed, chunked body) is written at once, as
    uvicorn does; a held head is written at the latest when the response completes
    (:meth:`response_done`: a HEAD request has no body to write) or the connection is
    closed. Everything else is the transport's own.
    """

    __slots__ = ("_head", "_next_is_head", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._next_is_head = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._next_is_head:
            data = bytes(data)
            if _SIZED in data:
                self._head = data
                self._next_is_head = False
                return
            # An interim "100 Continue" comes before the head.
            self._next_is_head = data.startswith(_CONTINUE)
        elif self._head is not None:
            data = self._head + data
            self._head = None
        self._transport.write(data)

    def response_done(self) -> None:
        """The response is complete: write its head if still held; the next write is the
        next response's head."""
        self.flush()
        self._next_is_head = True

    def flush(self) -> None:
        """Write the held head, if any."""
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing each response of known size to the socket in
    one write (:class:`OneWrite`)."""

    transport: Any

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWrite(transport))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.response_done()
        super().on_response_complete()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the socket over: it gets the transport itself.
        self.transport.flush()
        self.transport = self.transport._transport
        super().handle_websocket_upgrade()
