"""A TCP proxy for tests that cut a client off a server, then let it back.

::

    proxy = TcpProxy("127.0.0.1", server_port)
    proxy.start()           # listens on proxy.address (127.0.0.1, a free port)
    proxy.cut()             # drops every connection; new ones are closed at once
    proxy.restore()         # forwards again
    proxy.stop()

It runs in a thread with an event loop of its own, so sync and async tests
call it the same way; each method returns once the proxy's loop has done it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from tests.conftest import free_port

T = TypeVar("T")

CALL_TIMEOUT = 10.0  # seconds: a hang guard for each call into the proxy's loop
READ_SIZE = 64 * 1024


class TcpProxy:
    """Forwards connections to ``target_host:target_port`` until :meth:`cut`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = free_port()
        self.accepted = 0  # connections forwarded so far
        self._is_cut = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Listen on :attr:`address`, forwarding (not cut)."""
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"tcp-proxy-{self.port}")
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            self._call(self._listen())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Close every connection and the listener, and end the thread. Safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._close())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CALL_TIMEOUT)
            loop.close()
            self._loop = self._thread = None

    def cut(self) -> None:
        """Drop every open connection; close each new one as soon as it is accepted."""
        self._call(self._sever())

    def restore(self) -> None:
        """Forward new connections again."""
        self._call(self._allow())

    # -- in the proxy's loop -------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("TcpProxy is not started: call start() first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def _allow(self) -> None:
        self._is_cut = False

    async def _sever(self) -> None:
        self._is_cut = True
        for pair in list(self._links):
            for writer in pair:
                writer.transport.abort()
        await self._settle()

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        await self._sever()
        await asyncio.get_running_loop().shutdown_default_executor()

    async def _settle(self) -> None:
        """Wait until every connection handler has finished."""
        handlers = [t for t in self._handlers if t is not asyncio.current_task()]
        if handlers:
            await asyncio.wait(handlers, timeout=CALL_TIMEOUT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self._is_cut:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                return
            pair = (writer, up_writer)
            self._links.add(pair)
            try:
                if self._is_cut:  # cut while connecting
                    return
                self.accepted += 1
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                self._links.discard(pair)
                up_writer.close()
        finally:
            writer.close()  # after a cut: already aborted; else sends what is buffered, then FIN
            self._handlers.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until either side closes; then close ``writer``
    (which ends the other direction too: its reader sees the connection lost)."""
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except OSError:  # ConnectionResetError and friends: the link is gone
        pass
    finally:
        writer.close()
