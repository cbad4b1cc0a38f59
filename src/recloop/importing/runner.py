"""``recloop import``: history through the same ingestion, dedupe and learning as the API.

The rows of every file are decoded (``importing.rows``), sorted by timestamp (ties
in file and row order), and submitted in batches to an ``IngestService`` wired like
the API's: the same domain checks, the blocked users refused, the same event log
(its ``event_id`` dedupe), processor, guard and experiments. Embedded, this process
applies them itself (the server must be stopped: the event log has one writer);
distributed (``event_log.kind: kafka``), they go to the topic and the workers apply
them, and tell duplicates apart (so every sent event is counted accepted here).

Time: history is judged by its own timestamps, not as a burst arriving now.

- Per-request rate limits are not applied: they meter clients of the API, and an
  import is an operator's command with the store's own configuration.
- The guard's clock is the import's event time (the latest timestamp submitted),
  so its judgements, hard rules (a flood within one second of a user's event
  timestamps) and sweeps see the history as it happened. At the end, every user
  with unjudged evidence is judged (as of the last event plus
  ``spam.judge_within_seconds``). Embedded only: distributed, the workers' guards
  judge the events they apply, on their own clocks.

Historical slates: rows of type ``impression`` that name an
``attribution.impression_id`` (and ``attribution.algorithm``) are what a user was
shown together. Each slate is ranked once by a ranker built as ``POST .../rank``'s,
without experiments (history exposes nobody to today's experiments): the user's
state as of its batch, the row's ``context.score`` (else its order) as the
algorithm's score. It is logged under its historical id with the features a click
model trains on, so that clicks naming the id label it and ``recloop train`` can fit
a first model from history alone (``created_at``: the slate's time, so that
training takes the slates of its last ``learning.training_days``). A slate whose
first impression event is a duplicate (imported before) is left alone. The ranker
explores as ``rank`` does: the logged order (the ``position`` feature) is the
ranker's, not the history's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from recloop.api.wire import FeedbackWire
from recloop.config import Settings
from recloop.container import Container, build_container, check_dims, rank_config
from recloop.core.ranking import Candidate, credited
from recloop.importing.rows import Row, read
from recloop.learning.training import IMPORTED
from recloop.ports import Impression, StateStore
from recloop.services.batching import GroupCommit
from recloop.services.ingest import EventOutcome, IngestService
from recloop.services.ranking import Ranker
from recloop.services.vectors import ItemVectors

SLATE_KEY: Final = "recloop_import_impression_id"
SLATE_AT: Final = "recloop_import_shown_at"
"""Carry a slate's historical id and time from the import to its impression writer."""


@dataclass(slots=True)
class Summary:
    files: list[str]
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    """By reason: the field refused (``timestamp``, ``value``...), ``blocked`` for a
    blocked user's events, ``row`` for a row that is no JSON object."""
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    slates: int = 0
    """Historical slates logged as impressions for training."""
    ignored_columns: list[str] = field(default_factory=list)
    rejects_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    distributed: bool = False
    spooled: int = 0
    """Distributed: accepted events still in the import's spool (Kafka unreachable at
    the end); the next ``recloop import`` with the same config sends them first."""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "rows": self.rows,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "first_timestamp": _iso(self.first_timestamp),
            "last_timestamp": _iso(self.last_timestamp),
            "slates": self.slates,
            "ignored_columns": self.ignored_columns,
            "rejects_files": self.rejects_files,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "distributed": self.distributed,
            "spooled": self.spooled,
        }


class EventClock:
    """The time of the history being imported: the latest timestamp submitted."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, timestamp: float) -> None:
        self.now = max(self.now, timestamp)


Progress = Callable[[int], None]
"""Told how many more rows were done."""


async def run_import(
    settings: Settings,
    paths: Sequence[Path],
    mapping: dict[str, str],
    batch_size: int = 2_000,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Import ``paths``; the summary. Raises OSError or ValueError for an unreadable file."""
    summary = Summary([str(p) for p in paths], distributed=settings.event_log.kind == "kafka")
    started = time.perf_counter()
    rows: list[Row] = []
    ignored: set[str] = set()
    per_file: dict[str, tuple[Path, list[tuple[Row, dict[str, Any]]]]] = {}
    for path in paths:
        reading = read(path, mapping)
        rows += reading.rows
        ignored |= reading.ignored
        per_file[str(path)] = (path, [])
    summary.rows = len(rows)
    summary.ignored_columns = sorted(ignored)
    if on_total is not None:
        on_total(len(rows))
    good: list[tuple[float, int, Row]] = []
    for order, row in enumerate(rows):
        if row.event is None:
            assert row.error is not None
            _reject(summary, per_file, row, "rejected", row.error.field, row.error.message)
        else:
            good.append((_seconds(row.event.timestamp), order, row))
    if progress is not None and len(good) < len(rows):
        progress(len(rows) - len(good))
    good.sort(key=lambda entry: (entry[0], entry[1]))
    if good:
        summary.first_timestamp, summary.last_timestamp = good[0][0], good[-1][0]
    clock = EventClock(good[0][0] if good else time.time())
    session = _Session(settings, clock)
    await session.start()
    try:
        slates = _slates(row for _, _, row in good)
        for start in range(0, len(good), batch_size):
            chunk = good[start : start + batch_size]
            clock.advance(chunk[-1][0])
            batch = [row for _, _, row in chunk]
            events = [r.event for r in batch if r.event is not None]
            outcomes = await session.ingest.submit(events, "import")
            for row, outcome in zip(batch, outcomes, strict=True):
                _count(summary, per_file, row, outcome)
            summary.slates += await session.log_slates(batch, outcomes, slates)
            if progress is not None:
                progress(len(batch))
    finally:
        await session.stop(summary.last_timestamp)
    summary.spooled = session.spooled
    summary.rejects_files = _write_rejects(per_file)
    summary.seconds = time.perf_counter() - started
    return summary


