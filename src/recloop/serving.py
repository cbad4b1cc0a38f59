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


class OneWrite:
    """A connection's transport whose writes go out together: what a response writes
    is held until the response is complete (or the loop's next turn, for a response
    still streaming), then written to the socket at once.

    uvicorn writes a response's head and its body apart; over loopback each write is
    a send of its own, with the kernel's work and a wake-up of the reader for each.
    Everything but ``write`` and ``close`` is the transport's own.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            held.append(bytes(data))

    def flush(self) -> None:
        """Write what is held (nothing if nothing is)."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

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
    """uvicorn's httptools protocol writing each response to the socket in one write
    (:class:`OneWrite`): its head and body, sent as soon as the body is complete."""

    transport: Any

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWrite(transport, self.loop))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.flush()
        super().on_response_complete()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the socket over: it gets the transport itself.
        self.transport.flush()
        self.transport = self.transport._transport
        super().handle_websocket_upgrade()
