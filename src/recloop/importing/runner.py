"""``recloop import``: history through the same ingestion, dedupe and learning as the API.

The rows of every file are streamed and decoded (``importing.rows``), sorted by
timestamp (ties in file and row order) in bounded memory (``importing.sorting``: at
most ``sort_buffer`` rows held, sorted runs on disk beyond that), and submitted in
batches to an ``IngestService`` wired like the API's: the same domain checks, the
blocked users refused, the same event log (its ``event_id`` dedupe), the same group
commit and processor (a batch goes through the columnar apply rounds exactly as a
``POST /feedback`` batch does), guard and experiments. Embedded, this process
applies them itself and holds the database's writer lock
(``adapters.sql.writer_lock``): a running ``recloop serve`` holds it too, and the
import refuses to start beside it.

Distributed (``event_log.kind: kafka``), the events go to the topic and the workers
apply them. The topic does not tell duplicates, so before each batch is sent the
import asks the workers' archive (the ``events`` table) which of its event ids it
holds: those, and ids repeated within the batch, are counted as duplicates and not
sent; ``accepted`` counts the events appended to the topic. An event sent earlier in
the same import and not archived yet when its duplicate is sent is counted accepted
here, and skipped by the workers (their ``recloop_worker_events`` metric counts it
``duplicate``).

Time: history is judged by its own timestamps, not as a burst arriving now.

- Per-request rate limits are not applied: they meter clients of the API, and an
  import is an operator's command with the store's own configuration.
- The guard's clock is the import's event time (the latest timestamp submitted),
  so its judgements (after 20, 40, 80... events, again after ``min_new_events``
  once ``judge_every_seconds`` of history passed) and hard rules (a flood within one
  second of a user's event timestamps) see the history as it happened. Its periodic
  sweep, which runs on the wall clock, is stopped: how many sweeps an import met
  would depend on the machine's speed, and each judges every user with new evidence.
  At the end, every user with unjudged evidence is judged (as of the last event plus
  ``spam.judge_within_seconds``), and the population norms and groups are refreshed
  as a sweep does. Embedded only: distributed, the workers' guards judge the events
  they apply, on their own clocks.

Historical slates: rows of type ``impression`` that name an
``attribution.impression_id`` (and ``attribution.algorithm``) are what a user was
shown together: the rows of one id within :data:`SLATE_SECONDS` of its first (a later
row of the id is imported as an event, not added to the slate). Each slate is ranked
once, when the stream has passed it, by a ranker built as ``POST .../rank``'s,
without experiments (history exposes nobody to today's experiments): the user's
state as of the batch that completes it, the row's ``context.score`` (else its
order) as the algorithm's score, and the slate's time as the ranker's clock (the
segment and the time features are those of the slate, not of the import). It is
logged under its historical id with the features a click model trains on, so that
clicks naming the id label it and ``recloop train`` can fit a first model from
history alone (``created_at``: the slate's time, so that training takes the slates of
its last ``learning.training_days``). A slate whose first impression event is a duplicate
(imported before) is left alone. The ranker explores as ``rank`` does: the logged
order (the ``position`` feature) is the ranker's, not the history's.

Memory: ``sort_buffer`` rows while reading; while importing, one frame of each
sorted run, the processor's bounded queue, the open slates and one id per slate.
The cyclic garbage collector runs less often during an import
(:func:`_spaced_collections`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import itertools
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
from sqlalchemy import select

from recloop.adapters.sql import SqlDatabase
from recloop.adapters.sql.tables import events
from recloop.adapters.sql.writer_lock import WriterLock
from recloop.api.wire import FeedbackWire
from recloop.config import Settings
from recloop.container import Container, build_container, check_dims
from recloop.core.ranking import Candidate, credited
from recloop.importing.rows import Raw, raw_record, read
from recloop.importing.sorting import ExternalSort
from recloop.learning.training import IMPORTED
from recloop.ports import Impression, ImpressionStore
from recloop.services.batching import GroupCommit
from recloop.services.ingest import EventOutcome, IngestService
from recloop.services.ranking import RankConfig, Ranker
from recloop.services.vectors import ItemVectors

_ARCHIVE_CHUNK: Final = 5_000
_SHOWN_AT: Final = contextvars.ContextVar[float]("recloop_import_shown_at")
"""The time of the slate being ranked: the slate ranker's clock. A context variable,
since the slates due are ranked concurrently (each in its own task and context)."""
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
    cpu_seconds: float = 0.0
    """The import's CPU time in this process, all threads (``time.process_time``): on a
    machine shared with other work, rows per CPU second say more than rows per second."""
    distributed: bool = False
    sorted_runs: int = 0
    """Sorted runs written to disk (0: the rows fitted in the sort buffer)."""
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
            "cpu_seconds": round(self.cpu_seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "distributed": self.distributed,
            "sorted_runs": self.sorted_runs,
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


Entry = tuple[float, int, int, int, FeedbackWire, Raw]
"""A decoded row on its way to ingestion: its timestamp and sequence number (the sort
key: ties in file and row order), the file's index, the row's number, the event, the
row as read."""
Rejected = tuple[int, int, str, str | None, str, Raw]
"""A rejected row: the file's index, the row's number, the status, the field refused,
the message, the row as read."""

SORT_BUFFER: Final = 100_000
"""Rows held in memory to sort (more are sorted in runs on disk: ``importing.sorting``)."""
READ_STEP: Final = 10_000
"""Rows read between two reports to ``on_read``."""
SLATE_SECONDS: Final = 60.0
"""A historical slate is the impression rows of its id within this long of its first."""
GC_YOUNG: Final = 50_000
"""Allocations between two collections of the youngest generation while importing
(CPython's default: 700); see :func:`_spaced_collections`."""


async def run_import(
    settings: Settings,
    paths: Sequence[Path],
    mapping: dict[str, str],
    batch_size: int = 5_000,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
    sort_buffer: int = SORT_BUFFER,
    on_read: Progress | None = None,
) -> Summary:
    """Import ``paths``; the summary. ``on_read`` is told the rows read (every
    :data:`READ_STEP`), ``on_total`` how many there are once all are read and sorted,
    ``progress`` the rows imported.

    Raises OSError or ValueError for an unreadable file, and
    :class:`~recloop.adapters.sql.writer_lock.WriterBusy` when another process (a
    running ``recloop serve``) writes the embedded database.
    """
    summary = Summary([str(p) for p in paths], distributed=settings.event_log.kind == "kafka")
    started, cpu_started = time.perf_counter(), time.process_time()
    lock = None
    if not summary.distributed:  # embedded: this process writes the database
        lock = WriterLock.of(settings.storage.url, "recloop import")
    if lock is not None:
        lock.acquire()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="recloop-import-") as tmp,
            _spaced_collections() as frozen,
        ):
            spill = Path(tmp)
            rejects: ExternalSort[Rejected] = ExternalSort(spill, "rejected", sort_buffer, Rejected)
            ordered = _read_all(paths, mapping, summary, rejects, spill, sort_buffer, on_read)
            if on_total is not None:
                on_total(summary.rows)
            if progress is not None and rejects.count:
                progress(rejects.count)
            frozen()  # the rows held to sort: not scanned again by every full collection
            await _ingest(settings, ordered, summary, rejects, batch_size, progress)
            summary.rejects_files = _write_rejects(paths, rejects)
    finally:
        if lock is not None:
            lock.release()
    summary.seconds = time.perf_counter() - started
    summary.cpu_seconds = time.process_time() - cpu_started
    return summary