class _Session:
    """The services an import runs, started and stopped as the import needs them."""

    def __init__(self, settings: Settings, clock: EventClock) -> None:
        self.settings = settings
        self.clock = clock
        if settings.event_log.kind == "kafka":  # one process per spool file: its own
            log_settings = settings.event_log.model_copy(
                update={"spool_path": import_spool_path(settings.event_log.spool_path)}
            )
            settings = settings.model_copy(update={"event_log": log_settings})
        self.container: Container = build_container(settings, guard_clock=clock)
        c = self.container
        # The import's own ranker for historical slates: the same ranking and features,
        # but no experiments (history exposes nobody to today's experiments) and a
        # writer logging each slate under its historical id.
        self.slate_writer = historical_impression_writer(c.store)
        vectors = ItemVectors(
            c.store, settings.cache.max_items, c.retries, dim=settings.vectors.dim
        )
        self.ranker = Ranker(
            c.preferences,
            c.optimizer,
            vectors,
            self.slate_writer,
            c.store,
            c.event_log,
            rank_config(settings),
            learning=c.learning,
            retries=c.retries,
        )
        c = self.container
        sp = settings.spam
        self.ingest = IngestService(
            c.committer,
            settings.feedback.max_future_seconds,
            limits=None,  # per-request limits meter API clients (module docstring)
            guard=c.guard if sp.enabled else None,
            user_key=c.privacy.user_key
            if c.privacy is not None and settings.privacy.pseudonymize_user_ids
            else None,
            algorithms=tuple(settings.bandit.algorithms),
        )
        self._seen_slates: set[str] = set()
        self.spooled = 0
        """Distributed: events left in the import's spool (Kafka was unreachable)."""

    async def start(self) -> None:
        c = self.container
        if c.db is not None and self.settings.storage.auto_migrate:
            await c.db.migrate()
        await check_dims(c.store, self.settings.vectors.dim)
        if c.shared_cache is not None:
            await c.shared_cache.start()
        if c.privacy is not None:
            await c.privacy.start(purge=False)
        await c.optimizer.start()
        await c.experiments.start()
        await c.guard.start()
        if c.learning is not None:
            await c.learning.start(background=False)
        if c.distributed:
            await c.spool.start()
        else:
            await c.processor.start(c.event_log)
        c.committer.start()
        self.slate_writer.start()

    async def stop(self, last_timestamp: float | None) -> None:
        """Log and apply everything submitted, judge the users left, close."""
        c = self.container
        await c.committer.stop()
        await self.slate_writer.stop()
        if c.distributed:
            await c.spool.stop()
            self.spooled = int(c.spool.spooled)
        else:
            await c.processor.stop()  # applies what is queued, flushes implicit events
            if self.settings.spam.enabled and last_timestamp is not None:
                await c.guard.sweep(now=last_timestamp + self.settings.spam.judge_within_seconds)
        await c.guard.stop()
        await c.experiments.stop()
        if c.learning is not None:
            await c.learning.stop()
        if c.privacy is not None:
            await c.privacy.stop()
        if c.shared_cache is not None:
            await c.shared_cache.stop()
        if c.db is not None:
            await c.db.dispose()

    async def log_slates(
        self,
        batch: list[Row],
        outcomes: list[EventOutcome],
        slates: dict[str, list[FeedbackWire]],
    ) -> int:
        """Rank and log the historical slates whose first impression is in ``batch``
        and was accepted (a duplicate: the slate was imported before); how many.

        Distributed, duplicates are told apart by the workers only: the store says
        whether a slate was logged before.
        """
        c = self.container
        due = []
        for row, outcome in zip(batch, outcomes, strict=True):
            event = row.event
            assert event is not None
            key = _slate_id(event)
            if key is None or key in self._seen_slates:
                continue
            self._seen_slates.add(key)
            if outcome.status != "accepted":
                continue
            if c.distributed and await c.store.get_impression(key) is not None:
                continue
            due.append((key, slates[key]))
        ranked = await asyncio.gather(*(self._rank(key, shown) for key, shown in due))
        return sum(ranked)

    async def _rank(self, key: str, shown: list[FeedbackWire]) -> int:
        c = self.container
        candidates = []
        n = len(shown)
        for position, event in enumerate(shown):
            algorithm = event.attribution.algorithm if event.attribution else None
            score = (event.context or {}).get("score")
            if not isinstance(score, int | float) or isinstance(score, bool):
                score = float(n - position)  # the slate's order, best first
            candidates.append(Candidate(event.item_id, algorithm, float(score)))
        user_id = c.user_key(shown[0].user_id)
        context = {SLATE_KEY: key, SLATE_AT: _seconds(shown[0].timestamp)}
        await self.ranker.rank(user_id, candidates, None, context)
        return 1


