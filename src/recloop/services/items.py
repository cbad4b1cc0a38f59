"""The item catalogue: vectors the preference updates move towards."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from recloop.core.errors import NotFound
from recloop.core.items import Item, make_item
from recloop.ports import ItemStore
from recloop.resilience import RetryCounts, retry_read
from recloop.services.vectors import ItemVectors


class ItemService:
    def __init__(
        self,
        store: ItemStore,
        vectors: ItemVectors,
        dim: int,
        clock: Callable[[], float] = time.time,
        retries: RetryCounts | None = None,
    ) -> None:
        self._store = store
        self._vectors = vectors
        self._retries = retries
        self._dim = dim
        self._clock = clock

    async def put_many(
        self, specs: Sequence[Mapping[str, Any]], field_prefix: str = ""
    ) -> list[Item]:
        """Validate every spec first (a bad one changes nothing), then store all of them.

        Each spec has ``item_id`` and optional ``vector`` and ``attributes``.
        """
        now = self._clock()
        built = [
            make_item(
                spec["item_id"],
                spec.get("vector"),
                spec.get("attributes"),
                self._dim,
                now,
                field_prefix=f"{field_prefix}{i}." if len(specs) > 1 or field_prefix else "",
            )
            for i, spec in enumerate(specs)
        ]
        await self._store.put_items(built)
        for item in built:
            self._vectors.changed(item)
        return built

    async def get(self, item_id: str) -> Item:
        found = await retry_read(
            "get_items", self._store.get_items, [item_id], counts=self._retries
        )
        if item_id not in found:
            raise NotFound("item", item_id)
        return found[item_id]
