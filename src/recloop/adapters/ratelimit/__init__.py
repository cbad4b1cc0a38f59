"""Rate limiters (:class:`recloop.ports.RateLimiter`): in process, in Redis, or upstream's.

- :class:`MemoryRateLimiter` (``memory``): counters in numpy arrays, a request's asks
  decided in a few vectorised calls;
- :class:`RedisRateLimiter` (``redis``): one Lua script call per request, on
  ``limits``' own keys;
- :class:`UpstreamRateLimiter` (``upstream``): ``limits``' own strategy over any other
  storage it supports, one call per hit.

All three decide as ``limits``' ``SlidingWindowCounterRateLimiter`` does
(differential tests keep the library as the oracle).
"""

from __future__ import annotations

from collections.abc import Mapping

from recloop.adapters.ratelimit.memory import MemoryRateLimiter
from recloop.adapters.ratelimit.redis import RedisRateLimiter
from recloop.adapters.ratelimit.upstream import UpstreamRateLimiter
from recloop.ports import RateLimiter

__all__ = ["MemoryRateLimiter", "RedisRateLimiter", "UpstreamRateLimiter", "shared_limiter"]

_SINGLE_REDIS = ("async+redis://", "async+rediss://", "redis://", "rediss://")


def shared_limiter(classes: Mapping[str, str], url: str, key_prefix: str) -> RateLimiter:
    """The limiter for ``rate_limits.storage`` ``url`` (not ``memory://``): the batched
    Redis one for a single Redis, ``limits``' own for anything else."""
    if url.startswith(_SINGLE_REDIS):
        return RedisRateLimiter(classes, url, key_prefix)
    return UpstreamRateLimiter(classes, url, key_prefix)
