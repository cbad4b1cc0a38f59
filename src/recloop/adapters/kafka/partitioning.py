"""Kafka's default partitioner for a whole batch of keys at once (numpy).

Kafka's clients send a keyed message to partition ``(murmur2(key) & 0x7fffffff) %
partitions`` (the Java client's ``Utils.murmur2``, which aiokafka copies in pure Python,
:func:`aiokafka.partitioner.murmur2`). Computed one key at a time in Python that is a
loop of a dozen big-integer operations per four bytes of key: a few microseconds per
event, the largest single cost of the producer's path. Here the keys of a batch are
grouped by length and each group is hashed in ``uint32`` columns, four bytes of every
key of the group per step. A differential test holds it to aiokafka's function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_SEED = 0x9747B28C
_M = np.uint32(0x5BD1E995)


def murmur2_many(keys: Sequence[bytes]) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """Kafka's murmur2 of each of ``keys``, as unsigned 32-bit integers.

    >>> from aiokafka.partitioner import murmur2
    >>> keys = [b"user-1", b"", b"a much longer key of a user", b"user-2"]
    >>> murmur2_many(keys).tolist() == [murmur2(k) for k in keys]
    True
    """
    n = len(keys)
    out = np.empty(n, dtype=np.uint32)
    if not n:
        return out
    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=n)
    first = int(lengths[0])
    groups = [(first, None)] if (lengths == first).all() else None
    if groups is None:
        groups = [(int(length), np.flatnonzero(lengths == length)) for length in np.unique(lengths)]
    for length, rows in groups:
        members = keys if rows is None else [keys[i] for i in rows.tolist()]
        data = np.frombuffer(b"".join(members), dtype=np.uint8).reshape(len(members), length)
        h = np.full(len(members), (_SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
        words = length // 4
        if words:
            k = np.ascontiguousarray(data[:, : 4 * words]).view("<u4")
            k = k * _M
            k ^= k >> np.uint32(24)
            k *= _M
            for j in range(words):
                h *= _M
                h ^= k[:, j]
        tail = 4 * words
        extra = length - tail
        if extra >= 3:
            h ^= data[:, tail + 2].astype(np.uint32) << np.uint32(16)
        if extra >= 2:
            h ^= data[:, tail + 1].astype(np.uint32) << np.uint32(8)
        if extra >= 1:
            h ^= data[:, tail].astype(np.uint32)
            h *= _M
        h ^= h >> np.uint32(13)
        h *= _M
        h ^= h >> np.uint32(15)
        if rows is None:
            out[:] = h
        else:
            out[rows] = h
    return out


def partitions_of(
    keys: Sequence[bytes], partitions: Sequence[int]
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The partition Kafka's default partitioner sends each keyed message to, given the
    topic's partitions (sorted by id, as the client's metadata lists them).

    >>> partitions_of([b"user-1", b"user-2", b"user-3"], [0, 1, 2, 3]).tolist()
    [0, 0, 3]
    """
    hashed = murmur2_many(keys) & np.uint32(0x7FFFFFFF)
    index = (hashed % np.uint32(len(partitions))).astype(np.int64)
    ids = np.asarray(partitions, dtype=np.int64)
    return ids[index]
