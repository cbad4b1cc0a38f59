"""Item vectors in memory, loaded from the store on a miss (misses are remembered too)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from recloop.adapters.memory.cache import LruCache
from recloop.core.items import Item
from recloop.core.preferences import Vector
from recloop.ports import StateStore
from recloop.resilience import RetryCounts, retry_read

_MISSING: Any = object()


class ItemVectors:
    """The items whose vectors the processor learns towards and the ranker scores with.

    An item the store does not know is remembered as missing until
    :meth:`changed` registers it, so unknown items cost one lookup, not one per event.
    """

    def __init__(
        self, store: StateStore, max_items: int, retries: RetryCounts | None = None
    ) -> None:
        self._store = store
        self._retries = retries
        self._lru: LruCache[str, Any] = LruCache(max_items)

    async def get_many(self, item_ids: Iterable[str]) -> dict[str, Vector | None]:
        return {
            k: None if item is None else item.vector
            for k, item in (await self.items(item_ids)).items()
        }

    async def items(self, item_ids: Iterable[str]) -> dict[str, Item | None]:
        """The items (vector, attributes, when registered); None for an unknown one."""
        found: dict[str, Item | None] = {}
        missing = []
        for item_id in item_ids:
            item = self._lru.get(item_id)
            if item is None:
                missing.append(item_id)
            else:
                found[item_id] = None if item is _MISSING else item
        if missing:
            stored = await retry_read(
                "get_items", self._store.get_items, missing, counts=self._retries
            )
            for item_id in missing:
                item = stored.get(item_id)
                self._lru.set(item_id, _MISSING if item is None else item)
                found[item_id] = item
        return found

    def changed(self, item: Item) -> None:
        """Use ``item``'s new vector from now on."""
        self._lru.set(item.item_id, item)
