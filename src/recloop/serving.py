"""uvicorn's server, saying where it listens once it does."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn


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