def historical_impression_writer(store: StateStore) -> GroupCommit[Impression, None]:
    """Impressions logged by group commit, each under the historical id the import gave
    in its context (:data:`SLATE_KEY`), its credits drawn again for that id."""

    async def write(batch: list[Impression]) -> list[None]:
        await store.add_impressions([_historical(i) for i in batch])
        return [None] * len(batch)

    return GroupCommit("import-impression-writer", write, max_items=5_000)


def _historical(impression: Impression) -> Impression:
    context = dict(impression.context)
    key = context.pop(SLATE_KEY, None)
    at = context.pop(SLATE_AT, impression.created_at)
    if not isinstance(key, str):
        return impression
    context[IMPORTED] = True  # examples to train on, not a policy's slates to evaluate
    shown = impression.shown
    credits = shown.credits
    if shown.shares:  # drawn again from the id the slate is logged under
        width = max((len(s) for s in shown.shares), default=0)
        matrix = np.zeros((len(shown.shares), width))
        for row, shares in enumerate(shown.shares):
            matrix[row, : len(shares)] = shares
        credits = credited(shown.algorithms, matrix, key)
    return replace(
        impression,
        impression_id=key,
        created_at=float(at),
        context=context,
        shown=replace(shown, credits=credits),
    )


def _slate_id(event: FeedbackWire) -> str | None:
    a = event.attribution
    if event.type != "impression" or a is None or a.impression_id is None or a.algorithm is None:
        return None
    return a.impression_id


def _slates(rows: Any) -> dict[str, list[FeedbackWire]]:
    """The historical slates: each impression id's impression events, in time order."""
    found: dict[str, list[FeedbackWire]] = {}
    for row in rows:
        key = _slate_id(row.event)
        if key is not None:
            found.setdefault(key, []).append(row.event)
    return found


def _seconds(timestamp: datetime | float | None) -> float:
    if isinstance(timestamp, datetime):
        return timestamp.timestamp()
    assert timestamp is not None  # rows.read refuses rows without one
    return float(timestamp)


def _count(
    summary: Summary,
    per_file: dict[str, tuple[Path, list[tuple[Row, dict[str, Any]]]]],
    row: Row,
    outcome: EventOutcome,
) -> None:
    if outcome.status == "accepted":
        summary.accepted += 1
    elif outcome.status == "duplicate":
        summary.duplicates += 1
    else:
        error = outcome.error or {}
        reason = "blocked" if outcome.status == "blocked" else error.get("field")
        _reject(summary, per_file, row, outcome.status, reason, str(error.get("message")))


def _reject(
    summary: Summary,
    per_file: dict[str, tuple[Path, list[tuple[Row, dict[str, Any]]]]],
    row: Row,
    status: str,
    reason: str | None,
    message: str,
) -> None:
    summary.rejected[reason or "row"] += 1
    per_file[row.file][1].append(
        (row, {"status": status, "field": reason or None, "message": message})
    )


def import_spool_path(spool_path: str) -> str:
    """The import's own spool beside the API's (one process per spool file).

    >>> import_spool_path("/var/lib/recloop/spool.db")
    '/var/lib/recloop/spool.import.db'
    """
    path = Path(spool_path)
    return str(path.with_name(f"{path.stem}.import{path.suffix}"))


def rejects_path(path: Path) -> Path:
    """Where the rejected rows of ``path`` go: beside it, ``NAME.rejected.jsonl``."""
    return path.with_name(f"{path.name}.rejected.jsonl")


def _write_rejects(
    per_file: dict[str, tuple[Path, list[tuple[Row, dict[str, Any]]]]],
) -> list[str]:
    """One file of rejected rows beside each input that had some (an older one of an
    input with none now is removed); their paths."""
    written = []
    for path, rejected in per_file.values():
        target = rejects_path(path)
        if not rejected:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            continue
        with target.open("w", encoding="utf-8") as out:
            for row, why in sorted(rejected, key=lambda entry: entry[0].number):
                line = {"row": row.number, **why, "record": dict(row.raw)}
                out.write(json.dumps(line, default=str, ensure_ascii=False) + "\n")
        written.append(str(target))
    return written


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()
