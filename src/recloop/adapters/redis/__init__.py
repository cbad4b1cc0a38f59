"""Redis adapters: the distributed deployment's read cache, kept coherent across processes."""

from __future__ import annotations

from recloop.adapters.redis.cache import SharedCache

__all__ = ["SharedCache"]
