"""JSON responses serialised by orjson (numpy-free, fast on the hot path)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse
from starlette.types import Send


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def send_json(send: Send, status: int, content: Any) -> None:
    """``content`` as a JSON response, straight to ASGI: the messages and headers a
    :class:`FastJSONResponse` sends, without building one."""
    body = orjson.dumps(content)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
