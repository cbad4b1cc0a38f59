"""Every tracked user's evidence in columns: the guard's store.

:class:`~recloop.core.spam.UserActivity` folds one user's events one at a time
and is the reference; :class:`ActivityTable` keeps the same evidence for every
user the guard tracks, by *slot* (a dense index the guard assigns), and folds a
whole batch of events in a few numpy steps. A differential test holds the two
to the same numbers for any stream of events.

The layout:

- **counters** (events, actions, clicks, dwells, hours of day, per-type counts, the
  hard rules' latest violation, ...) are columns indexed by slot;
- **the latest actions** are rows of one append-only log (timestamp, type, item's
  hash), each row linked to its user's previous row, to the previous row of the
  same user and type, and to the user's previous explicit row: the latest ``n``
  actions of a set of users are ``n`` vectorised steps back along the links. Rows
  no link walk can reach any more are dropped when the log has doubled;
- **repeats and unseen clicks** need "was this (type, item) pair among the user's
  previous ``remembered_items`` actions": two dicts from a 64-bit key of (user,
  item, type) to the ordinal of its latest action, probed and updated for a batch
  at once (a dict of ints is invisible to the garbage collector);
- **ratings and reviews** stay per user (a dict of ratings for users who rate):
  they are the profile the judgement reads item by item.

Per-user Python objects would cost the collector a walk of every user's lists at
each full collection; here a user is a few numbers in arrays.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recloop.core.events import EXPLICIT_TYPES, FEEDBACK_TYPES
from recloop.core.runs import repeats, run_ends, run_sizes, run_starts, shifted
from recloop.core.spam import (
    ItemStats,
    SpamConfig,
    TextRegistry,
    has_link,
    has_repeated_chars,
    text_key,
)
from recloop.core.spam_batch import reading_columns
from recloop.core.spam_grade import EvidenceColumns

Ints = npt.NDArray[np.int64]
Index = npt.NDArray[np.int64] | npt.NDArray[np.int32]
"""Slots or rows of the log (32-bit where stored)."""
Floats = npt.NDArray[np.float64]

TYPES: Final = tuple(sorted(FEEDBACK_TYPES))
"""The event types by code: alphabetical, so that a tie between types goes to the larger
code (the reference's "alphabetically last")."""
CODES: Final = {name: code for code, name in enumerate(TYPES)}
_T: Final = len(TYPES)
_IMPRESSION: Final = CODES["impression"]
_VIEW: Final = CODES["view"]
_CLICK: Final = CODES["click"]
_DWELL: Final = CODES["dwell"]
_RATING: Final = CODES["rating"]
_REVIEW: Final = CODES["review"]
_EXPLICIT: Final = np.array([name in EXPLICIT_TYPES for name in TYPES])
_EXPLICIT_CODES: Final = tuple(name in EXPLICIT_TYPES for name in TYPES)
_HOURS: Final = 24
_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)
_GOLDEN_INT: Final = int(_GOLDEN)
_MASK: Final = (1 << 64) - 1
_ACTIONS_RULE, _EXPLICIT_RULE = 1, 2  # the rule column's codes (0: none)
_ONE: Final = np.int32(1)
_NONE: Final = itertools.repeat(-1)
"""The value of a key the ordinal dicts do not hold."""


_STEPS: Final = 16
"""Up to this many rows, :func:`_link` links them one by one in Python numbers
(:func:`_link_steps`, the sorted path its oracle in a test): below it the sorted path's
numpy calls cost more than the rows (the vectorised fold links a round's explicit events
and arrivals apart, often a few)."""

_FOLD_STEPS: Final = 128
"""Up to this many events, :meth:`ActivityTable.fold` takes the round event by event
(:meth:`ActivityTable._fold_steps`), the vectorised fold its oracle in tests: a stream of
one-event requests folds rounds of a few to a few dozen events, where the vectorised
fold's fixed cost (some hundred numpy calls) outweighs a Python pass over the events."""


def _type_hashes() -> Ints:
    """Each type's ``hash`` in this process (the reference keys a pair by
    ``hash(item) ^ hash(type)``)."""
    return np.array([hash(name) for name in TYPES], np.int64)


def _keys(uids: Ints, hashes: Ints) -> npt.NDArray[np.uint64]:
    """One 64-bit key per (user incarnation, 64-bit hash): distinct pairs collide with a
    probability of about 2**-64."""
    keys: npt.NDArray[np.uint64] = hashes.view(np.uint64) ^ (uids.astype(np.uint64) * _GOLDEN)
    return keys


@dataclass(frozen=True, slots=True)
class ActivityView:
    """One user's evidence as the judgement reads it (:class:`recloop.core.spam.Evidence`):
    a snapshot of the user's row, with their latest actions gathered from the log."""

    events: int
    actions: int
    seen: int
    first_at: float
    last_at: float
    clicks: int
    unseen_clicks: int
    dwells: int
    short_dwells: int
    repeats: int
    action_types: int
    max_explicit_in_second: int
    hard_rule_at: float | None
    hard_rule_reason: str | None
    hours: Sequence[int]
    ratings: dict[str, float]
    reviews: int
    reviews_with_links: int
    reviews_with_repeats: int
    max_text_copies: int
    review_keys: deque[str] | tuple[()]
    latest_times: Floats
    """The latest actions' timestamps, oldest first."""
    latest_items: Ints
    """Their items' hashes."""
    dominant_times: Floats
    """The latest timestamps of the dominant type, oldest first."""

    def recent_rate(self) -> tuple[float, int]:
        n = len(np.unique(self.latest_times))
        if n < 2:
            return 0.0, n
        span = float(self.latest_times.max() - self.latest_times.min())
        return (n - 1) / span, n

    def intervals(self) -> Floats:
        return np.diff(np.unique(self.dominant_times))

    def recent_items(self) -> list[int]:
        items: list[int] = self.latest_items.tolist()
        return items


