"""Bounded in-process caches."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from recloop.core.cache import LruCache

__all__ = ["LruCache", "TtlCache"]


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
