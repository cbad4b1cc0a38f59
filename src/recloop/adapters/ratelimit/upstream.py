"""Rate limits in any other ``limits`` storage, one call per hit: :class:`UpstreamRateLimiter`.

For shared storages :class:`recloop.adapters.ratelimit.redis.RedisRateLimiter`
cannot serve (a Redis Cluster or Sentinel URL, Valkey, MongoDB...): ``limits``'
own asynchronous sliding-window strategy over the storage its URL names, one
round trip per limit and ask, with the same rules as the batched limiters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from limits import parse_many
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from recloop.adapters.ratelimit.groups import admit_each
from recloop.core.ratelimit import Admission


class UpstreamRateLimiter:
    """:class:`recloop.ports.RateLimiter` over ``limits``' storage at ``url``."""

    shared = True

    def __init__(self, classes: Mapping[str, str], url: str, key_prefix: str = "recloop") -> None:
        # recloop installs redis-py, not coredis (limits' default async Redis client)
        redis = {"implementation": "redispy"} if "redis" in url.split("://")[0] else {}
        self._storage = storage_from_string(
            url, key_prefix=key_prefix, wrap_exceptions=True, **redis
        )
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._items = {name: parse_many(spec) for name, spec in classes.items()}

    async def admit_many(
        self, action: str, asks: Sequence[tuple[str, int]]
    ) -> dict[int, Admission]:
        short = {}
        for n, (identity, count) in enumerate(asks):
            admission = await self._admit(action, identity, count)
            if admission.limit is not None:
                short[n] = admission
        return short

    async def _admit(self, action: str, identity: str, count: int) -> Admission:
        items, limiter = self._items[action], self._limiter
        for refused_at, item in enumerate(items):
            if await limiter.hit(item, action, identity, cost=count):
                continue
            stats = [await limiter.get_window_stats(i, action, identity) for i in items]
            tightest = min(range(refused_at, len(items)), key=lambda k: stats[k].remaining)
            allowed = max(0, min(stats[tightest].remaining, count))
            if allowed:
                for later in items[refused_at:]:
                    await limiter.hit(later, action, identity, cost=allowed)
            return Admission(allowed, str(items[tightest]), stats[tightest].reset_time)
        return Admission(count)

    async def admit_groups(
        self, groups: Sequence[tuple[str, Sequence[tuple[str, int]]]], gate: bool = False
    ) -> list[dict[int, Admission] | None]:
        return await admit_each(self.admit_many, groups, gate)

    async def forget(self, identity: str, actions: Sequence[str]) -> None:
        for action in actions:
            for item in self._items.get(action, ()):
                await self._limiter.clear(item, action, identity)

    async def close(self) -> None:
        # limits has no public close; its redis-py bridge holds the client.
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        if client is not None:
            await client.aclose()
