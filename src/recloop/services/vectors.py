"""Item vectors in memory, loaded from the store on a miss (misses are remembered too)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from recloop.core.cache import LruCache
from recloop.core.items import Item
from recloop.core.preferences import Vector
from recloop.ports import StateStore
from recloop.resilience import RetryCounts, retry_read

_MISSING: Any = object()


class ItemVectors:
    """The items whose vectors the processor learns towards and the ranker scores with.

    An item the store does not know is remembered as missing until
    :meth:`changed` registers it, so unknown items cost one lookup, not one per event.

    Besides the items themselves (an LRU of ``max_items``, for the ranker), every
    known item's vector has a row of one matrix behind a dense id, so that the
    processor gathers a batch's vectors in one indexing call (:meth:`rows`). The
    matrix holds each item seen since the start (``8 * dim`` bytes per item).
    """

    def __init__(
        self,
        store: StateStore,
        max_items: int,
        retries: RetryCounts | None = None,
        dim: int | None = None,
    ) -> None:
        """``dim``: the vectors' dimension (an item of another one has no row: its events
        are counted as skipped); by default, that of the first item placed."""
        self._dim = dim
        self._store = store
        self._retries = retries
        self._lru: LruCache[str, Any] = LruCache(max_items)
        self._slot: dict[str, int] = {}
        self._matrix: npt.NDArray[np.float64] = np.zeros((0, dim or 0))

    async def get_many(self, item_ids: Iterable[str]) -> dict[str, Vector | None]:
        return {
            k: None if item is None else item.vector
            for k, item in (await self.items(item_ids)).items()
        }

    async def rows(
        self, item_ids: Sequence[str]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Each item's vector as a row (zeros for an unknown item) and whether it has one."""
        get = self._slot.get
        slots = np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))
        unknown = slots < 0
        if unknown.any():
            ids = [item_ids[i] for i in np.flatnonzero(unknown).tolist()]
            await self.items(dict.fromkeys(ids))  # loads and places what the store knows
            slots[unknown] = [get(i, -1) for i in ids]
        has = slots >= 0
        if not len(self._matrix):
            return np.zeros((len(item_ids), self._dim or 0)), has
        return self._matrix[np.where(has, slots, 0)], has

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
                if item is not None:
                    self._place(item)
        return found

    def changed(self, item: Item) -> None:
        """Use ``item``'s new vector from now on."""
        self._lru.set(item.item_id, item)
        self._place(item)

    def _place(self, item: Item) -> None:
        vector = np.asarray(item.vector, dtype=np.float64)
        if self._dim is None:
            self._dim = len(vector)
            self._matrix = np.zeros((0, self._dim))
        if len(vector) != self._dim:
            return
        slot = self._slot.get(item.item_id)
        if slot is None:
            slot = len(self._slot)
            if slot >= len(self._matrix):
                grown = np.zeros((max(1024, 2 * len(self._matrix)), self._dim))
                grown[: len(self._matrix)] = self._matrix
                self._matrix = grown
            self._slot[item.item_id] = slot
        self._matrix[slot] = vector
