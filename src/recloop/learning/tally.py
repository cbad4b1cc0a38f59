"""The canary monitor's running counts: impressions and attributed clicks, kept as they arrive.

The monitor used to read every impression of its window (a day, or since the
deployment) and their feedback on each pass. :class:`Tally` keeps the same
numbers up to date instead, from the impressions and clicks that are new
since the last pass:

- per (slot, model version): impressions served since the slot's start, and
  how many of them got a click within the attribution window (what
  :func:`~recloop.core.deployment.judge_canary` decides from);
- per item: times shown and clicks on it within the window, over the retained
  window (the item's popularity and CTR features).

An impression counts for its slot if it was created at or after the slot's
start; a click counts for its impression (once) if its timestamp is at most
``window`` seconds after the impression's creation, whatever item it names,
and for an item if that item was shown in it. Impressions older than the
retained window (:meth:`Tally.expire`) leave every count, and so do, while they
are excluded (:meth:`Tally.exclude`: flagged by the guard), the impressions shown to
a user and the clicks on them, and the clicks the user made on impressions shown to
someone else; they count again once the user is no longer excluded, unless the user
was erased meanwhile (:meth:`Tally.forget`). These are the rules the monitor applied
to a full re-read (of the clicks of users not excluded), so the counts, and the
verdicts taken from them, are the same (tests/unit/test_learning_tally.py compares
both).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain

from recloop.ports import ImpressionHead

Key = tuple[str, str]
"""(slot, model version or "")."""


@dataclass(slots=True)
class _Held:
    created_at: float
    key: Key | None
    items: tuple[str, ...]
    user_id: str
    excluded: bool = False
    counted: bool = False
    clicked: bool = False
    """A user not excluded clicked in the window (the slot's clicked impressions)."""
    clicked_items: set[str] = field(default_factory=set)
    """The shown items a user not excluded clicked in the window."""
    clickers: dict[str, set[str]] = field(default_factory=dict)
    """Every in-window click, by user: the items they named (``clicked`` and
    ``clicked_items`` are read from it when the excluded users change)."""

    def reclick(self, excluded: frozenset[str]) -> None:
        """``clicked`` and ``clicked_items`` from the clicks of users not in ``excluded``."""
        named = [items for user, items in self.clickers.items() if user not in excluded]
        self.clicked = bool(named)
        self.clicked_items = {item for items in named for item in items if item in self.items}


class Tally:
    """Running counts over the impressions created since :attr:`since`.

    >>> t = Tally(window=60.0)
    >>> t.restart({"blue": 0.0, "green": 100.0})
    >>> t.add([ImpressionHead("i1", "u", 150.0, ("a", "b"), model_version="m2",
    ...                       model_slot="green")])
    >>> t.click("i1", "b", 170.0), t.click("i1", "a", 900.0)  # the second is too late
    (True, False)
    >>> t.counts[("green", "m2")], t.item_stats["b"], t.item_stats["a"]
    ([1, 1], [1, 1], [1, 0])
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self.since = float("-inf")
        """Impressions created before this are not held (and count nowhere)."""
        self.counts: dict[Key, list[int]] = {}
        """(impressions, impressions with a click) per (slot, version) since the slot's start."""
        self.item_stats: dict[str, list[int]] = {}
        """(shown, clicked) per item over the held impressions."""
        self.excluded: frozenset[str] = frozenset()
        """Users whose impressions count nowhere (:meth:`exclude`)."""
        self._starts: dict[str, float] = {}
        self._held: dict[str, _Held] = {}
        self._by_time: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._held)

    def holds(self, impression_id: str) -> bool:
        return impression_id in self._held

    @property
    def held(self) -> Container[str]:
        """The ids of the impressions held (a live view, not a copy)."""
        return self._held.keys()

    @property
    def starts(self) -> dict[str, float]:
        return dict(self._starts)

    def restart(self, starts: Mapping[str, float]) -> None:
        """Count each slot from ``starts[slot]`` (0 for a slot not named): the slot counts
        are rebuilt from the held impressions."""
        self._starts = dict(starts)
        self.counts = {}
        for held in self._held.values():
            held.counted = False
            self._count(held)

    def _count(self, held: _Held) -> None:
        if (
            held.excluded
            or held.key is None
            or held.created_at < self._starts.get(held.key[0], 0.0)
        ):
            return
        held.counted = True
        counted = self.counts.setdefault(held.key, [0, 0])
        counted[0] += 1
        counted[1] += held.clicked

    def add(self, impressions: Iterable[ImpressionHead]) -> None:
        """Hold new impressions, by their heads (one already held, or created before
        :attr:`since`, is skipped)."""
        shown: list[tuple[str, ...]] = []
        for imp in impressions:
            if imp.impression_id in self._held or imp.created_at < self.since:
                continue
            key = None if imp.model_slot is None else (imp.model_slot, imp.model_version or "")
            items = imp.item_ids
            held = _Held(imp.created_at, key, items, imp.user_id, imp.user_id in self.excluded)
            self._held[imp.impression_id] = held
            heapq.heappush(self._by_time, (imp.created_at, imp.impression_id))
            if held.excluded:
                continue
            shown.append(items)
            self._count(held)
        # the items counted together (Counter's C loop), then one Python step per item
        stats = self.item_stats
        for item, n in Counter(chain.from_iterable(shown)).items():
            found = stats.get(item)
            if found is None:
                stats[item] = [n, 0]
            else:
                found[0] += n

    def click(
        self, impression_id: str, item_id: str, timestamp: float, user_id: str | None = None
    ) -> bool:
        """A click by ``user_id`` (None: the impression's own user) naming a held
        impression; True if it is within the window (it counts unless ``user_id`` is
        excluded now, and once that user is no longer excluded)."""
        held = self._held.get(impression_id)
        if held is None or timestamp > held.created_at + self.window:
            return False
        clicker = held.user_id if user_id is None else user_id
        held.clickers.setdefault(clicker, set()).add(item_id)
        if clicker in self.excluded:
            return True
        if not held.clicked:
            held.clicked = True
            if held.counted and held.key is not None:
                self.counts[held.key][1] += 1
        if item_id in held.items and item_id not in held.clicked_items:
            held.clicked_items.add(item_id)
            if not held.excluded:
                self.item_stats[item_id][1] += 1
        return True

    def exclude(self, users: frozenset[str]) -> None:
        """From now on, the impressions of ``users`` (and the clicks on them), and the
        clicks ``users`` made on others' impressions, count nowhere; those of users
        excluded before and not now count again. O(held): call it when the set changes."""
        moved = users ^ self.excluded
        self.excluded = users
        changed: list[tuple[_Held, bool]] = []
        for held in self._held.values():
            out = held.user_id in users
            if out == held.excluded and (out or moved.isdisjoint(held.clickers)):
                continue
            changed.append((held, out))
        # out of the counts together, as they were counted; back in as they count now
        self._take_all([held for held, _ in changed if not held.excluded])
        for held, out in changed:
            held.excluded = out
            held.reclick(users)
            if not out:
                self._put(held)

    def _put(self, held: _Held) -> None:
        """Count a held impression (not excluded, not counted) and its clicks."""
        stats = self.item_stats
        for item in held.items:
            found = stats.setdefault(item, [0, 0])
            found[0] += 1
            found[1] += item in held.clicked_items
        self._count(held)

    def _take_all(self, taken: Sequence[_Held]) -> None:
        """Take held impressions out of every count: their items' counts together (as
        :meth:`add` puts them), the slots' one by one."""
        stats = self.item_stats
        clicked = Counter(chain.from_iterable(held.clicked_items for held in taken))
        for item, n in Counter(chain.from_iterable(held.items for held in taken)).items():
            found = stats[item]
            found[0] -= n
            found[1] -= clicked.get(item, 0)
            if found[0] == 0:
                del stats[item]
        for held in taken:
            self._uncount(held)

    def _uncount(self, held: _Held) -> None:
        """Take a held impression out of its slot's counts."""
        if held.counted and held.key is not None:
            held.counted = False
            counted = self.counts[held.key]
            counted[0] -= 1
            counted[1] -= held.clicked
            if counted[0] == 0:
                del self.counts[held.key]

    def expire(self, before: float) -> None:
        """Forget impressions created before ``before``; they leave every count."""
        self.since = max(self.since, before)
        taken: list[_Held] = []
        while self._by_time and self._by_time[0][0] < before:
            _, impression_id = heapq.heappop(self._by_time)
            held = self._held.pop(impression_id, None)  # None: forgotten (an erasure)
            if held is not None and not held.excluded:
                taken.append(held)
        self._take_all(taken)

    def forget(self, user_id: str) -> int:
        """Drop the impressions shown to ``user_id``, and their clicks on others'
        impressions, for good (an erasure: the store no longer holds them); they leave
        every count, and do not come back when the user is no longer excluded. How many
        impressions were held. O(held)."""
        gone = [k for k, held in self._held.items() if held.user_id == user_id]
        dropped = [self._held.pop(impression_id) for impression_id in gone]
        self._take_all([held for held in dropped if not held.excluded])
        clicked = [
            held
            for held in self._held.values()
            if held.clickers.pop(user_id, None) is not None and not held.excluded
        ]
        self._take_all(clicked)
        for held in clicked:
            held.reclick(self.excluded)
            self._put(held)
        return len(gone)

    def users(self) -> set[str]:
        """The users shown the held impressions."""
        return {held.user_id for held in self._held.values()}

    def count(self, key: Key) -> tuple[int, int]:
        """(impressions, clicked impressions) of a (slot, version)."""
        found = self.counts.get(key)
        return (0, 0) if found is None else (found[0], found[1])
