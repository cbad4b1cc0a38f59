"""Item vectors in memory, loaded from the store on a miss (misses are remembered too)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from recloop.core.arrays import all_of, any_of
from recloop.core.cache import LruCache
from recloop.core.features import ATTRIBUTE_BUCKETS, hashed_attributes
from recloop.core.items import Item
from recloop.core.preferences import Vector
from recloop.ports import ItemStore
from recloop.resilience import RetryCounts, retry_read

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class ItemRows:
    """Items in columns, one row per item asked for, in the order asked (what ``rank``
    reads per candidate, gathered by indexing instead of an object per item)."""

    known: npt.NDArray[np.bool_]
    """Registered, with a vector of the table's dimension (the other columns hold 0 where
    not)."""
    vectors: npt.NDArray[np.float64]
    updated_at: npt.NDArray[np.float64]
    from_attributes: npt.NDArray[np.bool_]
    """The vector was hashed from the attributes (no vector was given)."""
    hashed: npt.NDArray[np.float64]
    """``core.features.hashed_attributes`` of each item's attributes (0 columns unless
    asked for)."""

    def take(self, rows: npt.NDArray[np.intp], vectors: bool = True) -> ItemRows:
        """These rows, in this order (``vectors`` false: without the vectors, 0 columns)."""
        return ItemRows(
            self.known[rows],
            self.vectors[rows] if vectors else np.zeros((len(rows), 0)),
            self.updated_at[rows],
            self.from_attributes[rows],
            self.hashed[rows],
        )


class ItemVectors:
    """The items whose vectors the processor learns towards and the ranker scores with.

    An item the store does not know is remembered as missing until
    :meth:`changed` registers it, so unknown items cost one lookup, not one per event.

    Besides the items themselves (an LRU of ``max_items``), every known item has a
    row behind a dense id: its vector in one matrix, so that the processor gathers a
    batch's vectors in one indexing call (:meth:`rows`), and what ``rank`` reads of it
    in columns (:meth:`table`): when it was registered, whether its vector came from its
    attributes, and its attribute buckets, hashed on the first ``rank`` that asks. The
    rows hold each item seen since the start (``8 * dim + 146`` bytes per item).
    """

    def __init__(
        self,
        store: ItemStore,
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
        self._updated_at: npt.NDArray[np.float64] = np.zeros(0)
        self._from_attributes: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self._hashed: npt.NDArray[np.float64] = np.zeros((0, ATTRIBUTE_BUCKETS))
        self._hashed_ready: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)

    async def get_many(self, item_ids: Iterable[str]) -> dict[str, Vector | None]:
        return {
            k: None if item is None else item.vector
            for k, item in (await self.items(item_ids)).items()
        }

    async def _slots(self, item_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Each item's row (-1: unknown), loading from the store the ones not placed yet."""
        get = self._slot.get
        if len(item_ids) > 1:
            try:  # every item placed (the usual case): one call, no Python loop
                return np.array(itemgetter(*item_ids)(self._slot), dtype=np.int64)
            except KeyError:
                pass
        slots = np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))
        unknown = slots < 0
        if unknown.any():
            ids = [item_ids[i] for i in np.flatnonzero(unknown).tolist()]
            await self.items(dict.fromkeys(ids))  # loads and places what the store knows
            slots[unknown] = [get(i, -1) for i in ids]
        return slots

    async def rows(
        self, item_ids: Sequence[str]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Each item's vector as a row (zeros for an unknown item) and whether it has one."""
        slots = await self._slots(item_ids)
        has = slots >= 0
        if not len(self._matrix):
            return np.zeros((len(item_ids), self._dim or 0)), has
        return self._matrix[np.where(has, slots, 0)], has

    async def table(
        self, item_ids: Sequence[str], hashed: bool = False, vectors: bool = True
    ) -> ItemRows:
        """The items in columns (:class:`ItemRows`), their attribute buckets too if
        ``hashed``; without their ``vectors`` (0 columns) if those are not read (``rank``
        for a user with no preference to compare them with)."""
        slots = await self._slots(item_ids)
        known = slots >= 0
        at = np.where(known, slots, 0)
        n = len(item_ids)
        width = (self._dim or 0) if vectors else 0
        if not len(self._slot):
            return ItemRows(
                known,
                np.zeros((n, width)),
                np.zeros(n),
                np.zeros(n, dtype=bool),
                np.zeros((n, ATTRIBUTE_BUCKETS if hashed else 0)),
            )
        everyone = bool(all_of(known))  # (core.arrays: past numpy's Python wrappers)
        buckets = np.zeros((n, 0))
        if hashed:
            due = known & ~self._hashed_ready[at]
            if any_of(due):
                await self._hash([item_ids[i] for i in np.flatnonzero(due).tolist()])
            buckets = (
                self._hashed[at] if everyone else np.where(known[:, None], self._hashed[at], 0.0)
            )
        rows = self._matrix[at] if vectors else np.zeros((n, 0))
        if everyone:  # each gather is a copy already: no rows to blank
            return ItemRows(known, rows, self._updated_at[at], self._from_attributes[at], buckets)
        return ItemRows(
            known,
            np.where(known[:, None], rows, 0.0),
            np.where(known, self._updated_at[at], 0.0),
            known & self._from_attributes[at],
            buckets,
        )

    async def _hash(self, item_ids: list[str]) -> None:
        for item_id, item in (await self.items(item_ids)).items():
            slot = self._slot.get(item_id)
            if item is not None and slot is not None:
                self._hashed[slot] = hashed_attributes(item.attributes)
                self._hashed_ready[slot] = True

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
                self._grow(max(1024, 2 * len(self._matrix)))
            self._slot[item.item_id] = slot
        self._matrix[slot] = vector
        self._updated_at[slot] = item.updated_at
        self._from_attributes[slot] = item.vector_source == "hashed"
        self._hashed_ready[slot] = False  # hashed again on the next table() that asks

    def _grow(self, rows: int) -> None:
        def grown(old: npt.NDArray[Any]) -> npt.NDArray[Any]:
            new = np.zeros((rows, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            return new

        self._matrix = grown(self._matrix)
        self._updated_at = grown(self._updated_at)
        self._from_attributes = grown(self._from_attributes)
        self._hashed = grown(self._hashed)
        self._hashed_ready = grown(self._hashed_ready)