@contextlib.contextmanager
def _spaced_collections() -> Iterator[Callable[[], None]]:
    """Fewer cyclic garbage collections while importing; yields ``freeze``.

    An import allocates a few objects per row and keeps many (the rows held to sort,
    the state it builds), so CPython's default collector, which scans the youngest
    generation every 700 allocations and everything kept whenever the kept objects grew
    by a quarter, took a large share of its CPU (docs/benchmarks.md, "Importing
    history"). Here the youngest generation is collected every :data:`GC_YOUNG`
    allocations, and ``freeze`` (``gc.freeze``) moves what is alive at the call out of
    the collector's scans; objects are still freed by reference counting as soon as they
    are dropped. Both are undone on exit (the collector's thresholds, ``gc.unfreeze``).
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, *thresholds[1:])
    try:
        yield gc.freeze
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _read_all(
    paths: Sequence[Path],
    mapping: dict[str, str],
    summary: Summary,
    rejects: ExternalSort[Rejected],
    spill: Path,
    sort_buffer: int,
    on_read: Progress | None,
) -> ExternalSort[Entry]:
    """Every row of ``paths`` read and decoded: the events into an external sort by
    timestamp, the rows refused by decoding into ``rejects``."""
    ordered: ExternalSort[Entry] = ExternalSort(spill, "events", sort_buffer, Entry)
    ignored: set[str] = set()
    seq = 0
    for index, path in enumerate(paths):
        for row in read(path, mapping, ignored):
            seq += 1
            if on_read is not None and seq % READ_STEP == 0:
                on_read(READ_STEP)
            event = row.event
            if event is None:
                error = row.error
                assert error is not None
                rejects.add((index, row.number, "rejected", error.field, error.message, row.raw))
                summary.rejected[error.field or "row"] += 1
            else:
                ordered.add((_seconds(event.timestamp), seq, index, row.number, event, row.raw))
    summary.rows = seq
    summary.ignored_columns = sorted(ignored)
    summary.sorted_runs = ordered.runs
    return ordered


def _batches(entries: Iterator[Entry], size: int) -> Iterator[list[Entry]]:
    """``entries`` in lists of ``size`` (the last one shorter)."""
    while batch := list(itertools.islice(entries, size)):
        yield batch


async def _ingest(
    settings: Settings,
    ordered: ExternalSort[Entry],
    summary: Summary,
    rejects: ExternalSort[Rejected],
    batch_size: int,
    progress: Progress | None,
) -> None:
    """Submit the events in timestamp order, in batches; count their outcomes."""
    stream = ordered.sorted()
    first = next(stream, None)
    clock = EventClock(first[0] if first is not None else time.time())
    session = _Session(settings, clock)
    await session.start()
    slates = _OpenSlates()
    try:
        if first is not None:
            summary.first_timestamp = first[0]
            for batch in _batches(itertools.chain((first,), stream), batch_size):
                clock.advance(batch[-1][0])
                outcomes = await session.submit([entry[4] for entry in batch])
                for entry, outcome in zip(batch, outcomes, strict=True):
                    _count(summary, rejects, entry, outcome)
                slates.add(batch, outcomes)
                summary.slates += await session.log_slates(slates.due(batch[-1][0]))
                summary.last_timestamp = batch[-1][0]
                if progress is not None:
                    progress(len(batch))
            summary.slates += await session.log_slates(slates.due(None))
    finally:
        await session.stop(summary.last_timestamp)
    summary.spooled = session.spooled


class _OpenSlates:
    """The historical slates being gathered from the time-ordered stream: a slate is its
    impression rows within :data:`SLATE_SECONDS` of its first; it is due once the
    stream has passed that. Memory: the open slates, and one id per slate seen (a later
    row of a slate already due is imported as an event, not added to it)."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[float, bool, list[FeedbackWire]]] = {}
        self._seen: set[str] = set()

    def add(self, batch: Sequence[Entry], outcomes: Sequence[EventOutcome]) -> None:
        for entry, outcome in zip(batch, outcomes, strict=True):
            event = entry[4]
            key = _slate_id(event)
            if key is None:
                continue
            held = self._open.get(key)
            if held is not None:
                held[2].append(event)
            elif key not in self._seen:
                self._seen.add(key)
                # not accepted (a duplicate): the slate was imported before, left alone
                self._open[key] = (entry[0], outcome.status == "accepted", [event])

    def due(self, now: float | None) -> list[tuple[str, list[FeedbackWire]]]:
        """The slates complete at ``now`` (all of them for None) whose first impression
        was accepted; the others due are dropped."""
        due = []
        for key, (first, accepted, shown) in list(self._open.items()):
            if now is not None and first + SLATE_SECONDS >= now:
                break  # opened in time order: the rest are later
            del self._open[key]
            if accepted:
                due.append((key, shown))
        return due


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
            RankConfig.of(settings),
            clock=_SHOWN_AT.get,  # features and segment as of the slate, not of the import
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
        if not c.distributed:
            # No sweeps on the wall clock: how often they ran would depend on the
            # machine's speed (module docstring); the users left are judged at the end.
            await c.guard.stop()
        if c.learning is not None:
            await c.learning.start(background=False)
        if c.spool is not None:
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
        if c.spool is not None:
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

    async def submit(self, events: list[FeedbackWire]) -> list[EventOutcome]:
        """Submit ``events`` to ingestion; each one's outcome.

        Distributed, the log (Kafka) does not tell duplicates: the events whose id the
        workers have archived already (imported or sent before), or that come again
        within the batch, are reported as duplicates and not sent (module docstring).
        """
        c = self.container
        if not c.distributed or c.db is None:
            return await self.ingest.submit(events, "import")
        known = await _archived(c.db, [e.event_id for e in events if e.event_id is not None])
        outcomes: list[EventOutcome | None] = []
        fresh: list[FeedbackWire] = []
        for event in events:
            if event.event_id in known:
                outcomes.append(EventOutcome(event.event_id, "duplicate"))
            else:
                if event.event_id is not None:
                    known.add(event.event_id)
                outcomes.append(None)
                fresh.append(event)
        sent = iter(await self.ingest.submit(fresh, "import") if fresh else [])
        return [outcome if outcome is not None else next(sent) for outcome in outcomes]

    async def log_slates(self, due: list[tuple[str, list[FeedbackWire]]]) -> int:
        """Rank and log the historical slates ``due`` (:class:`_OpenSlates`); how many.

        Distributed, duplicates are told apart by the workers only: the store says
        whether a slate was logged before.
        """
        c = self.container
        if c.distributed:
            due = [(key, shown) for key, shown in due if await c.store.get_impression(key) is None]
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
        at = _seconds(shown[0].timestamp)
        _SHOWN_AT.set(at)  # this task's context only (log_slates gathers them)
        context = {SLATE_KEY: key, SLATE_AT: at}
        await self.ranker.rank(user_id, candidates, None, context)
        return 1


