"""Retention, erasure and export over the in-memory log and store (same contract as SQL).

It works on the two adapters' own data: it is their privacy side, kept apart
so that they stay small (it lives in their package and reads their fields).
"""

from __future__ import annotations

import copy
import time

from recloop.adapters.memory.store import InMemoryEventLog, InMemoryStateStore
from recloop.core.privacy import Tombstone
from recloop.core.stats import PairStats
from recloop.ports import StateChanges, UserData


class InMemoryPrivacyStore:
    def __init__(self, log: InMemoryEventLog, store: InMemoryStateStore) -> None:
        self._log = log
        self._store = store
        self._tombstones: dict[str, Tombstone] = {}
        self._meta: dict[str, str] = {}
        self._failed_at: dict[int, float] = {}  # id(dead letter) -> when first seen here

    # -- retention -------------------------------------------------------------------

    async def purge_events(self, before: float, max_offset: int | None, limit: int) -> int:
        log = self._log
        doomed: set[int] = set()
        for i, (event, at) in enumerate(zip(log._events, log._accepted, strict=True)):
            if len(doomed) >= limit or (max_offset is not None and event.offset > max_offset):
                break
            if at < before:
                doomed.add(i)
        self._drop_events(doomed)
        return len(doomed)

    def _drop_events(self, doomed: set[int]) -> None:
        if not doomed:
            return
        log = self._log
        for i in doomed:
            log._ids.discard(log._events[i].event_id)
        log._events = [e for i, e in enumerate(log._events) if i not in doomed]
        log._accepted = [a for i, a in enumerate(log._accepted) if i not in doomed]

    async def purge_impressions(self, before: float, limit: int) -> int:
        held = self._store._impressions
        old = sorted(
            (i for i in held.values() if i.created_at < before), key=lambda i: i.created_at
        )[:limit]
        for impression in old:
            del held[impression.impression_id]
        return len(old)

    async def purge_dead_letters(self, before: float, limit: int) -> int:
        letters = self._store.dead_letters
        now = time.time()
        kept, dropped = [], 0
        for letter in letters:
            # The fake does not record failure times: a letter's age counts from when the
            # purge first saw it.
            at = self._failed_at.setdefault(id(letter), now)
            if dropped < limit and at < before:
                dropped += 1
                self._failed_at.pop(id(letter), None)
            else:
                kept.append(letter)
        letters[:] = kept
        return dropped

    # -- export ------------------------------------------------------------------------

    async def user_data(self, user_id: str) -> UserData:
        s = self._store
        exposures = [e for held in s._exposures.values() if (e := held.get(user_id)) is not None]
        values = [
            (eid, metric, v)
            for eid, held in s._user_metrics.items()
            for (u, metric), v in held.items()
            if u == user_id
        ]
        journaled = [
            rows for _, rows in reversed(await s.get_journal()) if user_id in rows.user_ids
        ]
        state = (
            journaled[0].state(journaled[0].user_ids.index(user_id))
            if journaled
            else copy.deepcopy(s._users.get(user_id))
        )
        return UserData(
            state=state,
            events=[e for e in self._log._events if e.user_id == user_id],
            impressions=sorted(
                (copy.deepcopy(i) for i in s._impressions.values() if i.user_id == user_id),
                key=lambda i: (i.created_at, i.impression_id),
            ),
            exposures=sorted(exposures, key=lambda e: (e.exposed_at, e.experiment_id)),
            metric_values=sorted(values, key=lambda v: (v[0], v[1])),
            reliability=s._reliability.get(user_id),
            dead_letters=[(e, r) for e, r in s.dead_letters if e.user_id == user_id],
        )

    # -- erasure -----------------------------------------------------------------------

    async def erase(
        self, user_id: str, digest: str, tombstone: Tombstone, changes: StateChanges
    ) -> dict[str, int]:
        s = self._store
        log = self._log
        doomed = {
            i
            for i, e in enumerate(log._events)
            if e.user_id == user_id
            and (tombstone.log_offset is None or e.offset <= tombstone.log_offset)
        }
        self._drop_events(doomed)
        counts = {"events": len(doomed)}
        shown = [k for k, i in s._impressions.items() if i.user_id == user_id]
        for key in shown:
            del s._impressions[key]
        counts["impressions"] = len(shown)
        counts["state"] = int(s._users.pop(user_id, None) is not None)
        for seq, rows in list(s._journal.items()):
            if user_id in rows.user_ids:
                counts["state"] = 1
                rest = rows.without([user_id])
                if len(rest):
                    s._journal[seq] = rest
                else:
                    del s._journal[seq]
        counts["exposures"] = sum(
            held.pop(user_id, None) is not None for held in s._exposures.values()
        )
        values = 0
        for metrics in s._user_metrics.values():
            for pair in [k for k in metrics if k[0] == user_id]:
                del metrics[pair]
                values += 1
        counts["metric_values"] = values
        for experiment_id, variant, metric, delta in changes.experiment_stats:
            stats = s._experiment_stats.setdefault(experiment_id, {})
            stats[(variant, metric)] = stats.get((variant, metric), PairStats()) + delta
        s._add_counts(changes.algorithm_counts)
        counts["reliability"] = int(s._reliability.pop(user_id, None) is not None)
        letters = [d for d in s.dead_letters if d[0].user_id != user_id]
        counts["dead_letters"] = len(s.dead_letters) - len(letters)
        s.dead_letters[:] = letters
        self._tombstones[digest] = tombstone
        return counts

    async def get_tombstones(self) -> dict[str, Tombstone]:
        return dict(self._tombstones)

    # -- key fingerprint ---------------------------------------------------------------------

    async def get_meta(self, name: str) -> str | None:
        return self._meta.get(name)

    async def put_meta(self, name: str, value: str) -> None:
        self._meta[name] = value

    async def has_users(self) -> bool:
        return bool(self._store._users) or bool(self._store._journal)
