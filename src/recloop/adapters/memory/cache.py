"""Bounded in-process caches."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A dict that forgets its least recently used entries beyond ``maxsize``."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def set(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def delete(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def keys(self) -> list[K]:
        """The keys held, least recently used first (a copy)."""
        return list(self._data)


class TtlCache:
    """The in-process :class:`recloop.ports.Cache`: LRU-bounded, entries expire after ``ttl``."""

    def __init__(
        self, maxsize: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lru: LruCache[str, tuple[float, Any]] = LruCache(maxsize)
        self._ttl = ttl
        self._clock = clock

    def get(self, key: str) -> Any | None:
        entry = self._lru.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            self._lru.delete(key)
            return None
        return value

    def set(self, key: str, value: Any) -> None:
        self._lru.set(key, (self._clock() + self._ttl, value))

    def add(self, key: str, value: Any) -> None:
        if self.get(key) is None:
            self.set(key, value)

    def delete(self, key: str) -> None:
        self._lru.delete(key)
