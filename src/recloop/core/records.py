"""Event records as JSON bytes, whatever numbers a free-form object holds.

msgspec reads a JSON integer of any size into a free-form ``context``; orjson, which
writes the event logs (SQL, Kafka, the spool), refuses one beyond 64 bits, and that
failure would fail every event committed with it. :func:`dumps` writes such an integer
as the nearest float (``null`` beyond a float's range), as orjson itself reads one back.
"""

from __future__ import annotations

import math
from typing import Any, Final

import orjson

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


def dumps(record: Any) -> bytes:
    """``orjson.dumps(record)``, integers beyond 64 bits written as floats.

    >>> dumps({"context": {"n": 2**70, "m": [10**400, 1]}})
    b'{"context":{"n":1.1805916207174113e+21,"m":[null,1]}}'
    """
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:
        return orjson.dumps(_within_64_bits(record))


def _within_64_bits(value: Any) -> Any:
    if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
        try:
            as_float = float(value)
        except OverflowError:
            return None
        return as_float if math.isfinite(as_float) else None
    if isinstance(value, dict):
        return {k: _within_64_bits(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_within_64_bits(v) for v in value]
    return value
