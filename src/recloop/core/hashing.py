"""Stable hashing: signed feature hashing of item attributes into vectors.

Python's ``hash()`` is salted per process, so everything here uses BLAKE2b,
which gives the same vector on every machine and every run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from recloop.core.errors import InvalidInput
from recloop.core.preferences import Vector


def _tokens(attributes: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    for key, value in attributes.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            yield f"{name}={str(value).lower()}", 1.0
        elif isinstance(value, int | float):
            if math.isfinite(value) and value != 0:
                yield name, float(value)
        elif isinstance(value, str):
            yield f"{name}={value}", 1.0
        elif isinstance(value, list | tuple):
            for element in value:
                if isinstance(element, Mapping):
                    yield from _tokens(element, f"{name}.")
                else:
                    yield f"{name}={element}", 1.0
        elif isinstance(value, Mapping):
            yield from _tokens(value, f"{name}.")
        # None and anything else carry no feature.


def _bucket(token: str, dim: int) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    return h % dim, (1.0 if (h >> 63) == 0 else -1.0)


def hash_features(attributes: Mapping[str, Any], dim: int) -> Vector | None:
    """A unit vector from ``attributes`` by signed feature hashing, or None if they carry none.

    Strings and booleans become one-hot tokens ``key=value``; numbers weight
    the token ``key``; lists contribute each element; nested mappings are
    flattened with dotted keys. The sign bit keeps collisions unbiased
    (Weinberger et al., 2009).

    >>> v = hash_features({"genre": ["jazz", "soul"], "year": 1972}, 16)
    >>> round(float(np.linalg.norm(v)), 12)
    1.0
    >>> bool(np.array_equal(v, hash_features({"year": 1972, "genre": ["jazz", "soul"]}, 16)))
    True
    >>> hash_features({}, 16) is None
    True
    """
    vector = np.zeros(dim)
    # Sorted, so that the floating-point sums do not depend on key order.
    for token, weight in sorted(_tokens(attributes)):
        index, sign = _bucket(token, dim)
        vector[index] += sign * weight
    return _normalised(vector)


def has_features(attributes: Mapping[str, Any]) -> bool:
    """Whether ``attributes`` hold anything :func:`hash_features` can use.

    >>> has_features({"note": None}), has_features({"genre": "jazz"})
    (False, True)
    """
    return any(True for _ in _tokens(attributes))


def _normalised(vector: Vector) -> Vector | None:
    """``vector`` at unit length, or None if it is zero or not finite.

    Scaled by its largest magnitude first, so that neither huge (1e200) nor tiny
    (1e-200) finite values overflow or underflow the norm.
    """
    if not np.all(np.isfinite(vector)):
        return None
    peak = float(np.max(np.abs(vector)))
    if peak == 0.0:
        return None
    scaled = vector / peak
    return scaled / float(np.linalg.norm(scaled))


def unit_vector(values: list[float] | Vector, dim: int, field: str = "vector") -> Vector:
    """``values`` scaled to unit length, refusing a wrong length, NaN, inf or zero.

    >>> unit_vector([3.0, 4.0], 2).tolist()
    [0.6, 0.8]
    """
    vector = np.asarray(values, dtype=np.float64)
    if vector.shape != (dim,):
        raise InvalidInput(field, f"must have exactly {dim} numbers, got {vector.size}")
    if not np.all(np.isfinite(vector)):
        raise InvalidInput(field, "must not contain NaN or infinity")
    unit = _normalised(vector)
    if unit is None:
        raise InvalidInput(field, "must not be all zeros")
    return unit
