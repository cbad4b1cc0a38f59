"""The guard: who may send events, and whose events are learnt from.

Every accepted event is evidence about its user (``core.spam``): timing,
behaviour, rating profile, review text. The guard keeps each user's evidence
in memory, judges users periodically (and at once on a hard rule such as a
flood), and acts on the verdict:

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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from recloop.config import SpamSettings
from recloop.core.cache import LruCache
from recloop.core.errors import NotFound
from recloop.core.events import Event
from recloop.core.spam import (
    ItemStats,
    ProfileFeatures,
    TextRegistry,
    UserActivity,
    Verdict,
    fit_norms,
    group_rule,
    hard_rule,
    judge,
    record_event,
)
from recloop.core.spam_batch import judge_many
from recloop.core.spam_groups import GroupReading, Profile, find_groups
from recloop.core.spam_norms import ProfileNorms
from recloop.ports import ReliabilityRecord, StateStore
from recloop.services.tasks import stop_tasks

log = logging.getLogger(__name__)

_SWEEP_SLICE = 500
"""Users judged between two yields of a sweep to the event loop."""


@dataclass(slots=True)
class _Tracked:
    activity: UserActivity
    events_since_judged: int = 0
    judged_at: float = 0.0
    verdict: Verdict | None = None
    next_after: int = 0
    """Events after which the next judgement is due (doubles after each)."""


class GuardService:
    def __init__(
        self,
        store: StateStore,
        config: SpamSettings,
        *,
        max_users: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``config``: the ``spam`` section; ``max_users``: users whose evidence is held
        (``cache.max_users``; the least recently active are forgotten)."""
        self._store = store
        self._config = config
        self._clock = clock
        self._users: LruCache[str, _Tracked] = LruCache(max_users)
        self._items = ItemStats()
        self._texts = TextRegistry()
        self._records: dict[str, ReliabilityRecord] = {}
        self._listeners: list[Callable[[], None]] = []
        # users with evidence not judged yet -> when their latest batch arrived
        self._pending: dict[str, float] = {}
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
            self._records[record.user_id] = record
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
        again = await self._regroup(now)
        if self._refresh_norms():  # new norms: the flagged are judged again by them
            records = self._records.items()
            flagged = (u for u, r in records if r.status != "trusted" and not r.manual)
            again += list(itertools.islice(flagged, self._config.rejudge_flagged))
        quiet_since = now - self._config.judge_within_seconds / 2
        due = [user for user, at in self._pending.items() if at <= quiet_since]
        due += [user for user in dict.fromkeys(again) if user not in self._pending]
        judged = 0
        # In slices, the event loop serving in between: a sweep may find every user due.
        for start in range(0, len(due), _SWEEP_SLICE):
            held = []
            for user_id in due[start : start + _SWEEP_SLICE]:
                if user_id in self._users:
                    held.append(user_id)
                else:  # evicted or erased since: nothing to judge
                    self._pending.pop(user_id, None)
            judged += len(held)
            changes = self._judge_many(held, now)
            if changes:
                await self._store.put_reliability(changes)
                self._flags_moved()
            await asyncio.sleep(0)
        return judged

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
        raters: list[tuple[str, UserActivity]] = []
        # oldest first: get() moves each to the end, so the recency order stays
        for user_id in self._users.keys()[-self._config.group_profiles * 2 :]:
            tracked = self._users.get(user_id)
            if tracked is not None and tracked.activity.ratings:
                raters.append((user_id, tracked.activity))
        profiles = {
            user_id: Profile(dict(a.ratings), a.first_at)
            for user_id, a in raters[-self._config.group_profiles :]
        }
        found = await asyncio.to_thread(find_groups, profiles, group_rule(self._config.detectors))
        old, self._groups = self._groups, found
        return [u for u in {*old, *found} if old.get(u) != found.get(u)]

    def pending(self) -> int:
        """How many users have evidence not judged yet."""
        return len(self._pending)

    # -- the hot path ------------------------------------------------------------

    def blocked(self, user_id: str) -> str | None:
        """Why the user's new events are refused, or None."""
        record = self._records.get(user_id)
        if record is None or record.status != "blocked":
            return None
        return record.reason

    def reliability(self, user_id: str) -> float | None:
        """The processor's gate: reliability 0..100, or None for suspect and blocked users."""
        record = self._records.get(user_id)
        if record is not None:
            return record.score if record.status == "trusted" else None
        tracked = self._users.get(user_id)
        if tracked is None or tracked.verdict is None:
            return self.fresh_score
        return tracked.verdict.score

    async def observe(self, events: Sequence[Event]) -> None:
        """Take accepted events as evidence; judge users whose turn it is."""
        now = self._clock()
        config, items, texts = self._config, self._items, self._texts
        due: list[str] = []
        items.note_items([e.item_id for e in events], [e.user_id for e in events])
        self._pending.update(dict.fromkeys([e.user_id for e in events], now))
        track = self._track
        for e in events:
            tracked = track(e.user_id)
            activity = tracked.activity
            record_event(
                activity, items, texts, e.type, e.item_id, e.value, e.timestamp, e.text, e.user_id
            )
            tracked.events_since_judged += 1
            new = tracked.events_since_judged
            if (
                new >= tracked.next_after
                or (
                    new >= config.min_new_events
                    and now - tracked.judged_at >= config.judge_every_seconds
                )
                or (
                    activity.hard_rule_at is not None
                    and hard_rule(activity, config.detectors, now) is not None
                )
            ):
                due.append(e.user_id)
        changes = self._judge_many(list(dict.fromkeys(due)), now)
        if changes:
            await self._store.put_reliability(changes)
            self._flags_moved()

    def _track(self, user_id: str) -> _Tracked:
        tracked = self._users.get(user_id)
        if tracked is None:
            tracked = _Tracked(
                UserActivity(self._config.detectors),
                judged_at=self._clock(),
                next_after=self._config.judge_every_events,
            )
            self._users.set(user_id, tracked)
        return tracked

    def _judge(self, user_id: str, now: float) -> ReliabilityRecord | None:
        """Judge the user; the new record if their stored status or score moved."""
        changes = self._judge_many([user_id], now)
        return changes[0] if changes else None

    def _judge_many(self, user_ids: list[str], now: float) -> list[ReliabilityRecord]:
        """Judge the users (their profiles' features computed together); the new records
        of those whose stored status or score moved."""
        tracked = [self._track(user_id) for user_id in user_ids]
        verdicts = judge_many(
            [t.activity for t in tracked],
            self._items,
            self._config.detectors,
            now,
            self._texts,
            self._norms,
            [self._groups.get(user_id) for user_id in user_ids],
        )
        changes = []
        for user_id, t, verdict in zip(user_ids, tracked, verdicts, strict=True):
            change = self._record(user_id, t, verdict, now)
            if change is not None:
                changes.append(change)
        return changes

    def _record(
        self, user_id: str, tracked: _Tracked, verdict: Verdict, now: float
    ) -> ReliabilityRecord | None:
        """Keep ``verdict``; the user's new record if their stored status or score moved."""
        features = verdict.features
        if features is not None and features.n >= self._config.detectors.profile_min:
            self._sample.pop(user_id, None)
            self._sample[user_id] = features
            self._sampled_since_fit += 1
            if len(self._sample) > self._config.norm_profiles:
                del self._sample[next(iter(self._sample))]
        judged = tracked.activity.events
        tracked.verdict, tracked.judged_at, tracked.events_since_judged = verdict, now, 0
        tracked.next_after = max(self._config.judge_every_events, judged)
        self._pending.pop(user_id, None)
        current = self._records.get(user_id)
        if current is not None and current.manual:
            return None
        reason = verdict.hard_rule or ", ".join(
            name for name, signal in verdict.signals.items() if signal.fired
        )
        if current is None and verdict.status == "trusted":
            return None  # trusted users are only stored once they have been something else
        if current is not None and current.status == verdict.status:
            if abs(current.score - verdict.score) < 1.0:
                return None
            since = current.since
        else:
            since = now
        record = ReliabilityRecord(user_id, verdict.score, verdict.status, since, False, reason)
        self._records[user_id] = record
        return record

    # -- reads and admin ------------------------------------------------------------

    async def report(self, user_id: str) -> dict[str, Any]:
        """``GET .../reliability``: the user's score, status and signals, judged now."""
        tracked = self._users.get(user_id)
        record = self._records.get(user_id)
        if tracked is None and record is None:
            raise NotFound("user", user_id)
        signals: dict[str, Any] = {}
        if tracked is not None:
            change = self._judge(user_id, self._clock())
            if change is not None:
                await self._store.put_reliability([change])
                self._flags_moved()
            assert tracked.verdict is not None  # _judge just set it
            signals = {
                name: {"value": s.value, "fired": s.fired}
                for name, s in tracked.verdict.signals.items()
            }
        record = self._records.get(user_id)
        if record is None:
            verdict = tracked.verdict if tracked is not None else None
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

    def forget(self, user_id: str) -> None:
        """Drop the user's evidence and record from memory (an erasure; their stored record
        is deleted with the rest of their rows). The texts' counts of distinct users stay."""
        self._users.delete(user_id)
        self._pending.pop(user_id, None)
        self._sample.pop(user_id, None)
        self._groups.pop(user_id, None)
        self._records.pop(user_id, None)
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
        return set(self._users.keys()) | set(self._records)

    def suspects(self, limit: int) -> list[ReliabilityRecord]:
        """The lowest scores first (blocked and suspect users, then the least reliable)."""
        return sorted(self._records.values(), key=lambda r: (r.score, r.user_id))[:limit]

    def scores(self) -> list[float]:
        """The reliability score of every user the guard holds: their record's, else their
        last verdict's (a read, for the console's histogram)."""
        records = self._records
        found = [r.score for r in records.values()]
        found += [
            tracked.verdict.score
            for user_id, tracked in self._users.items()
            if tracked.verdict is not None and user_id not in records
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
        self._records[user_id] = record
        self._flags_moved()
        tracked = self._users.get(user_id)
        if tracked is not None and not blocked:
            tracked.activity = UserActivity(
                self._config.detectors
            )  # a fresh start: old evidence judged them already
        return record
