"""Identifiers: the ones recloop generates, and the rule for the ones clients send.

Every id a client sends (user, item, event, experiment, impression, attribution ids)
must be storable and reachable on every backend: no control characters
(U+0000-U+001F, U+007F), which PostgreSQL refuses or logs mangle; and the ids that
appear in URL paths (users, items, experiments, impressions) hold no ``/`` either and
are not ``.`` or ``..`` (which clients and proxies resolve away), so that every per-id
endpoint (read, export, erase) can name them. The patterns below
are the one definition: the API's decoders and its OpenAPI document use them.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from typing import Final

from recloop.core.errors import InvalidInput

ID_MAX_LENGTH: Final = 128
"""The longest id accepted, in characters."""

_CONTROL: Final = r"\x00-\x1f\x7f"
ID_PATTERN: Final = rf"^[^{_CONTROL}]*$"
"""Any id: no control characters (a JSON Schema / ECMA-262 pattern)."""
PATH_ID_PATTERN: Final = rf"^(?!\.\.?$)[^{_CONTROL}/]*$"
"""An id that appears in URL paths: no control characters, no ``/``, not ``.`` or ``..``."""
ID_MESSAGE: Final = "must not contain control characters"
PATH_ID_MESSAGE: Final = "must not contain '/' or control characters, nor be '.' or '..'"


def python_pattern(pattern: str) -> str:
    """``pattern`` for Python's ``re.search``, whose ``$`` also matches before a final newline.

    >>> python_pattern(ID_PATTERN) == r"^[^\\x00-\\x1f\\x7f]*\\Z"
    True
    >>> re.search(python_pattern(ID_PATTERN), "a\\n") is None, re.search(ID_PATTERN, "a\\n") is None
    (True, False)
    """
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


_ANY: Final = re.compile(python_pattern(ID_PATTERN))
_PATH: Final = re.compile(python_pattern(PATH_ID_PATTERN))


def id_problem(value: str, in_path: bool = False) -> str | None:
    """What is wrong with ``value`` as an id, or None if nothing.

    ``in_path``: the id appears in URL paths (users, items, experiments, impressions).

    >>> id_problem("u-42"), id_problem("a/b"), id_problem("..", in_path=True)
    (None, None, "must not contain '/' or control characters, nor be '.' or '..'")
    >>> id_problem("a\\x00b")
    'must not contain control characters'
    """
    if in_path:
        return None if _PATH.search(value) else PATH_ID_MESSAGE
    return None if _ANY.search(value) else ID_MESSAGE


def check_id(field: str, value: str, in_path: bool = False) -> None:
    """Refuse ``value`` as the id in ``field`` if :func:`id_problem` finds something.

    Raises
    ------
    InvalidInput
        naming ``field``.

    >>> check_id("user_id", "u1")
    >>> check_id("event_id", "a\\nb")
    Traceback (most recent call last):
    ...
    recloop.core.errors.InvalidInput: event_id: must not contain control characters
    """
    problem = id_problem(value, in_path)
    if problem is not None:
        raise InvalidInput(field, problem)


def json_may_break_id_rule(body: bytes) -> bool:
    """Whether some string in the JSON text ``body`` may break the id rule.

    False guarantees that none does, so a decoder may skip checking each id: valid JSON
    holds a control character in a string only escaped (after a backslash) or as a raw
    DEL byte, a ``/`` raw or escaped, and the strings ``.`` and ``..`` as ``"."`` and
    ``".."``. Four searches of the body (``memchr`` for each of the three bytes), instead
    of a pattern per id or a copy of the body: the last for a string starting with a dot
    (``".``: a few harmless strings too, which are then checked in full). The ingest, the
    rank route and the import ask it of every body or line.

    >>> json_may_break_id_rule(b'{"user_id": "u1", "item_id": "i.1"}')
    False
    >>> json_may_break_id_rule(b'{"user_id": "a\\\\u0000"}'), json_may_break_id_rule(b'{"a": ".."}')
    (True, True)
    """
    return b"\\" in body or b"/" in body or b"\x7f" in body or b'".' in body


def uuid7(now_ns: int | None = None) -> str:
    """A UUID version 7 (RFC 9562): 48-bit Unix milliseconds, then random bits.

    Time-ordered, so generated event ids sort by arrival.

    >>> u = uuid.UUID(uuid7()); u.version, u.variant == uuid.RFC_4122
    (7, True)
    """
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
