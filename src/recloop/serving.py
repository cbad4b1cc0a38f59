"""uvicorn's server, saying where it listens once it does, and holding the embedded
database's writer lock (``adapters.sql.writer_lock``) while it runs."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn

from recloop.adapters.sql.writer_lock import WriterBusy, WriterLock


class AnnouncingServer(uvicorn.Server):
    """Once listening, tells ``say`` the URL and the API docs' URL, with the port it
    really got (``--port 0`` picks a free one).

    ``lock``: the embedded database's writer lock, taken before the application starts
    (another process writing the file, an import say, and the server does not start:
    ``fail`` is told why) and released after it stopped."""

    def __init__(
        self,
        config: uvicorn.Config,
        say: Callable[[str], object],
        lock: WriterLock | None = None,
        fail: Callable[[str], object] | None = None,
    ) -> None:
        super().__init__(config)
        self._say = say
        self._lock = lock
        self._fail = fail if fail is not None else say

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self._lock is not None:
            try:
                self._lock.acquire()
            except WriterBusy as exc:
                self._fail(f"error: {exc}: stop it first (one process writes an embedded database)")
                self.should_exit = True
                return
        await super().startup(sockets)
        if not self.started and self._lock is not None:
            self._lock.release()
        if self.started:
            url = listening_url(self.config.host, self._bound_port())
            self._say(f"recloop is listening at {url} (API docs: {url}/docs)")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            if self._lock is not None:
                self._lock.release()

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
