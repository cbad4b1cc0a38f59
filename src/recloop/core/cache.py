"""A bounded mapping for in-process state: pure, used by services and adapters alike."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A dict that forgets its least recently used entries beyond ``maxsize``.

    >>> c: LruCache[str, int] = LruCache(2)
    >>> c.set("a", 1); c.set("b", 2); _ = c.get("a"); c.set("c", 3)
    >>> c.keys()
    ['a', 'c']
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def set(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def delete(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def keys(self) -> list[K]:
        """The keys held, least recently used first (a copy)."""
        return list(self._data)

    def items(self) -> list[tuple[K, V]]:
        """The entries held, least recently used first (a copy); a look that, unlike
        :meth:`get`, leaves the order of use as it was.

        >>> c: LruCache[str, int] = LruCache(2)
        >>> c.set("a", 1); c.set("b", 2); c.items(); c.set("c", 3); c.keys()
        [('a', 1), ('b', 2)]
        ['b', 'c']
        """
        return list(self._data.items())
