"""In-process adapters for every port: the embedded cache and the unit tests' fakes."""

from __future__ import annotations

from recloop.adapters.memory.cache import LruCache, TtlCache
from recloop.adapters.memory.store import InMemoryEventLog, InMemoryStateStore

__all__ = ["InMemoryEventLog", "InMemoryStateStore", "LruCache", "TtlCache"]