def historical_impression_writer(store: ImpressionStore) -> GroupCommit[Impression, None]:
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


def _seconds(timestamp: datetime | float | None) -> float:
    if isinstance(timestamp, datetime):
        return timestamp.timestamp()
    assert timestamp is not None  # rows.read refuses rows without one
    return float(timestamp)


def _count(
    summary: Summary, rejects: ExternalSort[Rejected], entry: Entry, outcome: EventOutcome
) -> None:
    if outcome.status == "accepted":
        summary.accepted += 1
    elif outcome.status == "duplicate":
        summary.duplicates += 1
    else:
        error = outcome.error or {}
        reason = "blocked" if outcome.status == "blocked" else error.get("field")
        summary.rejected[reason or "row"] += 1
        message = str(error.get("message"))
        rejects.add((entry[2], entry[3], outcome.status, reason or None, message, entry[5]))


async def _archived(db: SqlDatabase, ids: list[str]) -> set[str]:
    """Which of ``ids`` the workers' archive (the ``events`` table) holds."""
    found: set[str] = set()
    async with db.read() as conn:
        for start in range(0, len(ids), _ARCHIVE_CHUNK):
            chunk = ids[start : start + _ARCHIVE_CHUNK]
            rows = await conn.execute(select(events.c.event_id).where(events.c.event_id.in_(chunk)))
            found.update(str(key) for (key,) in rows)
    return found


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


def _write_rejects(paths: Sequence[Path], rejects: ExternalSort[Rejected]) -> list[str]:
    """One file of rejected rows beside each input that had some, in row order (an
    older one of an input with none now is removed); their paths."""
    written = []
    out: IO[str] | None = None
    current = -1
    try:
        for index, number, status, reason, message, raw in rejects.sorted():
            if index != current:
                if out is not None:
                    out.close()
                current = index
                target = rejects_path(paths[index])
                out = target.open("w", encoding="utf-8")
                written.append(str(target))
            line = {
                "row": number,
                "status": status,
                "field": reason,
                "message": message,
                "record": raw_record(raw),
            }
            assert out is not None
            out.write(json.dumps(line, default=str, ensure_ascii=False) + "\n")
    finally:
        if out is not None:
            out.close()
    for path in paths:
        target = rejects_path(path)
        if str(target) not in written:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
    return written


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()
