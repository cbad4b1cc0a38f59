"""In-memory event log and state store: same contract as the SQL adapter, no durability.

The state store is one class per role of ``ports.StateStore`` (``InMemoryUserStateStore``,
``InMemoryExperimentStore``, ...) over the data they share (:class:`MemoryRole`),
combined in :class:`InMemoryStateStore`.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import itertools
import time
from collections.abc import Collection, Container, Mapping, Sequence
from typing import Any

from recloop.core.availability import AlgorithmStatus
from recloop.core.bandit import PerformanceCounts
from recloop.core.events import Event
from recloop.core.experiments import Experiment, UserMetric
from recloop.core.items import Item
from recloop.core.preferences import UserState
from recloop.core.state import UserRows
from recloop.core.stats import PairStats
from recloop.ports import (
    AlgorithmCount,
    Exposure,
    Impression,
    ImpressionHead,
    ModelRecord,
    ReliabilityRecord,
    StateChanges,
    TrainingJob,
    WaitingReport,
)


class InMemoryEventLog:
    def __init__(self) -> None:
        self._events: list[Event] = []  # in offset order; purges leave gaps in the offsets
        self._accepted: list[float] = []  # when each of _events was logged
        self._ids: set[str] = set()
        self._next = 1  # offsets are never reused, even after purges

    async def append(self, events: Sequence[Event]) -> list[int | None]:
        offsets: list[int | None] = []
        for event in events:
            if event.event_id in self._ids:
                offsets.append(None)
                continue
            self._ids.add(event.event_id)
            offset, self._next = self._next, self._next + 1
            self._events.append(_with_offset(event, offset))
            self._accepted.append(time.time())
            offsets.append(offset)
        return offsets

    async def read(self, after: int, limit: int) -> list[Event]:
        start = bisect.bisect_right(self._events, after, key=lambda e: e.offset)
        return self._events[start : start + limit]

    async def last_offset(self) -> int:
        return self._next - 1

    async def read_feedback_of(self, impression_ids: Sequence[str]) -> dict[str, list[Event]]:
        found: dict[str, list[Event]] = {i: [] for i in impression_ids}
        for e in self._events:
            impression_id = e.attribution.get("impression_id")
            if impression_id in found:
                found[impression_id].append(e)
        return found

    async def read_impression_clicks(self, after: int, limit: int) -> list[Event]:
        start = bisect.bisect_right(self._events, after, key=lambda e: e.offset)
        found = (
            e
            for e in itertools.islice(self._events, start, None)
            if e.type == "click" and e.attribution.get("impression_id")
        )
        return list(itertools.islice(found, limit))

    async def read_impression_feedback(self, impression_id: str) -> list[Event]:
        return [e for e in self._events if e.attribution.get("impression_id") == impression_id]

    async def read_user_events(self, user_id: str, since: float, until: float) -> list[Event]:
        return [e for e in self._events if e.user_id == user_id and since <= e.timestamp < until]

    async def read_users_events(
        self, user_ids: Sequence[str], since: float, until: float, after: int = 0
    ) -> dict[str, list[Event]]:
        found: dict[str, list[Event]] = {u: [] for u in user_ids}
        start = bisect.bisect_right(self._events, after, key=lambda e: e.offset)
        for e in self._events[start:]:
            if e.user_id in found and since <= e.timestamp < until:
                found[e.user_id].append(e)
        return found

    async def offset_logged_before(self, logged_at: float) -> int:
        k = bisect.bisect_left(self._accepted, logged_at)
        return 0 if k == 0 else self._events[k - 1].offset or 0


def _with_offset(event: Event, offset: int) -> Event:
    return Event.from_record(event.to_record(), offset)


class MemoryRole:
    """The base of the in-memory store's role classes: the data they share, what the
    tables are to the SQL adapter's roles. One ``__init__`` holds every role's, since
    :meth:`InMemoryUserStateStore.commit` writes across roles (one transaction in SQL)."""

    def __init__(self) -> None:
        # users (InMemoryUserStateStore)
        self._users: dict[str, UserState] = {}
        self._watermark = 0
        self._last_commit: str | None = None  # see StateChanges.commit_id
        self._positions: dict[int, int] = {}
        self._journal: dict[int, UserRows] = {}
        # the optimizer (InMemoryOptimizerStore)
        self._counts: dict[tuple[str, str, float], PerformanceCounts] = {}
        self._reports: dict[str, bytes] = {}
        self._status: dict[tuple[str, str], AlgorithmStatus] = {}
        # impressions, models, items, reliability, dead letters
        self._impressions: dict[str, Impression] = {}
        self._models: dict[str, tuple[ModelRecord, bytes]] = {}
        self._deployment: dict[str, Any] | None = None
        self._transitions: list[dict[str, Any]] = []
        self._jobs: dict[str, TrainingJob] = {}
        self._items: dict[str, Item] = {}
        self._reliability: dict[str, ReliabilityRecord] = {}
        self.dead_letters: list[tuple[Event, str]] = []
        # experiments (InMemoryExperimentStore)
        self._experiments: dict[str, Experiment] = {}
        self._exposures: dict[str, dict[str, Exposure]] = {}
        self._user_metrics: dict[str, dict[tuple[str, str], UserMetric]] = {}
        self._experiment_stats: dict[str, dict[tuple[str, str], PairStats]] = {}
        self._waiting: dict[int, WaitingReport] = {}

    def _add_counts(self, rows: Sequence[AlgorithmCount]) -> None:
        for row in rows:
            key = (row.segment, row.algorithm, row.bucket_start)
            self._counts[key] = self._counts.get(key, PerformanceCounts()) + row.counts


class InMemoryUserStateStore(MemoryRole):
    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        found = {u: copy.deepcopy(self._users[u]) for u in user_ids if u in self._users}
        wanted = set(user_ids)
        for _, rows in sorted(self._journal.items()):  # a later record's row is newer
            for i, user_id in enumerate(rows.user_ids):
                if user_id in wanted:
                    found[user_id] = rows.state(i)
        return found

    async def get_user_ids(self) -> list[str]:
        journaled = (u for rows in self._journal.values() for u in rows.user_ids)
        return [*self._users, *journaled]

    async def commit(self, changes: StateChanges) -> None:
        if changes.commit_id is not None:
            if changes.commit_id == self._last_commit:
                return  # applied already (see StateChanges.commit_id)
            self._last_commit = changes.commit_id
        for state in changes.users.states():
            held = self._users.get(state.user_id)
            if held is not None and (
                state.explicit_offset < held.explicit_offset
                or state.implicit_offset < held.implicit_offset
            ):
                continue  # a stale write: a user's applied offsets never go back
            self._users[state.user_id] = state
        if changes.journal is not None and len(changes.journal):
            self._journal[changes.journal_seq] = UserRows.from_bytes(changes.journal.to_bytes())
        for seq in [k for k in self._journal if k <= changes.journal_through]:
            del self._journal[seq]
        self._add_counts(changes.algorithm_counts)
        for exposure in changes.exposures:
            self._exposures.setdefault(exposure.experiment_id, {}).setdefault(
                exposure.user_id, exposure
            )
        for experiment_id, user_id, metric, values in changes.user_metrics:
            self._user_metrics.setdefault(experiment_id, {})[(user_id, metric)] = values
        for experiment_id, variant, metric, delta in changes.experiment_stats:
            stats = self._experiment_stats.setdefault(experiment_id, {})
            stats[(variant, metric)] = stats.get((variant, metric), PairStats()) + delta
        if changes.watermark is not None:
            self._watermark = max(self._watermark, changes.watermark)
        for partition, offset in changes.positions.items():
            self._positions[partition] = max(self._positions.get(partition, 0), offset)

    async def get_journal(self) -> list[tuple[int, UserRows]]:
        return [(seq, self._journal[seq]) for seq in sorted(self._journal)]

    async def get_watermark(self) -> int:
        return self._watermark

    async def get_positions(self) -> dict[int, int]:
        return dict(self._positions)


class InMemoryReliabilityStore(MemoryRole):
    async def get_reliability(self) -> list[ReliabilityRecord]:
        return list(self._reliability.values())

    async def put_reliability(self, records: Sequence[ReliabilityRecord]) -> None:
        for record in records:
            self._reliability[record.user_id] = record


class InMemoryExperimentStore(MemoryRole):
    async def get_experiments(self) -> list[Experiment]:
        return list(self._experiments.values())

    async def put_experiment(self, experiment: Experiment) -> None:
        self._experiments[experiment.experiment_id] = experiment

    async def get_exposures(self, experiment_id: str) -> list[Exposure]:
        return list(self._exposures.get(experiment_id, {}).values())

    async def get_user_metrics(
        self, experiment_id: str, user_ids: Collection[str] | None = None
    ) -> list[tuple[str, str, UserMetric]]:
        held = self._user_metrics.get(experiment_id, {}).items()
        return [(u, m, v) for (u, m), v in held if user_ids is None or u in user_ids]

    async def get_experiment_stats(self, experiment_id: str) -> list[tuple[str, str, PairStats]]:
        return [(v, m, s) for (v, m), s in self._experiment_stats.get(experiment_id, {}).items()]

    async def put_waiting(self, reports: Sequence[WaitingReport]) -> None:
        for report in reports:
            self._waiting[report.partition] = report

    async def get_waiting(self) -> list[WaitingReport]:
        return [self._waiting[p] for p in sorted(self._waiting)]


class InMemoryOptimizerStore(MemoryRole):
    async def get_algorithm_counts(self, since: float) -> list[AlgorithmCount]:
        return [
            AlgorithmCount(segment, algorithm, bucket, counts)
            for (segment, algorithm, bucket), counts in self._counts.items()
            if bucket >= since
        ]

    async def add_performance_report(
        self, report_id: str, payload: bytes, counts: Sequence[AlgorithmCount]
    ) -> bool:
        if report_id in self._reports:
            return False
        self._reports[report_id] = payload
        self._add_counts(counts)
        return True

    async def get_algorithm_status(self) -> list[AlgorithmStatus]:
        return list(self._status.values())

    async def put_algorithm_status(self, statuses: Sequence[AlgorithmStatus]) -> None:
        for status in statuses:
            self._status[(status.segment, status.algorithm)] = status


class InMemoryImpressionStore(MemoryRole):
    async def add_impressions(self, impressions: Sequence[Impression]) -> None:
        for impression in impressions:
            self._impressions[impression.impression_id] = _copied(impression)

    async def get_impression(self, impression_id: str) -> Impression | None:
        found = self._impressions.get(impression_id)
        return None if found is None else _copied(found)

    async def get_impressions(self, since: float, until: float) -> list[Impression]:
        found = [i for i in self._impressions.values() if since <= i.created_at < until]
        found.sort(key=lambda i: (i.created_at, i.impression_id))
        return [_copied(i) for i in found]

    async def get_impression_heads(
        self, since: float, until: float, known: Container[str] = ()
    ) -> list[ImpressionHead]:
        found = [
            i
            for i in self._impressions.values()
            if since <= i.created_at < until and i.impression_id not in known
        ]
        found.sort(key=lambda i: (i.created_at, i.impression_id))
        return [ImpressionHead.of(i) for i in found]


class InMemoryModelStore(MemoryRole):
    async def put_model(self, record: ModelRecord, artifact: bytes) -> None:
        if record.version in self._models:
            raise ValueError(f"model {record.version!r} exists")
        self._models[record.version] = (record, artifact)

    async def set_model_status(self, version: str, status: str, reason: str) -> None:
        record, artifact = self._models[version]
        self._models[version] = (
            dataclasses.replace(record, status=status, reason=reason),
            artifact,
        )

    async def get_models(self) -> list[ModelRecord]:
        records = [r for r, _ in self._models.values()]
        return sorted(records, key=lambda r: (r.created_at, r.version), reverse=True)

    async def get_model(self, version: str) -> tuple[ModelRecord, bytes] | None:
        return self._models.get(version)

    async def put_deployment(
        self, state: Mapping[str, Any], transition: Mapping[str, Any] | None
    ) -> None:
        self._deployment = copy.deepcopy(dict(state))
        if transition is not None:
            self._transitions.append(copy.deepcopy(dict(transition)))

    async def get_deployment(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        return copy.deepcopy(self._deployment), copy.deepcopy(self._transitions)

    async def put_job(self, job: TrainingJob) -> None:
        self._jobs[job.job_id] = job

    async def get_job(self, job_id: str) -> TrainingJob | None:
        return self._jobs.get(job_id)


class InMemoryItemStore(MemoryRole):
    async def put_items(self, items: Sequence[Item]) -> None:
        for item in items:
            self._items[item.item_id] = item

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        return {i: self._items[i] for i in item_ids if i in self._items}


class InMemoryDeadLetterStore(MemoryRole):
    async def add_dead_letter(self, event: Event, reason: str) -> None:
        self.dead_letters.append((event, reason))

    async def count_dead_letters(self) -> int:
        return len(self.dead_letters)


class InMemoryStateStore(
    InMemoryUserStateStore,
    InMemoryReliabilityStore,
    InMemoryExperimentStore,
    InMemoryOptimizerStore,
    InMemoryImpressionStore,
    InMemoryModelStore,
    InMemoryItemStore,
    InMemoryDeadLetterStore,
):
    """Every role of the state store over one set of data (``ports.StateStore``)."""

    async def stored_dims(self) -> set[int]:
        states = list(self._users.values())[:1]
        some_items = list(self._items.values())[:1]
        return {len(s.vector) for s in states} | {len(i.vector) for i in some_items}

    async def ping(self) -> None:
        return None


def _copied(impression: Impression) -> Impression:
    """A copy sharing nothing mutable (the shown slate is immutable: shared)."""
    return dataclasses.replace(
        impression,
        context=copy.deepcopy(impression.context),
        experiments=copy.deepcopy(impression.experiments),
    )
