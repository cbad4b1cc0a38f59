"""Reading what was learnt about a user."""

from __future__ import annotations

from typing import Any

from recloop.core.errors import NotFound
from recloop.ports import Cache, StateStore
from recloop.services.feedback import preferences_key, preferences_view


class PreferenceService:
    def __init__(self, store: StateStore, cache: Cache) -> None:
        self._store = store
        self._cache = cache

    async def get(self, user_id: str) -> dict[str, Any]:
        """The user's preferences as last committed; raises NotFound for an unknown user."""
        key = preferences_key(user_id)
        view = self._cache.get(key)
        if view is not None:
            return view  # type: ignore[no-any-return]
        found = await self._store.get_users([user_id])
        if user_id not in found:
            raise NotFound("user", user_id)
        view = preferences_view(found[user_id])
        self._cache.add(key, view)
        return view
