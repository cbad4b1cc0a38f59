"""The guard: who may send events, and whose events are learnt from.

Every accepted event is evidence about its user (``core.spam``): timing,
behaviour, rating profile, review text. The guard keeps every tracked user's
evidence in memory, in columns by user slot (``core.spam_table``: a batch is
folded for all its users at once), judges users periodically, those due
together graded as columns (``core.spam_grade``), and at once on a hard rule
such as a flood, and acts on the verdict:

- ``trusted``: learnt from, the learning rate scaled by reliability/100;
- ``suspect`` (score < ``spam.suspect_threshold``): events accepted and kept,
  not learnt from (preferences, bandit, experiments);
- ``blocked`` (score < ``spam.block_threshold``, a hard rule, or by hand):
  new events are refused (403, or ``blocked`` in a batch).

Status changes are stored (``user_reliability``); the evidence itself is
not: after a restart, users start from their stored status and new evidence.

When users are judged: after 20 events, then after twice as many each time
(``judge_every_events``), in between at most every ``judge_every_seconds``
once ``min_new_events`` have arrived, at once on a hard rule, and, whatever
their event count, within ``judge_within_seconds`` of the arrival of their
last event: a sweep every quarter of that period judges every user with
unjudged evidence who has been quiet for half of it. The ingest path only
notes, once per batch, which users sent something.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from recloop.config import SpamSettings
from recloop.core.errors import NotFound
from recloop.core.events import Event, Fields
from recloop.core.spam import (
    ItemStats,
    ProfileFeatures,
    TextRegistry,
    UserActivity,
    Verdict,
    fit_norms,
    group_rule,
    judge,
)
from recloop.core.spam_batch import features_of, profile_feature_columns, readings_of_columns
from recloop.core.spam_grade import FeatureColumns, grade_columns
from recloop.core.spam_groups import GroupReading, Profile, find_groups
from recloop.core.spam_norms import ProfileNorms
from recloop.core.spam_table import CODES, ActivityTable, ActivityView
from recloop.pauses import let_requests_in
from recloop.ports import ReliabilityRecord, ReliabilityStore
from recloop.services.tasks import stop_tasks

log = logging.getLogger(__name__)


_ABSENT = itertools.repeat(-1)
_NO_GATE_VALUE = -1.0
_NO_GATE = itertools.repeat(_NO_GATE_VALUE)

_SWEEP_SLICE = 500
"""Users judged between two pauses of a sweep for requests."""

_JUDGE_AT_ONCE = 256
"""Users due together worth a judgement round of their own: fewer (and none for a hard
rule) wait for the next round (:meth:`GuardService.observe`'s ``wait_for_more``). A
round's fixed cost (the signals' numpy calls) is many users' own."""

_FEW = 4
"""Up to this many new users, their slots are set one by one (an assignment through a
one-element index array costs several times a scalar one)."""


