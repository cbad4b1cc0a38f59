"""JSON bodies of the documented routes: Python's parser, minus what no backend stores.

FastAPI reads a JSON body with ``Request.json()`` (Python's ``json``), which turns an
escaped lone surrogate (``"\\ud800"``, half of a UTF-16 pair) into a Python string
that cannot be encoded as UTF-8, and reads integers of any size, which orjson cannot
write: SQLite, PostgreSQL and orjson refuse them later, as a 500. Routes built by
:class:`StrictJsonRoute` refuse such a body as they parse it (a ``422`` "invalid
JSON", like any body that is not JSON); the lean rank route declines it to them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any, Final

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_DIGITS: Final = bytes(0x39 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER: Final = b"9" * 19  # -(2**63) - 1 has 19 digits, 2**64 has 20
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1
"""Integers JSON bodies may hold: what 64 bits hold, signed or not (orjson's range)."""


def may_hold_a_big_int(body: bytes) -> bool:
    """Whether the JSON text ``body`` may hold an integer beyond 64 bits: 19 digits in a row.

    >>> may_hold_a_big_int(b'{"a": 18446744073709551615}'), may_hold_a_big_int(b'[1.5, 2]')
    (True, False)
    """
    return _LONG_NUMBER in body.translate(_DIGITS)


def has_big_int(value: Any) -> bool:
    """Whether the decoded JSON ``value`` holds an integer outside [INT_MIN, INT_MAX].

    >>> has_big_int({"a": [1, {"b": 2**64}]}), has_big_int({"a": 2**64 - 1})
    (True, False)
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is int:
            if not INT_MIN <= item <= INT_MAX:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def has_lone_surrogate(value: Any) -> bool:
    """Whether a string in the decoded JSON ``value`` (keys included) holds a lone surrogate.

    >>> has_lone_surrogate(json.loads('{"a": ["x", {"\\\\ud800": 1}]}'))
    True
    >>> has_lone_surrogate(json.loads('{"a": "\\\\ud83d\\\\ude00"}'))  # a pair: one character
    False
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            value = json.loads(body)
            # Only an escape makes a surrogate (raw ones are not UTF-8): look when there is one.
            if b"\\u" in body and has_lone_surrogate(value):
                raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff)")
            if may_hold_a_big_int(body) and has_big_int(value):
                raise ValueError("an integer does not fit in 64 bits")
            self._json = value
        return self._json


class StrictJsonRoute(APIRoute):
    """An ``APIRoute`` whose JSON body is parsed by :class:`StrictJsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
