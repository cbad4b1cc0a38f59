"""``recloop serve``'s HTTP protocol writes each response once, and writes what uvicorn writes.

uvicorn's own ``HttpToolsProtocol`` is the oracle: the same requests and the same
ASGI answers (fixed length, streamed, chunked, HEAD, pipelined, closing) go through
it and through :class:`~recloop.serving.OneWriteProtocol`, each on a transport that
records what it is given, and the bytes written must be the same. A response of known
size whose body is sent in one piece is one write; a chunked one is written as it goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from recloop.serving import OneWriteProtocol

Message = dict[str, Any]
App = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class RecordingTransport(asyncio.Transport):
    """A socket's stand-in: what is written, and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def answering(chunks: list[bytes], status: int, sized: bool, pause: bool) -> App:
    """An ASGI app answering ``status`` with ``chunks`` as its body, with a
    ``content-length`` if ``sized``, yielding to the loop between chunks if ``pause``."""

    async def app(scope: Message, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"application/json"), (b"x-request-id", b"abc")]
        if sized:
            headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for n, chunk in enumerate(chunks):
            if pause:
                await asyncio.sleep(0)
            last = n == len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})
        if not chunks:
            await send({"type": "http.response.body", "body": b""})

    return app


async def exchange(
    protocol_class: type[HttpToolsProtocol], app: App, requests: list[bytes]
) -> tuple[list[bytes], bool]:
    """Feed ``requests`` (all at once: pipelined) to a connection of ``protocol_class``
    serving ``app``; the writes its transport got, and whether it was closed."""
    config = Config(app=app, http=protocol_class, log_level="warning", proxy_headers=False)
    state = ServerState()
    state.default_headers = [(b"server", b"uvicorn")]  # no date: the same on both
    protocol = protocol_class(config=config, server_state=state, app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(b"".join(requests))
    for _ in range(200):  # until every request is answered
        await asyncio.sleep(0)
        if not state.tasks:
            break
    protocol.connection_lost(None)
    return transport.writes, transport.closed


def request(method: str = "GET", body: bytes = b"", close: bool = False) -> bytes:
    head = f"{method} /x HTTP/1.1\r\nhost: recloop\r\ncontent-length: {len(body)}\r\n"
    if close:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + body


async def test_a_sized_response_is_one_write() -> None:
    app = answering([b'{"a":1}'], 200, sized=True, pause=True)
    ours, _ = await exchange(OneWriteProtocol, app, [request()])
    theirs, _ = await exchange(HttpToolsProtocol, app, [request()])
    assert len(theirs) == 2  # uvicorn: the head, then the body
    assert ours == [b"".join(theirs)]
    assert ours[0].startswith(b"HTTP/1.1 200 OK\r\n") and ours[0].endswith(b'\r\n\r\n{"a":1}')
    pieces = answering([b'{"a":', b"1}"], 200, sized=True, pause=True)
    ours, _ = await exchange(OneWriteProtocol, pieces, [request()])
    assert len(ours) == 2 and ours[0].endswith(b'\r\n\r\n{"a":')  # the head with the first
    chunked = answering([b'{"a":1}'], 200, sized=False, pause=True)
    ours, _ = await exchange(OneWriteProtocol, chunked, [request()])
    theirs, _ = await exchange(HttpToolsProtocol, chunked, [request()])
    assert ours == theirs and len(ours) == 2  # a chunked head is not held


async def test_a_continue_goes_before_the_response_in_one_write() -> None:
    app = answering([b"ok"], 202, sized=True, pause=False)
    asking = (
        b"POST /x HTTP/1.1\r\nhost: recloop\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n{}"
    )
    ours, _ = await exchange(OneWriteProtocol, app, [asking])
    theirs, _ = await exchange(HttpToolsProtocol, app, [asking])
    assert b"".join(ours) == b"".join(theirs)
    assert ours[0] == b"HTTP/1.1 100 Continue\r\n\r\n" and len(ours) == 2


async def test_pipelined_responses_are_one_write_each() -> None:
    app = answering([b"ok"], 202, sized=True, pause=False)
    requests = [request("POST", b"{}"), request("POST", b"[]"), request(close=True)]
    ours, closed = await exchange(OneWriteProtocol, app, requests)
    theirs, their_close = await exchange(HttpToolsProtocol, app, requests)
    assert len(ours) == 3 and b"".join(ours) == b"".join(theirs)
    assert closed and their_close


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.lists(st.binary(max_size=40), max_size=4),
    status=st.sampled_from([200, 202, 204, 404, 422, 500]),
    sized=st.booleans(),
    pause=st.booleans(),
    method=st.sampled_from(["GET", "POST", "HEAD"]),
    close=st.booleans(),
    repeat=st.integers(1, 3),
)
def test_writes_what_uvicorn_writes(
    chunks: list[bytes],
    status: int,
    sized: bool,
    pause: bool,
    method: str,
    close: bool,
    repeat: int,
) -> None:
    """Any answer, sized or chunked, in pieces or not, to pipelined requests: the same
    bytes, in at most as many writes; one write per response of known size whose body
    comes in one piece."""
    if status == 204:
        chunks, sized = [], False
    app = answering(chunks, status, sized, pause)
    requests = [request(method, b"x" * n) for n in range(repeat - 1)] + [
        request(method, close=close)
    ]
    ours, our_close = asyncio.run(exchange(OneWriteProtocol, app, requests))
    theirs, their_close = asyncio.run(exchange(HttpToolsProtocol, app, requests))
    assert b"".join(ours) == b"".join(theirs)
    assert our_close == their_close
    assert len(ours) <= len(theirs)
    if len(chunks) <= 1 and sized:
        assert len(ours) == repeat
