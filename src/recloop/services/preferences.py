"""Reading what was learnt about a user."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recloop.core.errors import NotFound
from recloop.core.preferences import Preferences
from recloop.ports import Cache, UserStateStore
from recloop.resilience import RetryCounts, retry_read
from recloop.services.feedback import preferences_key

_UNKNOWN = object()  # cached "no such user": polls for a user not yet applied stay cheap


class PreferenceService:
    def __init__(
        self,
        store: UserStateStore,
        cache: Cache,
        retries: RetryCounts | None = None,
        live: Callable[[str], Preferences | None] | None = None,
        never_stored: Callable[[str], bool] | None = None,
    ) -> None:
        """``live``: the state as this process applies it (embedded: the processor's
        table), asked first; the cache and the store serve users it does not hold.
        ``never_stored``: whether the store certainly holds nothing of a user (embedded:
        the processor knows), so that an unknown user costs no read of the store."""
        self._live = live
        self._never_stored = never_stored
        self._store = store
        self._cache = cache
        self._retries = retries

    async def get(self, user_id: str) -> Preferences:
        """The user's preferences as last applied here, or as last committed; raises
        NotFound for an unknown user."""
        found = await self.find(user_id)
        if found is None:
            raise NotFound("user", user_id)
        return found

    async def find(self, user_id: str) -> Preferences | None:
        """:meth:`get`'s answer, None for an unknown user: the read path asks about users
        it has never seen more often than not, and an exception per such read costs more
        than the answer."""
        if self._live is not None:
            held = self._live(user_id)
            if held is not None:
                return held
        key = preferences_key(user_id)
        cached = self._cache.get(key)
        if isinstance(cached, Preferences):
            return cached
        if cached is _UNKNOWN:
            return None
        if self._never_stored is not None and self._never_stored(user_id):
            return None
        found = await retry_read(
            "get_users", self._store.get_users, [user_id], counts=self._retries
        )
        if user_id not in found:
            # The applier's write-through replaces this once the user's first event commits.
            self._cache.add(key, _UNKNOWN)
            return None
        snapshot = found[user_id].snapshot()
        self._cache.add(key, snapshot)
        return snapshot

    async def exists(self, user_id: str) -> bool:
        """Whether anything was learnt about the user (held here or stored): :meth:`find`,
        from the same cache, so a user the read path has just found unknown costs no
        second read of the store."""
        return await self.find(user_id) is not None


def preferences_view(p: Preferences) -> dict[str, Any]:
    """The JSON body of ``GET .../preferences``."""
    return {
        "user_id": p.user_id,
        "vector": p.vector.tolist(),
        "dim": int(p.vector.shape[0]),
        "events_applied": p.events_applied,
        "events_skipped": p.events_skipped,
        "interactions": p.interactions,
        "impressions": p.impressions,
        "first_event_at": p.first_event_at,
        "last_event_at": p.last_event_at,
        "updated_at": p.updated_at,
        "events_held": p.events_held,
    }
