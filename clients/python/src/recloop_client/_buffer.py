"""``FeedbackBuffer`` (a thread) and ``AsyncFeedbackBuffer`` (an asyncio task).

``track()`` puts an event on a bounded queue and returns; a sender takes up to
``max_batch`` events at a time (at once when that many are waiting, else
``flush_interval`` seconds after the oldest) and posts them as one batch.

Delivery
    Every event gets a client-made id (a UUIDv7) and a timestamp when it is tracked, so
    sending it again is harmless (the server answers ``duplicate``) and a late
    delivery keeps its time.

    - 5xx, 429 and connection errors: the batch is sent again after a jittered
      exponential backoff (``backoff_base`` · 2ⁿ, at most ``backoff_max`` seconds, the
      server's ``Retry-After`` when it gives one), ``max_attempts`` times in all.
    - Events the server reports ``rate_limited`` in a batch are retried the same way.
    - Then, and on 401/403 (a key problem: the events are good), the events go to
      ``on_failure(events, error)`` if given, else to the spool (``spool_path``, JSON
      Lines), which is replayed when the buffer starts, on ``flush()``, and after
      the next batch the server accepts. Nothing is dropped silently.
    - Events the server refuses for good (``rejected``, ``blocked``) go to
      ``on_rejected(pairs)`` if given, else are logged at WARNING with the reason.
    - A batch refused whole (413 too large; 422, e.g. a NaN makes the body invalid
      JSON) is split in halves until the culprit is alone, which is then ``rejected``.

When the queue is full (``max_queue`` events)
    ``when_full="block"`` (default): ``track`` waits up to ``full_timeout`` seconds
    for room, then raises :class:`~recloop_client.BufferFull` (the event is not
    kept: the caller decides). ``when_full="spool"``: the event is appended to the
    spool at once (a file write, no waiting) and sent at the next replay.

``flush()`` returns when every event queued before it and the spool have been sent
or re-spooled; ``close()`` flushes, retries for up to ``grace`` seconds, then spools
what is left. The sync buffer closes itself at interpreter exit (``atexit``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from recloop_client import _calls as c
from recloop_client import _models as m
from recloop_client._client import AsyncClient, Client
from recloop_client._errors import (
    APIError,
    BufferFull,
    PayloadTooLarge,
    RecloopError,
    ValidationError,
)
from recloop_client._spool import Spool

log = logging.getLogger("recloop_client")

DEFAULT_SPOOL = "recloop-feedback-spool.jsonl"
WhenFull = Literal["block", "spool"]
OnFailure = Callable[[list[dict[str, Any]], Exception], None]
OnRejected = Callable[[list[tuple[dict[str, Any], m.EventOutcome]]], None]


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant 10
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True)
class BufferStats:
    """What the buffer did with its events so far."""

    tracked: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    """Refused for good by the server (``rejected`` or ``blocked``)."""
    retries: int = 0
    """Requests sent again (and rate-limited events re-sent)."""
    spooled: int = 0
    failed: int = 0
    """Handed to ``on_failure``."""
    replayed: int = 0
    """Read back from the spool and sent again."""
    splits: int = 0
    """Batches halved because the server refused the body whole (413, 422)."""


class _Core:
    """Everything both buffers share: settings, event building, outcome accounting."""

    def __init__(
        self,
        *,
        max_batch: int,
        flush_interval: float,
        max_queue: int,
        when_full: WhenFull,
        full_timeout: float,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
        spool_path: str | os.PathLike[str] | None,
        on_failure: OnFailure | None,
        on_rejected: OnRejected | None,
    ) -> None:
        if not 1 <= max_batch <= 1000:
            raise ValueError(f"max_batch must be 1..1000, got {max_batch}")
        if max_queue < max_batch:
            raise ValueError(f"max_queue ({max_queue}) must be at least max_batch ({max_batch})")
        if when_full not in ("block", "spool"):
            raise ValueError(f"when_full must be 'block' or 'spool', got {when_full!r}")
        if spool_path is None and (on_failure is None or when_full == "spool"):
            raise ValueError(
                "spool_path is None: give on_failure (and when_full='block'), "
                "undeliverable events must go somewhere"
            )
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.max_batch = max_batch
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.when_full = when_full
        self.full_timeout = full_timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.spool = Spool(spool_path) if spool_path is not None else None
        self.on_failure = on_failure
        self.on_rejected = on_rejected
        self._stats = BufferStats()
        self._stats_lock = threading.Lock()
        self._rng = random.Random()

    @property
    def stats(self) -> BufferStats:
        return self._stats

    def count(self, **deltas: int) -> None:
        with self._stats_lock:
            s = self._stats
            self._stats = replace(s, **{k: getattr(s, k) + v for k, v in deltas.items()})

    @staticmethod
    def event(
        user_id: str,
        item_id: str,
        type: str,
        value: float | None,
        event_id: str | None,
        text: str | None,
        timestamp: m.Timestamp | None,
        context: Mapping[str, Any] | None,
        attribution: m.Attribution | Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """The event's JSON, checked to encode (a NaN, or a ``datetime`` in ``context``,
        raises here, in the caller's thread, rather than in the sender)."""
        event = m.Event(
            user_id,
            item_id,
            type,
            value,
            event_id or new_event_id(),
            text,
            time.time() if timestamp is None else timestamp,
            context,
            attribution,
        ).to_json()
        try:
            json.dumps(event, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise exc.__class__(f"event {event['event_id']} is not valid JSON: {exc}") from None
        return event

    def delay(self, attempt: int, error: Exception | None, hint: float | None = None) -> float:
        """Seconds before attempt ``attempt + 1``: the server's ``Retry-After`` if given
        (``error``'s, or ``hint``: the longest ``retry_after`` of a batch's rate-limited
        events), else exponential backoff with equal jitter."""
        retry_after = getattr(error, "retry_after", hint)
        if isinstance(retry_after, (int, float)) and retry_after > 0:
            return float(retry_after)
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def settle(
        self, batch: list[dict[str, Any]], result: m.FeedbackResult
    ) -> tuple[list[dict[str, Any]], float | None]:
        """Account for a batch's outcomes; return the events to send again (rate-limited)
        and the longest ``retry_after`` the server gave them (None: it gave none)."""
        again: list[dict[str, Any]] = []
        wait: float | None = None
        refused: list[tuple[dict[str, Any], m.EventOutcome]] = []
        for event, outcome in zip(batch, result.results, strict=True):
            if outcome.status == "rate_limited":
                again.append(event)
                if outcome.retry_after is not None:
                    wait = max(wait or 0.0, outcome.retry_after)
            elif outcome.status in ("rejected", "blocked"):
                refused.append((event, outcome))
        self.count(accepted=result.accepted, duplicates=result.duplicates)
        self.refuse(refused)
        return again, wait

    def refuse(self, refused: list[tuple[dict[str, Any], m.EventOutcome]]) -> None:
        """Events the server will never take: to ``on_rejected``, else the log."""
        if not refused:
            return
        self.count(rejected=len(refused))
        if self.on_rejected is not None:
            self.on_rejected(refused)
            return
        for event, outcome in refused:
            error = outcome.error
            log.warning(
                "recloop refused event %s (%s): %s %s",
                event.get("event_id"),
                outcome.status,
                error.field if error else None,
                error.message if error else "",
            )

    def refuse_whole(self, event: dict[str, Any], error: APIError) -> None:
        """One event whose request was refused whole (413, or a 422 such as a NaN that
        makes the body invalid JSON): reported as ``rejected``."""
        field = error.field if isinstance(error, ValidationError) else None
        message = error.message if isinstance(error, ValidationError) else str(error)
        outcome = m.EventOutcome(event.get("event_id"), "rejected", m.FieldError(field, message))
        self.refuse([(event, outcome)])

    def give_up(self, events: list[dict[str, Any]], error: Exception) -> None:
        """Undeliverable now: to ``on_failure``, else the spool."""
        if not events:
            return
        if self.on_failure is not None:
            self.count(failed=len(events))
            self.on_failure(events, error)
            return
        assert self.spool is not None  # checked in __init__
        log.warning("recloop: %d events spooled to %s (%s)", len(events), self.spool.path, error)
        self.spool.append(events)
        self.count(spooled=len(events))

    def spool_now(self, event: dict[str, Any]) -> None:
        """An event that found the queue full: written, not fsynced (``track`` stays fast)."""
        assert self.spool is not None
        self.spool.append([event], sync=False)
        self.count(spooled=1)


# -- sync ------------------------------------------------------------------------------


class FeedbackBuffer:
    """Batches feedback events in a background thread; ``track`` returns at once.

    >>> with FeedbackBuffer("http://127.0.0.1:8000") as buffer:  # doctest: +SKIP
    ...     buffer.track("u1", "i9", "click")

    See the module docstring for delivery, retries, the spool and the queue-full policy.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = c.DEFAULT_TIMEOUT,
        client: Client | None = None,
        max_batch: int = 1000,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        when_full: WhenFull = "block",
        full_timeout: float = 1.0,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        spool_path: str | os.PathLike[str] | None = DEFAULT_SPOOL,
        on_failure: OnFailure | None = None,
        on_rejected: OnRejected | None = None,
        close_at_exit: bool = True,
    ) -> None:
        self._core = _Core(
            max_batch=max_batch,
            flush_interval=flush_interval,
            max_queue=max_queue,
            when_full=when_full,
            full_timeout=full_timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            spool_path=spool_path,
            on_failure=on_failure,
            on_rejected=on_rejected,
        )
        self._own_client = client is None
        self._client = client or Client(base_url, api_key=api_key, timeout=timeout)
        self._cond = threading.Condition()
        self._queue: deque[dict[str, Any]] = deque()
        self._oldest = 0.0
        self._flush_want = 0
        self._flush_done = 0
        self._closing = False
        self._closed = False
        self._dead = False  # the sender crashed (a bug): flush() stops waiting for it
        self._hurry = threading.Event()  # set: stop waiting between retries, spool instead
        self._thread = threading.Thread(target=self._run, name="recloop-feedback", daemon=True)
        self._thread.start()
        self._at_exit = close_at_exit
        if close_at_exit:
            atexit.register(self.close)

    @property
    def stats(self) -> BufferStats:
        return self._core.stats

    @property
    def queued(self) -> int:
        """Events waiting in the queue (not those being sent)."""
        return len(self._queue)

    @property
    def spool_path(self) -> Path | None:
        return self._core.spool.path if self._core.spool else None

    def track(
        self,
        user_id: str,
        item_id: str,
        type: m.FeedbackType | str,
        value: float | None = None,
        *,
        event_id: str | None = None,
        text: str | None = None,
        timestamp: m.Timestamp | None = None,
        context: Mapping[str, Any] | None = None,
        attribution: m.Attribution | Mapping[str, Any] | None = None,
    ) -> str:
        """Queue one event; return its ``event_id``. Raises ``BufferFull`` when the queue
        stayed full for ``full_timeout`` seconds (``when_full="block"``)."""
        core = self._core
        event = core.event(
            user_id, item_id, type, value, event_id, text, timestamp, context, attribution
        )
        with self._cond:
            if self._closing:
                raise RecloopError("FeedbackBuffer is closed")
            if len(self._queue) >= core.max_queue:
                if core.when_full == "spool":
                    core.spool_now(event)  # a short file append under the lock keeps order
                    core.count(tracked=1)
                    return str(event["event_id"])
                deadline = time.monotonic() + core.full_timeout
                while len(self._queue) >= core.max_queue:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closing:
                        raise BufferFull(
                            f"feedback queue full ({core.max_queue} events) for "
                            f"{core.full_timeout}s; event {event['event_id']} not queued"
                        )
                    self._cond.wait(left)
            if not self._queue:
                self._oldest = time.monotonic()
                self._cond.notify_all()  # the sender now waits for flush_interval at most
            self._queue.append(event)
            core.count(tracked=1)
            if len(self._queue) >= core.max_batch:
                self._cond.notify_all()
        return str(event["event_id"])

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued, and the spool; ``False`` if ``timeout`` ran out first."""
        with self._cond:
            if self._closed or self._dead:
                return not self._queue
            self._flush_want += 1
            ticket = self._flush_want
            self._cond.notify_all()
            done = self._cond.wait_for(lambda: self._flush_done >= ticket or self._dead, timeout)
            return done and not self._dead

    def close(self, grace: float | None = 30.0) -> None:
        """Flush and stop the thread; after ``grace`` seconds stop retrying (each request
        is tried once more) and spool what is left."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._closing = True
            self._flush_want += 1
            self._cond.notify_all()
        if self._at_exit:
            atexit.unregister(self.close)
        self._thread.join(grace)
        if self._thread.is_alive():
            self._hurry.set()
            self._thread.join()
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
        self._core.give_up(left, RecloopError("buffer closed"))
        if self._own_client:
            self._client.close()

    def __enter__(self) -> FeedbackBuffer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the sender thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._replay()
            while True:
                with self._cond:
                    if not self._ready():
                        self._cond.wait(self._wait_time())
                        continue
                    take = min(self._core.max_batch, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(take)]
                    if self._queue:
                        self._oldest = time.monotonic()
                    want = self._flush_want
                    closing = self._closing
                    self._cond.notify_all()  # room for blocked track() calls
                if batch and self._deliver(batch) and self._has_spool():
                    self._replay()
                if not batch:
                    self._replay()
                    with self._cond:
                        self._flush_done = max(self._flush_done, want)
                        self._cond.notify_all()
                    if closing:
                        return
        except BaseException:  # pragma: no cover - a bug: say so, and let close() spool
            log.exception("recloop feedback sender crashed; close() spools what is queued")
            with self._cond:
                self._dead = True
                self._cond.notify_all()

    def _ready(self) -> bool:
        if self._flush_want > self._flush_done or self._closing:
            return True
        if not self._queue:
            return False
        return len(self._queue) >= self._core.max_batch or (
            time.monotonic() >= self._oldest + self._core.flush_interval
        )

    def _wait_time(self) -> float | None:
        if not self._queue:
            return None
        return max(0.0, self._oldest + self._core.flush_interval - time.monotonic())

    def _has_spool(self) -> bool:
        return self._core.spool is not None and self._core.spool.path.exists()

    def _replay(self) -> None:
        spool = self._core.spool
        if spool is None:
            return
        for path in spool.claim():
            events = list(Spool.read(path))
            self._core.count(replayed=len(events))
            for i in range(0, len(events), self._core.max_batch):
                self._deliver(events[i : i + self._core.max_batch])
            Spool.done(path)

    def _deliver(self, batch: list[dict[str, Any]]) -> bool:
        """Send ``batch`` until delivered or given up; ``True`` if the server took it."""
        core = self._core
        attempt = 0
        while batch:
            attempt += 1
            try:
                result = self._client.feedback_batch(batch)
            except (PayloadTooLarge, ValidationError) as exc:
                # The body was refused whole: halve it until the culprit is alone.
                if len(batch) == 1:
                    core.refuse_whole(batch[0], exc)
                    return True
                core.count(splits=1)
                half = len(batch) // 2
                first = self._deliver(batch[:half])
                return self._deliver(batch[half:]) and first
            except RecloopError as exc:
                if not exc.retryable or attempt >= core.max_attempts or self._hurry.is_set():
                    core.give_up(batch, exc)
                    return False
                core.count(retries=1)
                self._hurry.wait(core.delay(attempt, exc))
                continue
            again, wait = core.settle(batch, result)
            if again:
                if attempt >= core.max_attempts or self._hurry.is_set():
                    core.give_up(again, RecloopError(f"{len(again)} events rate limited"))
                    return True
                core.count(retries=1)
                self._hurry.wait(core.delay(attempt, None, wait))
            batch = again
        return True


# -- async -----------------------------------------------------------------------------


class AsyncFeedbackBuffer:
    """The asyncio twin of :class:`FeedbackBuffer`: a sender task on the running loop.

    ``await track(...)`` returns at once while the queue has room; when it is full it
    waits up to ``full_timeout`` (``when_full="block"``) or spools. Use it as an async
    context manager, or ``await close()``: there is no ``atexit`` for a loop.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = c.DEFAULT_TIMEOUT,
        client: AsyncClient | None = None,
        max_batch: int = 1000,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        when_full: WhenFull = "block",
        full_timeout: float = 1.0,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        spool_path: str | os.PathLike[str] | None = DEFAULT_SPOOL,
        on_failure: OnFailure | None = None,
        on_rejected: OnRejected | None = None,
    ) -> None:
        self._core = _Core(
            max_batch=max_batch,
            flush_interval=flush_interval,
            max_queue=max_queue,
            when_full=when_full,
            full_timeout=full_timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            spool_path=spool_path,
            on_failure=on_failure,
            on_rejected=on_rejected,
        )
        self._own_client = client is None
        self._client = client or AsyncClient(base_url, api_key=api_key, timeout=timeout)
        self._cond: asyncio.Condition | None = None
        self._queue: deque[dict[str, Any]] = deque()
        self._oldest = 0.0
        self._flush_want = 0
        self._flush_done = 0
        self._closing = False
        self._closed = False
        self._dead = False
        self._hurry = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> BufferStats:
        return self._core.stats

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _started(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._cond

    async def start(self) -> None:
        """Start the sender (and replay the spool); ``track`` does it when first called."""
        self._started()

    async def track(
        self,
        user_id: str,
        item_id: str,
        type: m.FeedbackType | str,
        value: float | None = None,
        *,
        event_id: str | None = None,
        text: str | None = None,
        timestamp: m.Timestamp | None = None,
        context: Mapping[str, Any] | None = None,
        attribution: m.Attribution | Mapping[str, Any] | None = None,
    ) -> str:
        """Queue one event; return its ``event_id`` (see :meth:`FeedbackBuffer.track`)."""
        core = self._core
        cond = self._started()
        event = core.event(
            user_id, item_id, type, value, event_id, text, timestamp, context, attribution
        )
        if self._closing:
            raise RecloopError("AsyncFeedbackBuffer is closed")
        if len(self._queue) >= core.max_queue:
            if core.when_full == "spool":
                core.spool_now(event)
                core.count(tracked=1)
                return str(event["event_id"])
            async with cond:
                try:
                    await asyncio.wait_for(
                        cond.wait_for(lambda: len(self._queue) < core.max_queue),
                        core.full_timeout,
                    )
                except TimeoutError:
                    raise BufferFull(
                        f"feedback queue full ({core.max_queue} events) for "
                        f"{core.full_timeout}s; event {event['event_id']} not queued"
                    ) from None
        first = not self._queue
        if first:
            self._oldest = time.monotonic()
        self._queue.append(event)
        core.count(tracked=1)
        if first or len(self._queue) >= core.max_batch:
            async with cond:
                cond.notify_all()
        return str(event["event_id"])

    async def flush(self) -> None:
        """Send everything queued, and the spool (wrap in ``asyncio.timeout`` to bound it)."""
        if self._closed or self._dead:
            return
        cond = self._started()
        async with cond:
            self._flush_want += 1
            ticket = self._flush_want
            cond.notify_all()
            await cond.wait_for(lambda: self._flush_done >= ticket or self._dead)

    async def close(self, grace: float | None = 30.0) -> None:
        """Flush and stop; after ``grace`` seconds stop retrying and spool what is left."""
        if self._closed:
            return
        self._closed = True
        cond = self._started()
        async with cond:
            self._closing = True
            self._flush_want += 1
            cond.notify_all()
        assert self._task is not None
        done, _ = await asyncio.wait({self._task}, timeout=grace)
        if not done:
            self._hurry.set()
            await self._task
        left = list(self._queue)
        self._queue.clear()
        self._core.give_up(left, RecloopError("buffer closed"))
        if self._own_client:
            await self._client.close()

    async def __aenter__(self) -> AsyncFeedbackBuffer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the sender task ---------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._send_loop()
        except Exception:  # pragma: no cover - a bug: say so, and let close() spool
            log.exception("recloop feedback sender crashed; close() spools what is queued")
            self._dead = True
            if self._cond is not None:
                async with self._cond:
                    self._cond.notify_all()

    async def _send_loop(self) -> None:
        cond = self._cond
        assert cond is not None
        await self._replay()
        while True:
            async with cond:
                if not self._ready():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(cond.wait(), self._wait_time())
                    continue
                take = min(self._core.max_batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(take)]
                if self._queue:
                    self._oldest = time.monotonic()
                want = self._flush_want
                closing = self._closing
                cond.notify_all()
            if batch and await self._deliver(batch) and self._has_spool():
                await self._replay()
            if not batch:
                await self._replay()
                async with cond:
                    self._flush_done = max(self._flush_done, want)
                    cond.notify_all()
                if closing:
                    return

    def _ready(self) -> bool:
        if self._flush_want > self._flush_done or self._closing:
            return True
        if not self._queue:
            return False
        return len(self._queue) >= self._core.max_batch or (
            time.monotonic() >= self._oldest + self._core.flush_interval
        )

    def _wait_time(self) -> float | None:
        if not self._queue:
            return None
        return max(0.0, self._oldest + self._core.flush_interval - time.monotonic())

    def _has_spool(self) -> bool:
        return self._core.spool is not None and self._core.spool.path.exists()

    async def _replay(self) -> None:
        spool = self._core.spool
        if spool is None:
            return
        for path in spool.claim():
            events = list(Spool.read(path))
            self._core.count(replayed=len(events))
            for i in range(0, len(events), self._core.max_batch):
                await self._deliver(events[i : i + self._core.max_batch])
            Spool.done(path)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), seconds)

    async def _deliver(self, batch: list[dict[str, Any]]) -> bool:
        core = self._core
        attempt = 0
        while batch:
            attempt += 1
            try:
                result = await self._client.feedback_batch(batch)
            except (PayloadTooLarge, ValidationError) as exc:
                if len(batch) == 1:
                    core.refuse_whole(batch[0], exc)
                    return True
                core.count(splits=1)
                half = len(batch) // 2
                first = await self._deliver(batch[:half])
                return await self._deliver(batch[half:]) and first
            except RecloopError as exc:
                if not exc.retryable or attempt >= core.max_attempts or self._hurry.is_set():
                    core.give_up(batch, exc)
                    return False
                core.count(retries=1)
                await self._pause(core.delay(attempt, exc))
                continue
            again, wait = core.settle(batch, result)
            if again:
                if attempt >= core.max_attempts or self._hurry.is_set():
                    core.give_up(again, RecloopError(f"{len(again)} events rate limited"))
                    return True
                core.count(retries=1)
                await self._pause(core.delay(attempt, None, wait))
            batch = again
        return True