class ActivityTable:
    """The evidence of up to ``capacity`` (grown as needed) users, by slot."""

    _COUNTERS: Final = (
        "events",
        "actions",
        "seen",
        "clicks",
        "unseen_clicks",
        "dwells",
        "short_dwells",
        "repeats",
        "reviews",
        "reviews_with_links",
        "reviews_with_repeats",
        "max_text_copies",
        "max_explicit_in_second",
        "rule",
    )

    # the counters, by slot (see UserActivity)
    events: Ints
    actions: Ints
    seen: Ints
    clicks: Ints
    unseen_clicks: Ints
    dwells: Ints
    short_dwells: Ints
    repeats: Ints
    reviews: Ints
    reviews_with_links: Ints
    reviews_with_repeats: Ints
    max_text_copies: Ints
    max_explicit_in_second: Ints
    rule: Ints
    """Which hard rule's violation ``rule_at`` holds (0: none)."""

    def __init__(self, config: SpamConfig, capacity: int = 1024, floor: int = 1 << 16) -> None:
        """``floor``: the log's rows, and the pair and impression dicts' entries, below
        which they are not compacted (each is compacted once it has doubled since)."""
        self.config = config
        self._floor = floor
        self._type_hash = _type_hashes()
        self._type_hash_list: list[int] = self._type_hash.tolist()
        self._cell_cache: tuple[Any, ...] | None = None
        self._next_uid = 0
        self.capacity = 0
        self.uid = np.zeros(0, np.int64)
        """The incarnation of the user in each slot (-1: free)."""
        for name in self._COUNTERS:
            setattr(self, name, np.zeros(0, np.int64))
        self.first_at = np.zeros(0)
        self.last_at = np.zeros(0)
        self.rule_at = np.zeros(0)
        # 32-bit where a count or a row of the log cannot reach 2**31: a slot takes ~450 bytes
        self.hours = np.zeros((0, _HOURS), np.int32)
        self.type_total = np.zeros((0, _T), np.int32)
        self.head = np.zeros(0, np.int32)
        self.type_head = np.zeros((0, _T), np.int32)
        self.explicit_head = np.zeros(0, np.int32)
        # the latest *arrival* (an action at another instant than its predecessor's), of
        # any kind and explicit: what the hard rules count (a batch's untimed events,
        # stamped with one instant, are one arrival)
        self.arrival_head = np.zeros(0, np.int32)
        self.explicit_arrival_head = np.zeros(0, np.int32)
        self.ratings: dict[int, dict[str, float]] = {}
        self.review_keys: dict[int, deque[str]] = {}
        # the log of actions
        self._rows = 0
        self._kept_after_compaction = 0
        self.log_t = np.zeros(0)
        self.log_item = np.zeros(0, np.int64)
        self.log_code = np.zeros(0, np.int8)
        self.log_slot = np.zeros(0, np.int32)
        self.log_uid = np.zeros(0, np.int64)
        self.log_prev = np.zeros(0, np.int32)
        self.log_prev_type = np.zeros(0, np.int32)
        self.log_prev_explicit = np.zeros(0, np.int32)
        self.log_prev_arrival = np.zeros(0, np.int32)  # of an arrival: the previous one
        self.log_prev_explicit_arrival = np.zeros(0, np.int32)
        # (user, type, item) -> latest action's ordinal; (user, item) -> latest impression's
        self._pairs: dict[int, int] = {}
        self._impressed: dict[int, int] = {}
        self._pairs_kept = 0
        self._impressed_kept = 0
        self._grow(capacity)

    # -- slots -----------------------------------------------------------------------

    def _grow(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        old, new = self.capacity, max(needed, 2 * self.capacity, 64)

        def grown(a: npt.NDArray[Any], fill: float = 0) -> Any:
            out = np.full((new, *a.shape[1:]), fill, a.dtype)
            out[:old] = a
            return out

        self.uid = grown(self.uid, -1)
        for name in self._COUNTERS:
            setattr(self, name, grown(getattr(self, name)))
        self.first_at = grown(self.first_at, math.inf)
        self.last_at = grown(self.last_at, -math.inf)
        self.rule_at = grown(self.rule_at, math.nan)
        self.hours = grown(self.hours)
        self.type_total = grown(self.type_total)
        self.head = grown(self.head, -1)
        self.type_head = grown(self.type_head, -1)
        self.explicit_head = grown(self.explicit_head, -1)
        self.arrival_head = grown(self.arrival_head, -1)
        self.explicit_arrival_head = grown(self.explicit_arrival_head, -1)
        self.capacity = new
        self._cell_cache = None

    def open(self, slots: Ints) -> None:
        """Start empty evidence in ``slots`` (free ones, or ones :meth:`close` d)."""
        if not len(slots):
            return
        if len(slots) == 1:  # one new user (a small round's usual): no numpy calls
            slot = int(slots[0])
            self._grow(slot + 1)
            self.uid[slot] = self._next_uid
            self._next_uid += 1
            return
        self._grow(int(slots.max()) + 1)
        self.uid[slots] = np.arange(self._next_uid, self._next_uid + len(slots))
        self._next_uid += len(slots)

    def close(self, slots: Ints) -> None:
        """Forget the users in ``slots``: their rows of the log become unreachable (and are
        dropped by the next compaction); the slots may be opened again."""
        if not len(slots):
            return
        self.uid[slots] = -1
        for name in self._COUNTERS:
            getattr(self, name)[slots] = 0
        self.first_at[slots] = math.inf
        self.last_at[slots] = -math.inf
        self.rule_at[slots] = math.nan
        self.hours[slots] = 0
        self.type_total[slots] = 0
        self.head[slots] = -1
        self.type_head[slots] = -1
        self.explicit_head[slots] = -1
        self.arrival_head[slots] = -1
        self.explicit_arrival_head[slots] = -1
        for slot in slots.tolist():
            self.ratings.pop(slot, None)
            self.review_keys.pop(slot, None)

    # -- the fold --------------------------------------------------------------------

    def fold(
        self,
        slots: Ints,
        codes: Ints,
        item_ids: Sequence[str],
        values: Floats,
        times: Floats,
        items: ItemStats,
        texts: TextRegistry | None = None,
        user_ids: Sequence[str] | None = None,
        review_texts: Sequence[str | None] | None = None,
    ) -> tuple[Ints, Ints, Ints]:
        """Fold a batch of events, in arrival order, into the users' evidence (as
        :func:`recloop.core.spam.record_event` does for each, in turn): ``codes`` by
        :data:`CODES`, ``values`` NaN where an event has none. Ratings update ``items``;
        reviews' texts (``review_texts``, parallel to the events) are registered in
        ``texts`` under ``user_ids``.

        Returns the batch's distinct slots (ascending), each one's first event and its
        number of events (``np.unique(slots, return_index=True, return_counts=True)``,
        from the grouping the fold makes anyway)."""
        n = len(slots)
        if n == 0:
            none = np.zeros(0, np.int64)
            return none, none, none
        if n <= _FOLD_STEPS:
            return self._fold_steps(
                slots, codes, item_ids, values, times, items, texts, user_ids, review_texts
            )
        config = self.config
        remembered = config.remembered_items
        hashes = np.fromiter(map(hash, item_ids), np.int64, n)
        uids = self.uid[slots]
        order = np.argsort(slots, kind="stable")
        sorted_slots = slots[order]
        starts = np.flatnonzero(run_starts(sorted_slots))
        sizes = run_sizes(starts, n)
        group_start = np.repeat(starts, sizes)
        grouped = sorted_slots[starts], order[starts], sizes

        def running(mask: npt.NDArray[np.bool_]) -> Ints:
            """How many events of the same user up to and including each satisfy
            ``mask``, in arrival order."""
            m = mask[order].astype(np.int64)
            c = np.cumsum(m)
            out = np.empty(n, np.int64)
            out[order] = c - (c[group_start] - m[group_start])
            return out

        def add(column: Ints, mask: npt.NDArray[np.bool_]) -> None:
            np.add.at(column, slots[mask], 1)

        add(self.events, np.ones(n, np.bool_))
        np.minimum.at(self.first_at, slots, times)
        np.maximum.at(self.last_at, slots, times)

        # impressions and views: each one's ordinal among the user's
        shown = (codes == _IMPRESSION) | (codes == _VIEW)
        seen_at = self.seen[slots] + running(shown)
        add(self.seen, shown)
        clicks = codes == _CLICK
        if clicks.any():
            unseen = self._unseen(clicks, shown, seen_at, uids, hashes)
            add(self.clicks, clicks)
            add(self.unseen_clicks, unseen)
            items.note_clicks(int(np.count_nonzero(clicks)), int(np.count_nonzero(unseen)))
        if shown.any():
            packed = (uids[shown] << 32) | seen_at[shown]
            self._impressed.update(
                zip(_keys(uids[shown], hashes[shown]).tolist(), packed.tolist(), strict=True)
            )
            if len(self._impressed) > max(2 * self._impressed_kept, self._floor):
                self._impressed = self._trimmed(self._impressed, self.seen, remembered - 1)
                self._impressed_kept = len(self._impressed)

        acts = codes != _IMPRESSION
        if not acts.any():
            return grouped
        ordinal = self.actions[slots] + running(acts)
        add(self.actions, acts)
        a = np.flatnonzero(acts)
        self._repeats(a, slots, uids, hashes ^ self._type_hash[codes], ordinal)

        dwell = (codes == _DWELL) & ~np.isnan(values)
        add(self.dwells, dwell)
        add(self.short_dwells, dwell & (values < config.short_dwell_seconds))
        hour = (np.floor_divide(times[a], 3600.0) % _HOURS).astype(np.int64)
        # flat indices and an int32 one: ``ufunc.at``'s fast path (a 2-D index, or a
        # Python int cast to int32, takes the generic loop, twenty times slower)
        np.add.at(self.hours.reshape(-1), slots[a] * _HOURS + hour, _ONE)
        np.add.at(self.type_total.reshape(-1), slots[a] * _T + codes[a], _ONE)
        rows, arrival, explicit_arrival = self._append(a, slots, uids, codes, hashes, times)
        self._hard_rules(a, rows, arrival, explicit_arrival, slots, times, ordinal)
        if self._rows > max(2 * self._kept_after_compaction, self._floor):
            self.compact()
        profiled = np.flatnonzero((codes == _RATING) | (codes == _REVIEW))
        if len(profiled):
            self._profiles(
                profiled, slots, codes, item_ids, values, items, texts, user_ids, review_texts
            )
        return grouped

    def _fold_steps(
        self,
        slots: Ints,
        codes: Ints,
        item_ids: Sequence[str],
        values: Floats,
        times: Floats,
        items: ItemStats,
        texts: TextRegistry | None,
        user_ids: Sequence[str] | None,
        review_texts: Sequence[str | None] | None,
    ) -> tuple[Ints, Ints, Ints]:
        """:meth:`fold`, event by event in Python numbers (a round of up to
        :data:`_FOLD_STEPS` events): each event's counters, impression and pair keys, row
        of the log with its links, and hard rules in one pass, read and written through
        :meth:`_cells`; the profiles as :meth:`fold` takes them. An event's walks back
        reach only earlier rows, so one event at a time is the sorted paths' batch,
        applied in turn."""
        n = len(slots)
        config = self.config
        remembered = config.remembered_items
        short = config.short_dwell_seconds
        limit = int(config.max_actions_per_second)
        explicit_limit = int(config.max_explicit_per_second)
        self._reserve(self._rows + n)
        (
            uid_of, events, seen, actions, clicks, unseen_clicks, dwells, short_dwells,
            repeats, most, rule, first_at, last_at, rule_at, hours, type_total, head,
            type_head, explicit_head, arrival_head, explicit_arrival_head, log_t, log_item,
            log_code, log_slot, log_uid, log_prev, log_prev_type, log_prev_explicit,
            log_prev_arrival, log_prev_explicit_arrival,
        ) = self._cells()  # fmt: skip
        impressed, pairs = self._impressed, self._pairs
        type_hash = self._type_hash_list
        start = row = self._rows
        first: dict[int, int] = {}
        count: dict[int, int] = {}
        profiled: list[int] = []
        shown_any = False
        clicked = unseen = 0
        for i, slot, code, t, v, item_id in zip(
            range(n), slots.tolist(), codes.tolist(), times.tolist(), values.tolist(), item_ids,
            strict=False,
        ):  # fmt: skip
            h = hash(item_id)
            uid = uid_of[slot]
            spread = (uid * _GOLDEN_INT) & _MASK
            if slot in count:
                count[slot] += 1
            else:
                count[slot], first[slot] = 1, i
            events[slot] += 1
            if t < first_at[slot]:
                first_at[slot] = t
            if t > last_at[slot]:
                last_at[slot] = t
            if code in (_IMPRESSION, _VIEW):
                shown_any = True
                at_seen = seen[slot] + 1
                seen[slot] = at_seen
                impressed[(h & _MASK) ^ spread] = (uid << 32) | at_seen
                if code == _IMPRESSION:
                    continue
            elif code == _CLICK:
                clicks[slot] += 1
                clicked += 1
                found = impressed.get((h & _MASK) ^ spread, -1)
                if found < 0 or seen[slot] - (found & 0xFFFFFFFF) >= remembered:
                    unseen_clicks[slot] += 1
                    unseen += 1
            elif code in (_RATING, _REVIEW):
                profiled.append(i)
            # an action: its ordinal, whether its (type, item) pair repeats, its counters
            at = actions[slot] + 1
            actions[slot] = at
            key = ((h ^ type_hash[code]) & _MASK) ^ spread
            found = pairs.get(key, -1)
            if found >= 0 and at - (found & 0xFFFFFFFF) <= remembered:
                repeats[slot] += 1
            pairs[key] = (uid << 32) | at
            if code == _DWELL and v == v:  # NaN: no dwell time
                dwells[slot] += 1
                short_dwells[slot] += v < short
            hours[slot * _HOURS + int(t // 3600.0 % _HOURS)] += 1
            by_type = slot * _T + code
            type_total[by_type] += 1
            # its row of the log, linked (:meth:`_append`)
            log_t[row] = t
            log_item[row] = h
            log_code[row] = code
            log_slot[row] = slot
            log_uid[row] = uid
            prev = head[slot]
            log_prev[row] = prev
            head[slot] = row
            log_prev_type[row] = type_head[by_type]
            type_head[by_type] = row
            arrival = prev < 0 or log_t[prev] != t
            if arrival:
                log_prev_arrival[row] = arrival_head[slot]
                arrival_head[slot] = row
            else:
                log_prev_arrival[row] = -1
            explicit_arrival = False
            if _EXPLICIT_CODES[code]:
                prev = explicit_head[slot]
                log_prev_explicit[row] = prev
                explicit_head[slot] = row
                explicit_arrival = prev < 0 or log_t[prev] != t
            else:
                log_prev_explicit[row] = -1
            if explicit_arrival:
                log_prev_explicit_arrival[row] = explicit_arrival_head[slot]
                explicit_arrival_head[slot] = row
            else:
                log_prev_explicit_arrival[row] = -1
            # the hard rules (:meth:`_hard_rules`), the latest violation winning
            if at > limit and arrival:
                cur = log_prev_arrival[row]
                for _ in range(limit):
                    if cur < 0 or abs(log_t[cur] - t) > 1.0:
                        break
                    cur = log_prev_arrival[cur]
                else:
                    held = rule_at[slot]
                    if held != held or t >= held:  # NaN: none yet
                        rule_at[slot] = t
                        rule[slot] = _ACTIONS_RULE
            if explicit_arrival:
                within = 1
                cur = log_prev_explicit_arrival[row]
                for _ in range(explicit_limit):
                    if cur < 0:
                        break
                    within += abs(log_t[cur] - t) <= 1.0
                    cur = log_prev_explicit_arrival[cur]
                if within > most[slot]:
                    most[slot] = within
                if within > explicit_limit:
                    held = rule_at[slot]
                    if held != held or t >= held:
                        rule_at[slot] = t
                        rule[slot] = _EXPLICIT_RULE
            row += 1
        self._rows = row
        if clicked:
            items.note_clicks(clicked, unseen)
        touched = sorted(count)
        grouped = (
            np.array(touched, np.int64),
            np.array([first[s] for s in touched], np.int64),
            np.array([count[s] for s in touched], np.int64),
        )
        if shown_any and len(impressed) > max(2 * self._impressed_kept, self._floor):
            self._impressed = self._trimmed(impressed, self.seen, remembered - 1)
            self._impressed_kept = len(self._impressed)
        if row == start:
            return grouped
        if len(pairs) > max(2 * self._pairs_kept, self._floor):
            self._pairs = self._trimmed(pairs, self.actions, remembered)
            self._pairs_kept = len(self._pairs)
        if self._rows > max(2 * self._kept_after_compaction, self._floor):
            self.compact()
        if profiled:
            self._profiles(
                np.array(profiled, np.int64), slots, codes, item_ids, values, items, texts,
                user_ids, review_texts,
            )  # fmt: skip
        return grouped

    def _cells(self) -> tuple[Any, ...]:
        """The columns the small rounds read and write (:meth:`_fold_steps`), as
        memoryviews, in the order it unpacks them: an element of a memoryview is a Python
        number, several times cheaper to read or add to than a numpy scalar. Made again
        once :meth:`_grow` or :meth:`_reserve` replaced the arrays."""
        if self._cell_cache is None:
            self._cell_cache = tuple(memoryview(getattr(self, name).reshape(-1)) for name in _CELLS)
        return self._cell_cache

    def _unseen(
        self,
        clicks: npt.NDArray[np.bool_],
        shown: npt.NDArray[np.bool_],
        seen_at: Ints,
        uids: Ints,
        hashes: Ints,
    ) -> npt.NDArray[np.bool_]:
        """Which clicks' items were not among the user's latest ``remembered_items``
        impressions and views at the click."""
        remembered = self.config.remembered_items
        involved = np.flatnonzero(clicks | shown)
        keys = _keys(uids[involved], hashes[involved])
        by_key = np.argsort(keys, kind="stable")  # ``involved`` ascends
        k, idx = keys[by_key], involved[by_key]
        run_start = run_starts(k)
        first = np.maximum.accumulate(np.where(run_start, np.arange(len(k)), 0))
        marker = np.where(shown[idx], np.arange(len(k)), -1)
        last = np.maximum.accumulate(marker)
        in_batch = last >= first  # an impression of the item earlier in this batch
        at = np.where(in_batch, seen_at[idx[np.maximum(last, 0)]], -1)
        is_click = clicks[idx]
        ask = is_click & ~in_batch
        if ask.any():
            found = np.fromiter(map(self._impressed.get, k[ask].tolist(), _NONE), np.int64)
            at[ask] = np.where(found < 0, -1, found & 0xFFFFFFFF)
        unseen = np.zeros(len(clicks), np.bool_)
        unseen[idx[is_click]] = (at[is_click] < 0) | (
            seen_at[idx[is_click]] - at[is_click] >= remembered
        )
        return unseen

    def _repeats(self, a: Ints, slots: Ints, uids: Ints, pair_hashes: Ints, ordinal: Ints) -> None:
        """Count the actions ``a`` whose (type, item) pair was among the user's previous
        ``remembered_items`` actions; remember each pair's latest ordinal."""
        remembered = self.config.remembered_items
        keys = _keys(uids[a], pair_hashes[a])
        by_key = np.argsort(keys, kind="stable")  # ``a`` ascends: ties stay in arrival order
        k, idx = keys[by_key], a[by_key]
        later = repeats(k)  # the pair occurred earlier in this batch
        before = np.full(len(k), -1, np.int64)
        before[later] = ordinal[idx[np.flatnonzero(later) - 1]]
        ask = ~later
        found = np.fromiter(map(self._pairs.get, k[ask].tolist(), _NONE), np.int64)
        before[ask] = np.where(found < 0, -1, found & 0xFFFFFFFF)
        repeat = (before >= 0) & (ordinal[idx] - before <= remembered)
        np.add.at(self.repeats, slots[idx[repeat]], 1)
        packed = (uids[a] << 32) | ordinal[a]
        self._pairs.update(zip(keys.tolist(), packed.tolist(), strict=True))
        if len(self._pairs) > max(2 * self._pairs_kept, self._floor):
            self._pairs = self._trimmed(self._pairs, self.actions, remembered)
            self._pairs_kept = len(self._pairs)

    def _trimmed(self, ordinals: dict[int, int], latest: Ints, window: int) -> dict[int, int]:
        """The entries of ``ordinals`` still within ``window`` of their user's latest
        ordinal (``latest`` by slot), users forgotten since left out."""
        keys = np.fromiter(ordinals.keys(), np.uint64, len(ordinals))
        packed = np.fromiter(ordinals.values(), np.int64, len(ordinals))
        uid, at = packed >> 32, packed & 0xFFFFFFFF
        live = np.flatnonzero(self.uid >= 0)
        by_uid = np.argsort(self.uid[live])
        live_uids = self.uid[live][by_uid]
        pos = np.clip(np.searchsorted(live_uids, uid), 0, max(len(live_uids) - 1, 0))
        alive = live_uids[pos] == uid if len(live_uids) else np.zeros(len(uid), np.bool_)
        slot = live[by_uid][pos] if len(live_uids) else np.zeros(len(uid), np.int64)
        keep = alive & (latest[slot] - at <= window)
        if 4 * int(keep.sum()) > 3 * len(keep):
            return ordinals  # most are still needed: not worth a copy (again once doubled)
        return dict(zip(keys[keep].tolist(), packed[keep].tolist(), strict=True))

    def _append(
        self, a: Ints, slots: Ints, uids: Ints, codes: Ints, hashes: Ints, times: Floats
    ) -> tuple[Ints, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Append the actions ``a`` to the log, linked; their rows, and which of them are
        arrivals (:meth:`arrivals`) and explicit arrivals (the hard rules' walks)."""
        m = len(a)
        start = self._rows
        self._reserve(start + m)
        rows = np.arange(start, start + m)
        s, c = slots[a], codes[a]
        self.log_t[rows] = times[a]
        self.log_item[rows] = hashes[a]
        self.log_code[rows] = c
        self.log_slot[rows] = s
        self.log_uid[rows] = uids[a]
        self.log_prev[rows] = _link(s, rows, self.head)
        flat = s * _T + c
        type_head = self.type_head.reshape(-1)
        self.log_prev_type[rows] = _link(flat, rows, type_head)
        explicit = _EXPLICIT[c]
        self.log_prev_explicit[rows] = -1
        if explicit.any():
            self.log_prev_explicit[rows[explicit]] = _link(
                s[explicit], rows[explicit], self.explicit_head
            )
        arrival = self.arrivals(rows, self.log_prev)
        self.log_prev_arrival[rows] = -1
        self.log_prev_arrival[rows[arrival]] = _link(s[arrival], rows[arrival], self.arrival_head)
        self.log_prev_explicit_arrival[rows] = -1
        explicit_arrival = np.zeros(m, np.bool_)
        if explicit.any():
            explicit_arrival[explicit] = self.arrivals(rows[explicit], self.log_prev_explicit)
            e_rows = rows[explicit_arrival]
            self.log_prev_explicit_arrival[e_rows] = _link(
                s[explicit_arrival], e_rows, self.explicit_arrival_head
            )
        self._rows = start + m
        return rows, arrival, explicit_arrival

    def arrivals(self, rows: Ints, links: Index) -> npt.NDArray[np.bool_]:
        """Whether each of ``rows`` is at another instant than its predecessor along
        ``links`` (or has none): an arrival of its own."""
        prev = links[rows]
        arrival: npt.NDArray[np.bool_] = (prev < 0) | (
            self.log_t[np.maximum(prev, 0)] != self.log_t[rows]
        )
        return arrival

    def _reserve(self, needed: int) -> None:
        if needed <= len(self.log_t):
            return
        size = max(needed, 2 * len(self.log_t), 1024)
        for name in _LOG_COLUMNS:
            old = getattr(self, name)
            new = np.zeros(size, old.dtype)
            new[: self._rows] = old[: self._rows]
            setattr(self, name, new)
        self._cell_cache = None

    def _hard_rules(
        self,
        a: Ints,
        rows: Ints,
        arrival: npt.NDArray[np.bool_],
        explicit_arrival: npt.NDArray[np.bool_],
        slots: Ints,
        times: Floats,
        ordinal: Ints,
    ) -> None:
        """The hard rules for each action: more than ``limit`` actions (explicit actions)
        within one second, counting it and the user's previous ``limit``."""
        config = self.config
        limit = int(config.max_actions_per_second)
        # of each arrival, all of the previous ``limit`` arrivals within one second: only
        # users with that many actions
        maybe = (ordinal[a] > limit) & arrival
        at = rows[maybe]
        t = times[a][maybe]
        whose = np.flatnonzero(maybe)
        prev = self.log_prev_arrival
        cur = prev[at]
        for _ in range(limit):
            close = (cur >= 0) & (np.abs(self.log_t[np.maximum(cur, 0)] - t) <= 1.0)
            whose, t, cur = whose[close], t[close], prev[cur[close]]
            if not len(whose):
                break
        violations = [(a[whose], _ACTIONS_RULE)]
        explicit = np.flatnonzero(explicit_arrival)
        if len(explicit):
            limit = int(config.max_explicit_per_second)
            t = times[a][explicit]
            count = np.ones(len(explicit), np.int64)
            prev = self.log_prev_explicit_arrival
            cur = prev[rows[explicit]]
            for _ in range(limit):
                live = cur >= 0
                if not live.any():
                    break
                safe = np.maximum(cur, 0)
                count += live & (np.abs(self.log_t[safe] - t) <= 1.0)
                cur = np.where(live, prev[safe], -1)
            events = a[explicit]
            np.maximum.at(self.max_explicit_in_second, slots[events], count)
            violations.append((events[count > limit], _EXPLICIT_RULE))
        index = np.concatenate([v for v, _ in violations])
        if not len(index):
            return
        rule = np.concatenate([np.full(len(v), r, np.int64) for v, r in violations])
        # as if applied in turn: the latest violation wins; at one instant, the later
        # event, and of one event the explicit rule (checked second)
        turn = index * 2 + (rule == _EXPLICIT_RULE)
        order = np.lexsort((turn, times[index], slots[index]))
        s = slots[index][order]
        won = order[run_ends(s)]
        s, t, r = slots[index][won], times[index][won], rule[won]
        held = self.rule_at[s]
        take = np.isnan(held) | (t >= held)
        self.rule_at[s[take]] = t[take]
        self.rule[s[take]] = r[take]

    def _profiles(
        self,
        profiled: Ints,
        slots: Ints,
        codes: Ints,
        item_ids: Sequence[str],
        values: Floats,
        items: ItemStats,
        texts: TextRegistry | None,
        user_ids: Sequence[str] | None,
        review_texts: Sequence[str | None] | None,
    ) -> None:
        """Ratings and reviews, one by one: the profile a judgement reads item by item."""
        config = self.config
        lengths: list[tuple[int, int]] = []  # profile lengths moved, noted once at the end
        for n, slot, code, value in zip(
            profiled.tolist(),
            slots[profiled].tolist(),
            codes[profiled].tolist(),
            values[profiled].tolist(),
            strict=True,
        ):
            if code == _RATING:
                if math.isnan(value):
                    continue
                item_id = item_ids[n]
                ratings = self.ratings.get(slot)
                if ratings is None:
                    ratings = self.ratings[slot] = {}
                old = ratings.pop(item_id, None)
                before = len(ratings) + (old is not None)
                if len(ratings) >= config.max_profile_ratings:
                    del ratings[next(iter(ratings))]
                ratings[item_id] = value
                if old is None:
                    items.add_rating(item_id, value)
                else:
                    items.replace_rating(item_id, old, value)
                if len(ratings) != before:
                    lengths.append((before, len(ratings)))
                continue
            text = None if review_texts is None else review_texts[n]
            if text is None:
                continue
            if texts is not None:
                if user_ids is None:
                    raise ValueError("user_ids are needed to register reviews' texts")
                copies = texts.add(user_ids[n], text)
                if copies > self.max_text_copies[slot]:
                    self.max_text_copies[slot] = copies
            self.reviews[slot] += 1
            self.reviews_with_links[slot] += has_link(text)
            self.reviews_with_repeats[slot] += has_repeated_chars(text)
            key = text_key(text, config.text_min_chars)
            if key is not None:
                keys = self.review_keys.get(slot)
                if keys is None:
                    keys = self.review_keys[slot] = deque(maxlen=config.remembered_reviews)
                keys.append(key)
        if lengths:
            items.note_profile_lengths(lengths)

    # -- compaction ------------------------------------------------------------------

    def compact(self) -> None:
        """Drop the log's rows no walk reaches: those of forgotten users, and those past
        the latest ``recent_actions`` of their user and of their (user, type)."""
        n = self._rows
        keep = self.reachable()
        new_index = np.cumsum(keep) - 1
        kept = int(keep.sum())

        def moved(links: Index) -> Ints:
            ok = links >= 0
            out = np.full(len(links), -1, np.int64)
            out[ok] = np.where(keep[links[ok]], new_index[links[ok]], -1)
            return out

        for name in ("log_t", "log_item", "log_code", "log_slot", "log_uid"):
            column = getattr(self, name)
            column[:kept] = column[:n][keep]
        for name in _LINKS:
            column = getattr(self, name)
            column[:kept] = moved(column[:n][keep])
        self.head[:] = moved(self.head)
        self.arrival_head[:] = moved(self.arrival_head)
        self.explicit_arrival_head[:] = moved(self.explicit_arrival_head)
        self.type_head[:] = moved(self.type_head.reshape(-1)).reshape(self.type_head.shape)
        self.explicit_head[:] = moved(self.explicit_head)
        self._rows = self._kept_after_compaction = kept

    def reachable(self) -> npt.NDArray[np.bool_]:
        """Which rows of the log a walk may reach: the latest actions, of each type, and
        the hard rules' windows of the live users, walked from their heads (a row within
        that many steps of a head was within them at every compaction before, so its
        chain there is whole)."""
        config = self.config
        recent = config.recent_actions
        live = np.flatnonzero(self.uid >= 0)
        keep = np.zeros(self._rows, np.bool_)
        _reach(keep, self.head[live], self.log_prev, recent)
        _reach(keep, self.type_head[live].reshape(-1), self.log_prev_type, recent)
        explicit_depth = int(config.max_explicit_per_second)
        _reach(keep, self.explicit_head[live], self.log_prev_explicit, explicit_depth)
        # the hard rules' walks: along the arrivals
        rule_depth = int(config.max_actions_per_second)
        _reach(keep, self.arrival_head[live], self.log_prev_arrival, rule_depth)
        _reach(
            keep, self.explicit_arrival_head[live], self.log_prev_explicit_arrival, explicit_depth
        )
        return keep

    # -- reads -----------------------------------------------------------------------

    def _walk(self, start: Index, links: Index, lengths: Index) -> tuple[Ints, Ints]:
        """Follow ``links`` back from ``start`` for ``lengths`` rows each; the rows laid end
        to end, oldest first within each, and each one's owner (index into ``start``)."""
        steps = int(lengths.max()) if len(lengths) else 0
        path = np.full((len(start), max(steps, 1)), -1, np.int64)
        cur = start.copy()
        active = np.flatnonzero(lengths > 0)
        for step in range(steps):
            active = active[lengths[active] > step]
            if not len(active):
                break
            at = cur[active]
            path[active, step] = at
            cur[active] = np.where(at >= 0, links[np.maximum(at, 0)], -1)
        taken = path >= 0
        owner = np.repeat(np.arange(len(start)), taken.sum(axis=1))
        rows = path[:, ::-1][taken[:, ::-1]]
        return rows, owner

    def _gather(self, slots: Ints) -> tuple[Ints, Ints, Ints, Ints]:
        """The latest actions of the users in ``slots`` and of each one's dominant type:
        ``(rows, sizes, dominant_rows, dominant_sizes)``, rows laid end to end."""
        recent = self.config.recent_actions
        sizes = np.minimum(self.actions[slots], recent)
        rows, _ = self._walk(self.head[slots], self.log_prev, sizes)
        counts = np.minimum(self.type_total[slots], recent)
        dominant = np.argmax(counts * _T + np.arange(_T), axis=1)
        dominant_sizes = counts[np.arange(len(slots)), dominant]
        starts = self.type_head[slots, dominant]
        dominant_rows, _ = self._walk(starts, self.log_prev_type, dominant_sizes)
        return rows, sizes, dominant_rows, dominant_sizes

    def views(self, slots: Ints) -> list[ActivityView]:
        """Each user's evidence as the judgement reads it (:meth:`evidence` without the
        readings)."""
        return self._views(slots, *self._gather(slots))

    def columns(
        self, slots: Ints, catalogue: int = 0
    ) -> tuple[EvidenceColumns, dict[str, npt.NDArray[Any]]]:
        """The evidence of the users in ``slots`` as the judgement reads it, as columns
        (:class:`~recloop.core.spam_grade.EvidenceColumns`), and their readings
        (:func:`~recloop.core.spam_batch.reading_columns`; ``catalogue`` as
        :func:`recloop.core.spam.item_diversity`'s): one walk of the log for both, no
        object per user (:meth:`views` builds them where one is needed)."""
        rows, sizes, dominant_rows, dominant_sizes = self._gather(slots)
        readings = self._readings(slots, rows, sizes, dominant_rows, dominant_sizes, catalogue)
        reviews = self.reviews[slots]
        wrote = np.flatnonzero(reviews > 0)
        keys = self.review_keys
        evidence = EvidenceColumns(
            actions=self.actions[slots],
            repeats=self.repeats[slots],
            action_types=(self.type_total[slots] > 0).sum(axis=1),
            max_explicit_in_second=self.max_explicit_in_second[slots],
            dwells=self.dwells[slots],
            short_dwells=self.short_dwells[slots],
            clicks=self.clicks[slots],
            unseen_clicks=self.unseen_clicks[slots],
            reviews=reviews,
            reviews_with_links=self.reviews_with_links[slots],
            reviews_with_repeats=self.reviews_with_repeats[slots],
            max_text_copies=self.max_text_copies[slots],
            hard_rule_at=self.rule_at[slots],
            rule=self.rule[slots],
            reasons=self._reasons(),
            review_keys={
                i: keys.get(slot, ())
                for i, slot in zip(wrote.tolist(), slots[wrote].tolist(), strict=True)
            },
        )
        return evidence, readings

    def _reasons(self) -> list[str | None]:
        """The hard rules' reasons, by the rule column's codes."""
        reasons: list[str | None] = [None, None, None]
        reasons[_ACTIONS_RULE] = f"more than {self.config.max_actions_per_second:g} events in 1 s"
        reasons[_EXPLICIT_RULE] = (
            f"more than {self.config.max_explicit_per_second:g} explicit events in 1 s"
        )
        return reasons

    def _readings(
        self,
        slots: Ints,
        rows: Ints,
        sizes: Ints,
        dominant_rows: Ints,
        dominant_sizes: Ints,
        catalogue: int,
    ) -> dict[str, npt.NDArray[Any]]:
        return reading_columns(
            self.log_t[rows],
            sizes,
            self.log_t[dominant_rows],
            dominant_sizes,
            self.hours[slots],
            self.log_item[rows],
            catalogue,
        )

    def _views(
        self, slots: Ints, rows: Ints, sizes: Ints, dominant_rows: Ints, dominant_sizes: Ints
    ) -> list[ActivityView]:
        """The views of the users in ``slots``, their latest actions gathered
        (:meth:`_gather`)."""
        ends = np.cumsum(sizes)
        dominant_ends = np.cumsum(dominant_sizes)
        times, items = self.log_t[rows], self.log_item[rows]
        dominant_times = self.log_t[dominant_rows]
        reasons = self._reasons()
        columns = {name: getattr(self, name)[slots].tolist() for name in self._COUNTERS}
        hard_rule_at = [None if at != at else at for at in self.rule_at[slots].tolist()]  # NaN
        action_types = (self.type_total[slots] > 0).sum(axis=1).tolist()
        ratings, review_keys = self.ratings, self.review_keys
        # each user's share of the gathered rows, sliced with Python ints
        his, d_his = ends.tolist(), dominant_ends.tolist()
        los, d_los = (ends - sizes).tolist(), (dominant_ends - dominant_sizes).tolist()
        views = [
            ActivityView(
                events=events,
                actions=actions,
                seen=seen,
                first_at=first_at,
                last_at=last_at,
                clicks=clicks,
                unseen_clicks=unseen_clicks,
                dwells=dwells,
                short_dwells=short_dwells,
                repeats=repeats,
                action_types=types,
                max_explicit_in_second=max_explicit,
                hard_rule_at=at,
                hard_rule_reason=reasons[rule],
                hours=hours,
                ratings=ratings.get(slot, {}),
                reviews=reviews,
                reviews_with_links=with_links,
                reviews_with_repeats=with_repeats,
                max_text_copies=copies,
                review_keys=review_keys.get(slot, ()),
                latest_times=times[lo:hi],
                latest_items=items[lo:hi],
                dominant_times=dominant_times[d_lo:d_hi],
            )
            for (
                slot,
                events,
                actions,
                seen,
                first_at,
                last_at,
                clicks,
                unseen_clicks,
                dwells,
                short_dwells,
                repeats,
                types,
                max_explicit,
                at,
                rule,
                hours,
                reviews,
                with_links,
                with_repeats,
                copies,
                lo,
                hi,
                d_lo,
                d_hi,
            ) in zip(
                slots.tolist(),
                columns["events"],
                columns["actions"],
                columns["seen"],
                self.first_at[slots].tolist(),
                self.last_at[slots].tolist(),
                columns["clicks"],
                columns["unseen_clicks"],
                columns["dwells"],
                columns["short_dwells"],
                columns["repeats"],
                action_types,
                columns["max_explicit_in_second"],
                hard_rule_at,
                columns["rule"],
                self.hours[slots].tolist(),
                columns["reviews"],
                columns["reviews_with_links"],
                columns["reviews_with_repeats"],
                columns["max_text_copies"],
                los,
                his,
                d_los,
                d_his,
                strict=True,
            )
        ]
        return views


_LOG_COLUMNS: Final = (
    "log_t",
    "log_item",
    "log_code",
    "log_slot",
    "log_uid",
    "log_prev",
    "log_prev_type",
    "log_prev_explicit",
    "log_prev_arrival",
    "log_prev_explicit_arrival",
)
"""The log's columns, one row per action (:meth:`ActivityTable._reserve` grows them together)."""

_CELLS: Final = (
    "uid",
    "events",
    "seen",
    "actions",
    "clicks",
    "unseen_clicks",
    "dwells",
    "short_dwells",
    "repeats",
    "max_explicit_in_second",
    "rule",
    "first_at",
    "last_at",
    "rule_at",
    "hours",
    "type_total",
    "head",
    "type_head",
    "explicit_head",
    "arrival_head",
    "explicit_arrival_head",
    *_LOG_COLUMNS,
)
"""The columns :meth:`ActivityTable._cells` views, in :meth:`ActivityTable._fold_steps`'
order."""

_LINKS: Final = (
    "log_prev",
    "log_prev_type",
    "log_prev_explicit",
    "log_prev_arrival",
    "log_prev_explicit_arrival",
)
"""The log's links back (row to row), remapped by a compaction."""


def _link(keys: Ints, rows: Ints, heads: Index) -> Ints:
    """Each new row's previous row of the same key (in ``rows``' order, else the key's
    head); the heads move to each key's last new row.

    >>> heads = np.array([-1, 7, -1])
    >>> _link(np.array([1, 0, 1]), np.array([10, 11, 12]), heads).tolist(), heads.tolist()
    ([7, -1, 10], [11, 12, -1])
    """
    if len(keys) <= _STEPS:
        return _link_steps(keys, rows, heads)
    return _link_sorted(keys, rows, heads)


def _link_steps(keys: Ints, rows: Ints, heads: Index) -> Ints:
    """:func:`_link`, a row at a time."""
    prev = []
    for key, row in zip(keys.tolist(), rows.tolist(), strict=True):
        prev.append(int(heads[key]))
        heads[key] = row
    return np.array(prev, np.int64)


def _link_sorted(keys: Ints, rows: Ints, heads: Index) -> Ints:
    """:func:`_link`, the rows grouped by key with a stable sort."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    first = run_starts(k)
    prev = np.empty(len(keys), np.int64)
    ordered_rows = rows[order]
    prev_sorted = shifted(ordered_rows, -1)
    prev_sorted[first] = heads[k[first]]
    prev[order] = prev_sorted
    last = run_ends(k)
    heads[k[last]] = ordered_rows[last]
    return prev


def _reach(keep: npt.NDArray[np.bool_], starts: Index, links: Index, depth: int) -> None:
    """Mark in ``keep`` the rows within ``depth`` steps back along ``links`` from each of
    ``starts`` (-1: none)."""
    cur = starts[starts >= 0]
    for _ in range(depth):
        if not len(cur):
            return
        keep[cur] = True
        cur = links[cur]
        cur = cur[cur >= 0]
