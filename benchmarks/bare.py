"""The ceiling: a bare ASGI endpoint on the same server stack as ``recloop serve``.

It does the least any JSON ingest endpoint must do (read the body, parse it
with orjson, answer 202 with a small JSON body) and is served by
``uvicorn.run`` with the same arguments as ``recloop serve`` (see
``recloop.cli.serve``; the same protocol, ``recloop.serving.OneWriteProtocol``), so
the gap between the two is what recloop's framework, validation, durability and
learning cost per request.

Run it with ``python -m benchmarks.bare --port P``.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import uvicorn

from benchmarks.client import HOST
from recloop.serving import OneWriteProtocol

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ANSWER = orjson.dumps({"accepted": 1, "duplicates": 0, "rejected": 0})
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_ANSWER)).encode()),
]


async def app(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if body:  # a GET (the paced read ceiling) has none
        orjson.loads(body)
    await send({"type": "http.response.start", "status": 202, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(
        app,
        host=HOST,
        port=port,
        http=OneWriteProtocol,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