class GuardService:
    def __init__(
        self,
        store: ReliabilityStore,
        config: SpamSettings,
        *,
        max_users: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``config``: the ``spam`` section; ``max_users``: users whose evidence is held
        (``cache.max_users``; the least recently active make room)."""
        self._store = store
        self._config = config
        self._max_users = max_users
        self._clock = clock
        # every tracked user's evidence, by slot (core.spam_table), and the guard's own
        # bookkeeping per slot: events since the last judgement, when that was, the
        # event count the next one is due at, its score (NaN: none yet), the latest use
        self._table = ActivityTable(config.detectors)
        self._slots: dict[str, int] = {}
        self._names: list[str | None] = []
        self._free: list[int] = []
        self._since = np.zeros(0, np.int64)
        self._judged_at = np.zeros(0)
        self._next_after = np.zeros(0, np.int64)
        self._score = np.zeros(0)
        self._touched = np.zeros(0, np.int64)
        self._pending_at = np.zeros(0)
        """When the latest events not judged yet arrived (NaN: none)."""
        self._waiting = np.zeros(0, np.int64)
        """Users due, kept for the next judgement round (``observe(wait_for_more=True)``)."""
        self._tick = 0
        self._items = ItemStats()
        self._texts = TextRegistry()
        self._records: dict[str, ReliabilityRecord] = {}
        self._gates: dict[str, float] = {}
        """What each record makes of the user's events: their score, NaN when held."""
        self._blocked: set[str] = set()
        """The users whose record blocks them (:meth:`blocked_among` asks only this)."""
        self._listeners: list[Callable[[], None]] = []
        self._sweeper: asyncio.Task[None] | None = None
        # what the population makes normal, and who is in a group (core.spam_norms,
        # core.spam_groups): refreshed by the sweep
        self._sample: dict[str, ProfileFeatures] = {}
        self._norms: ProfileNorms | None = None
        self._sampled_since_fit = 0
        self._groups: dict[str, GroupReading] = {}
        self._grouped_at = -float("inf")
        self._grouped_ratings = 0
        # The score of a user with no evidence yet (the Beta reputation's prior).
        self.fresh_score = judge(
            UserActivity(config.detectors), ItemStats(), config.detectors, clock(), TextRegistry()
        ).score

    async def start(self) -> None:
        """Load the stored records (again: the distributed API calls it to refresh them);
        the first call starts the sweep of users due for judgement."""
        for record in await self._store.get_reliability():
            self._keep(record)
        self._flags_moved()
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="guard-sweep")

    async def stop(self) -> None:
        """Stop the sweep (the evidence stays in memory)."""
        sweeper, self._sweeper = self._sweeper, None
        await stop_tasks(sweeper)

    async def _sweep_forever(self) -> None:
        period = self._config.judge_within_seconds / 4
        while True:
            await asyncio.sleep(period)
            try:
                await self.sweep()
            except Exception as exc:  # the store is down: the records stay in memory
                log.warning("guard sweep failed: %s", exc)

    async def sweep(self, now: float | None = None) -> int:
        """Judge every user with unjudged evidence whose latest events arrived at least
        half of ``judge_within_seconds`` ago; how many were judged.

        Run every quarter of ``judge_within_seconds`` (:meth:`start`), so that nobody
        waits longer than three quarters of it after their last event.
        """
        now = self._clock() if now is None else now
        await self.judge_waiting(now)
        again = await self._regroup(now)
        if self._refresh_norms():  # new norms: the flagged are judged again by them
            records = self._records.items()
            flagged = (u for u, r in records if r.status != "trusted" and not r.manual)
            again += list(itertools.islice(flagged, self._config.rejudge_flagged))
        quiet_since = now - self._config.judge_within_seconds / 2
        pending_at = self._pending_at
        quiet = np.flatnonzero(pending_at <= quiet_since)  # NaN: nothing new
        due = quiet[np.argsort(pending_at[quiet], kind="stable")].tolist()
        # the others named, unless evicted or erased since (nothing to judge then)
        held = [self._slots.get(user_id) for user_id in dict.fromkeys(again)]
        due += [slot for slot in held if slot is not None and math.isnan(pending_at[slot])]
        # In slices, the event loop serving in between: a sweep may find every user due.
        for start in range(0, len(due), _SWEEP_SLICE):
            changes = self._judge_slots(np.array(due[start : start + _SWEEP_SLICE], np.int64), now)
            if changes:
                await self._store.put_reliability(changes)
                self._flags_moved()
            await let_requests_in()
        return len(due)

    def _refresh_norms(self) -> bool:
        """Refit the population norms once a tenth of the sample is new; whether they
        were refitted."""
        if self._sampled_since_fit * 10 < max(len(self._sample), 1):
            return False
        self._norms = fit_norms(self._sample.values(), self._config.detectors)
        self._sampled_since_fit = 0
        return self._norms is not None

    async def _regroup(self, now: float) -> list[str]:
        """Run the group detector (every ``judge_within_seconds`` at most, when ratings
        arrived since); the users whose group reading changed. It reads copies of the
        profiles in a thread: the event loop serves meanwhile."""
        ratings = self._items.global_moments.n
        if (
            ratings == self._grouped_ratings
            or now - self._grouped_at < self._config.judge_within_seconds
        ):
            return []
        self._grouped_at, self._grouped_ratings = now, ratings
        table = self._table
        # the most recently active raters, oldest first
        raters = np.fromiter((s for s, r in table.ratings.items() if r), np.int64)
        raters = raters[np.argsort(self._touched[raters], kind="stable")]
        raters = raters[-self._config.group_profiles :]
        first_at = table.first_at[raters].tolist()
        profiles = {
            self._user(slot): Profile(dict(table.ratings[slot]), at)
            for slot, at in zip(raters.tolist(), first_at, strict=True)
        }
        found = await asyncio.to_thread(find_groups, profiles, group_rule(self._config.detectors))
        old, self._groups = self._groups, found
        return [u for u in {*old, *found} if old.get(u) != found.get(u)]

    def pending(self) -> int:
        """How many users have evidence not judged yet."""
        return int(np.count_nonzero(~np.isnan(self._pending_at)))

    # -- the hot path ------------------------------------------------------------

    def blocked(self, user_id: str) -> str | None:
        """Why the user's new events are refused, or None."""
        record = self._records.get(user_id)
        if record is None or record.status != "blocked":
            return None
        return record.reason

    def blocked_among(self, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` are blocked (:meth:`blocked` of a request's users, in
        one set operation; ``user_ids`` is not even read while nobody is blocked)."""
        return self._blocked.intersection(user_ids) if self._blocked else set()

    def reliability(self, user_id: str) -> float | None:
        """The processor's gate: reliability 0..100, or None for suspect and blocked users."""
        record = self._records.get(user_id)
        if record is not None:
            return record.score if record.status == "trusted" else None
        slot = self._slots.get(user_id)
        if slot is None:
            return self.fresh_score
        score = float(self._score[slot])
        return self.fresh_score if score != score else score  # NaN: not judged yet

    def reliabilities(self, user_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        """:meth:`reliability` of each user, NaN for suspect and blocked users (a batch's
        worth in a few C-level passes)."""
        n = len(user_ids)
        slots = np.fromiter(map(self._slots.get, user_ids, _ABSENT), np.int64, n)
        known = self._score[slots] if len(self._score) else np.full(n, math.nan)
        score = np.where(slots >= 0, known, math.nan)
        score = np.where(np.isnan(score), self.fresh_score, score)
        if self._gates:
            recorded = np.fromiter(map(self._gates.get, user_ids, _NO_GATE), np.float64, n)
            score = np.where(recorded == _NO_GATE_VALUE, score, recorded)
        return score

    def _keep(self, record: ReliabilityRecord) -> None:
        """Hold ``record`` as the user's (and what it makes of their events)."""
        self._records[record.user_id] = record
        self._gates[record.user_id] = record.score if record.status == "trusted" else math.nan
        if record.status == "blocked":
            self._blocked.add(record.user_id)
        else:
            self._blocked.discard(record.user_id)

    async def observe(self, events: Sequence[Event], wait_for_more: bool = False) -> None:
        """Take accepted events as evidence (folded together, :class:`ActivityTable`);
        judge the users whose turn it is.

        ``wait_for_more`` (the processor's rounds): a few users due, none for a hard rule,
        are judged with the next call's instead (or by :meth:`judge_waiting`), so that a
        stream of small rounds pays a judgement round's fixed cost half as often; their
        verdict lags by one round at most."""
        if not events:
            return
        now = self._clock()
        config = self._config
        n = len(events)
        user_ids = list(map(Fields.user_id, events))
        item_ids = list(map(Fields.item_id, events))
        types = list(map(Fields.type, events))
        values = list(map(Fields.value, events))
        self._items.note_items(item_ids, user_ids)
        slots = self._slots_of(user_ids)
        touched, first, counts = self._table.fold(
            slots,
            np.fromiter(map(CODES.__getitem__, types), np.int64, n),
            item_ids,
            np.array(values, np.float64) if None not in values else _floats(values),
            np.fromiter(map(Fields.timestamp, events), np.float64, n),
            self._items,
            self._texts,
            user_ids,
            list(map(Fields.text, events)) if "review" in types else None,
        )
        self._tick += 1
        self._touched[touched] = self._tick
        self._pending_at[touched] = now
        since = self._since[touched] + counts
        self._since[touched] = since
        # NaN: no violation
        ruled = now - self._table.rule_at[touched] <= config.detectors.hard_rule_seconds
        due = (
            (since >= self._next_after[touched])
            | (
                (since >= config.min_new_events)
                & (now - self._judged_at[touched] >= config.judge_every_seconds)
            )
            | ruled
        )
        due_slots = touched[due][np.argsort(first[due], kind="stable")]
        if wait_for_more:
            urgent = bool(ruled.any())  # a hard rule's user is among those due
            if not len(self._waiting) and len(due_slots) < _JUDGE_AT_ONCE and not urgent:
                self._waiting = due_slots
                return
            due_slots = _first_of_each(np.concatenate([self._waiting, due_slots]))
            self._waiting = self._waiting[:0]
        await self._judge_now(due_slots, now)

    async def judge_waiting(self, now: float | None = None) -> None:
        """Judge the users kept waiting by :meth:`observe` (the processor calls it when its
        rounds pause, the sweep before it looks for quiet users)."""
        waiting, self._waiting = self._waiting, self._waiting[:0]
        await self._judge_now(waiting, self._clock() if now is None else now)

    async def _judge_now(self, slots: npt.NDArray[np.int64], now: float) -> None:
        changes = self._judge_slots(slots, now)
        if changes:
            await self._store.put_reliability(changes)
            self._flags_moved()

    def _slots_of(self, user_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Each user's slot, opening slots for new users (the least recently active users
        make room past ``max_users``)."""
        slots = self._slots
        n = len(user_ids)
        found = np.fromiter(map(slots.get, user_ids, _ABSENT), np.int64, n)
        missing = np.flatnonzero(found < 0)
        if len(missing):  # only the events of new users are looked up again
            named = [user_ids[i] for i in missing.tolist()]
            new = list(dict.fromkeys(named))
            opened = self._open(new)
            slots.update(zip(new, opened, strict=True))
            found[missing] = np.fromiter(map(slots.__getitem__, named), np.int64, len(named))
            if len(slots) > self._max_users:
                self._evict(len(slots) - self._max_users, set(user_ids))
        return found

    def _open(self, user_ids: list[str]) -> list[int]:
        """Fresh slots for ``user_ids``, their evidence empty."""
        reused = self._free[-len(user_ids) :] if user_ids else []
        del self._free[len(self._free) - len(reused) :]
        start = len(self._names)
        opened = reused + list(range(start, start + len(user_ids) - len(reused)))
        self._names.extend([None] * (len(user_ids) - len(reused)))
        capacity = len(self._names)
        if capacity > len(self._since):
            size = max(capacity, 2 * len(self._since), 64)
            self._since = _grown(self._since, size, 0)
            self._judged_at = _grown(self._judged_at, size, 0.0)
            self._next_after = _grown(self._next_after, size, 0)
            self._score = _grown(self._score, size, math.nan)
            self._touched = _grown(self._touched, size, 0)
            self._pending_at = _grown(self._pending_at, size, math.nan)
        index = np.array(opened, np.int64)
        self._table.open(index)
        starts = (
            (self._since, 0),
            (self._judged_at, self._clock()),
            (self._next_after, self._config.judge_every_events),
            (self._score, math.nan),
            (self._touched, self._tick),
            (self._pending_at, math.nan),
        )
        few = len(opened) <= _FEW  # a new user or two in a small round: numpy scalars
        for column, start_value in starts:
            if few:
                for slot in opened:
                    column[slot] = start_value
            else:
                column[index] = start_value
        for user_id, slot in zip(user_ids, opened, strict=True):
            self._names[slot] = user_id
        return opened

    def _evict(self, count: int, keep: set[str]) -> None:
        """Forget the evidence of the ``count`` least recently active users (not ``keep``)."""
        held = np.fromiter(self._slots.values(), np.int64, len(self._slots))
        oldest = held[np.argsort(self._touched[held], kind="stable")]
        gone = [s for s in oldest[: count + len(keep)].tolist() if self._user(s) not in keep]
        for slot in gone[:count]:
            user_id = self._user(slot)
            del self._slots[user_id]
            self._release(slot)

    def _release(self, slot: int) -> None:
        if len(self._waiting):
            self._waiting = self._waiting[self._waiting != slot]
        self._table.close(np.array([slot], np.int64))
        self._pending_at[slot] = math.nan
        self._names[slot] = None
        self._free.append(slot)

    def _user(self, slot: int) -> str:
        user_id = self._names[slot]
        assert user_id is not None, slot
        return user_id

    def _judge(self, user_id: str, now: float) -> tuple[ReliabilityRecord | None, Verdict]:
        """Judge the tracked user; their new record if their stored status or score moved,
        and the verdict."""
        verdicts: list[Verdict] = []
        changes = self._judge_slots(np.array([self._slots[user_id]], np.int64), now, verdicts)
        return (changes[0] if changes else None), verdicts[0]

    def _judge_slots(
        self, slots: npt.NDArray[np.int64], now: float, verdicts: list[Verdict] | None = None
    ) -> list[ReliabilityRecord]:
        """Judge the users in ``slots`` (their evidence read together, as columns); the new
        records of those whose stored status or score moved. ``verdicts`` receives the
        verdicts."""
        if not len(slots):
            return []
        table = self._table
        evidence, readings = table.columns(slots, self._items.catalogue)
        user_ids = [self._user(slot) for slot in slots.tolist()]
        spam, items, texts, norms = self._config.detectors, self._items, self._texts, self._norms
        groups = [self._groups.get(user_id) for user_id in user_ids]
        ratings = table.ratings
        features = profile_feature_columns(
            [ratings.get(s, {}) for s in slots.tolist()], items, spam
        )
        # the scores graded as columns; the views and signals by name only of the users
        # whose record is new (their reason), or when asked
        graded = grade_columns(evidence, items, spam, now, texts, norms, groups, features, readings)

        def judged(at: list[int]) -> list[Verdict]:
            views = table.views(slots[at])
            found = _features_at(features, at)
            read = readings_of_columns({name: column[at] for name, column in readings.items()})
            return [
                judge(view, items, spam, now, texts, norms, groups[i], f, r)
                for i, view, f, r in zip(at, views, found, read, strict=True)
            ]

        if verdicts is not None:
            verdicts.extend(judged(list(range(len(slots)))))
        self._score[slots] = graded.score
        self._judged_at[slots] = now
        self._since[slots] = 0
        self._next_after[slots] = np.maximum(self._config.judge_every_events, table.events[slots])
        self._pending_at[slots] = math.nan
        held, columns = features
        sampled = np.flatnonzero(columns["n"] >= spam.profile_min)
        self._samples([user_ids[i] for i in held[sampled].tolist()], features_of(columns, sampled))
        moved = [
            (i, since)
            for i, user_id in enumerate(user_ids)
            if (since := self._moved(user_id, float(graded.score[i]), graded.status[i], now))
            is not None
        ]
        if not moved:
            return []
        return [
            self._new_record(
                user_ids[i], since, float(graded.score[i]), graded.status[i], graded.reason(i)
            )
            for i, since in moved
        ]

    def _new_record(
        self, user_id: str, since: float, score: float, status: str, reason: str
    ) -> ReliabilityRecord:
        """Keep the user's new record: its score and status, and its reason (the signals
        that fired, or the hard rule)."""
        record = ReliabilityRecord(user_id, score, status, since, False, reason)
        self._keep(record)
        return record

    def _samples(self, user_ids: list[str], features: list[ProfileFeatures]) -> None:
        """Keep the judged users' profiles (``profile_min`` ratings or more) in the sample
        the norms are fitted on, the latest last."""
        sample = self._sample
        for user_id, found in zip(user_ids, features, strict=True):
            sample.pop(user_id, None)
            sample[user_id] = found
            self._sampled_since_fit += 1
            if len(sample) > self._config.norm_profiles:
                del sample[next(iter(sample))]

    def _moved(self, user_id: str, score: float, status: str, now: float) -> float | None:
        """Since when the user holds ``status``, if their record is to be stored anew (their
        stored status or score moved); else None."""
        current = self._records.get(user_id)
        if current is not None and current.manual:
            return None
        if current is None and status == "trusted":
            return None  # trusted users are only stored once they have been something else
        if current is not None and current.status == status:
            if abs(current.score - score) < 1.0:
                return None
            return current.since
        return now

    # -- reads and admin ------------------------------------------------------------

    async def report(self, user_id: str) -> dict[str, Any]:
        """``GET .../reliability``: the user's score, status and signals, judged now."""
        tracked = user_id in self._slots
        record = self._records.get(user_id)
        if not tracked and record is None:
            raise NotFound("user", user_id)
        signals: dict[str, Any] = {}
        verdict: Verdict | None = None
        if tracked:
            change, verdict = self._judge(user_id, self._clock())
            if change is not None:
                await self._store.put_reliability([change])
                self._flags_moved()
            signals = {
                name: {"value": s.value, "fired": s.fired} for name, s in verdict.signals.items()
            }
        record = self._records.get(user_id)
        if record is None:
            score = self.fresh_score if verdict is None else verdict.score
            return {
                "user_id": user_id,
                "score": score,
                "status": "trusted",
                "signals": signals,
                "since": None,
                "manual": False,
                "reason": "",
            }
        return {
            "user_id": user_id,
            "score": record.score,
            "status": record.status,
            "signals": signals,
            "since": record.since,
            "manual": record.manual,
            "reason": record.reason,
        }

    def evidence(self, user_id: str) -> ActivityView | None:
        """What the guard holds of the user's activity (their evidence, not their events),
        or None for a user it does not track."""
        slot = self._slots.get(user_id)
        if slot is None:
            return None
        return self._table.views(np.array([slot], np.int64))[0]

    def forget(self, user_id: str) -> None:
        """Drop the user's evidence and record from memory (an erasure; their stored record
        is deleted with the rest of their rows). The texts' counts of distinct users stay."""
        slot = self._slots.pop(user_id, None)
        if slot is not None:
            self._release(slot)
        self._sample.pop(user_id, None)
        self._groups.pop(user_id, None)
        self._records.pop(user_id, None)
        self._gates.pop(user_id, None)
        self._blocked.discard(user_id)
        self._texts.forget(user_id)

    def flagged_users(self) -> frozenset[str]:
        """The users whose contribution to shared state is taken back (suspect or
        blocked, by the detector or by hand): experiments' results, the items' shown and
        click counts, the optimizer's counts and the next model's training data leave
        them out while they are (``docs/spam.md``, "What a flagged user taught").
        Unblocked or cleared, they count again."""
        return frozenset(self.flagged_since())

    def flagged_since(self) -> dict[str, float]:
        """The flagged users (:meth:`flagged_users`), each with when their status was set."""
        return {u: r.since for u, r in self._records.items() if r.status != "trusted"}

    def on_flags(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (plain, cheap: a wake-up) whenever a user may have been
        flagged or cleared: after a judgement changed records, a block or unblock by
        hand, a reload of the stored records."""
        self._listeners.append(listener)

    def _flags_moved(self) -> None:
        for listener in self._listeners:
            listener()

    def held_users(self) -> set[str]:
        """The users this guard holds evidence or a record of."""
        return set(self._slots) | set(self._records)

    def suspects(self, limit: int) -> list[ReliabilityRecord]:
        """The lowest scores first (blocked and suspect users, then the least reliable)."""
        return sorted(self._records.values(), key=lambda r: (r.score, r.user_id))[:limit]

    def scores(self) -> list[float]:
        """The reliability score of every user the guard holds: their record's, else their
        last verdict's (a read, for the console's histogram)."""
        records = self._records
        found = [r.score for r in records.values()]
        score = self._score
        found += [
            s
            for user_id, s in zip(
                self._slots, score[list(self._slots.values())].tolist(), strict=True
            )
            if s == s and user_id not in records  # NaN: not judged yet
        ]
        return found

    def status_counts(self) -> dict[str, int]:
        """How many users are suspect, and how many blocked (for the metrics)."""
        counts = {"suspect": 0, "blocked": 0}
        for record in self._records.values():
            if record.status in counts:
                counts[record.status] += 1
        return counts

    async def set_manual(
        self, user_id: str, blocked: bool, reason: str | None
    ) -> ReliabilityRecord:
        """Block, or unblock, by hand; automatic verdicts leave the user alone from then on.

        Unblocking does not re-admit the events held while the user was
        suspect or blocked: they stay in the log, counted as held.
        """
        now = self._clock()
        if blocked:
            record = ReliabilityRecord(
                user_id, 0.0, "blocked", now, True, reason or "blocked by hand"
            )
        else:
            record = ReliabilityRecord(
                user_id, 100.0, "trusted", now, True, reason or "unblocked by hand"
            )
        await self._store.put_reliability([record])
        self._keep(record)
        self._flags_moved()
        slot = self._slots.get(user_id)
        if slot is not None and not blocked:  # a fresh start: old evidence judged them already
            index = np.array([slot], np.int64)
            self._table.close(index)
            self._table.open(index)
        return record


def _features_at(features: FeatureColumns, at: list[int]) -> list[ProfileFeatures | None]:
    """The profile features of the users at ``at``, out of their columns (None: no
    profile)."""
    held, columns = features
    index = np.array(at, np.int64)
    position = np.minimum(np.searchsorted(held, index), max(len(held) - 1, 0))
    has = held[position] == index if len(held) else np.zeros(len(at), np.bool_)
    out: list[ProfileFeatures | None] = [None] * len(at)
    for k, found in zip(
        np.flatnonzero(has).tolist(), features_of(columns, position[has]), strict=True
    ):
        out[k] = found
    return out


def _grown(column: npt.NDArray[Any], size: int, fill: float) -> Any:
    """``column`` copied into a longer one, the new places ``fill``."""
    out = np.full(size, fill, column.dtype)
    out[: len(column)] = column
    return out


def _floats(values: list[float | None]) -> npt.NDArray[np.float64]:
    """``values`` as floats, NaN for None."""
    return np.array([math.nan if v is None else v for v in values], np.float64)


def _first_of_each(slots: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``slots`` without repeats, each where it first appears.

    >>> _first_of_each(np.array([3, 1, 3, 2, 1])).tolist()
    [3, 1, 2]
    """
    _, first = np.unique(slots, return_index=True)
    return slots[np.sort(first)]
