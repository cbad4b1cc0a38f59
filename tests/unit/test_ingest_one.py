"""A one-event request's path through the ingest against the batch path it skips.

``IngestService.submit`` takes a request of one candidate by ``submit_one``, without
the batch path's lists and passes; the batch path (``_submit_batch``) of the same
candidate is its oracle. Twin services (each with its own rate limiter, guard and log,
on one clock) get the same random requests: valid events of every type, values a
type refuses, candidates already rejected by decoding, repeated event ids, blocked
users and users over their rate limits. Every outcome and every logged event must
be the same.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from recloop.adapters.memory.store import InMemoryReliabilityStore
from recloop.adapters.ratelimit import MemoryRateLimiter
from recloop.api.wire import FeedbackWire, WireError
from recloop.config import Settings
from recloop.core.events import FEEDBACK_TYPES, Event
from recloop.ports import ReliabilityRecord
from recloop.services.batching import GroupCommit
from recloop.services.guard import GuardService
from recloop.services.ingest import REQUEST_ID, EventOutcome, IngestService
from recloop.services.limits import RateLimits

LIMITS = {"explicit": "3/minute;5/hour", "implicit": "4/minute", "key": "40/minute"}
BLOCKED, SILENT = "u-blocked", "u-blocked-silently"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Log:
    """The event log's write: an offset per new event id, None for one seen before."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.seen: set[str] = set()

    async def write(self, events: Sequence[Event]) -> list[int | None]:
        offsets: list[int | None] = []
        for event in events:
            if event.event_id in self.seen:
                offsets.append(None)
                continue
            self.seen.add(event.event_id)
            self.events.append(event)
            offsets.append(len(self.events))
        return offsets


async def _service(
    clock: Clock,
) -> tuple[IngestService, Log, GroupCommit[Event, int | None], GuardService]:
    store = InMemoryReliabilityStore()
    await store.put_reliability(
        [
            ReliabilityRecord(BLOCKED, 0.0, "blocked", 0.0, True, "spam"),
            ReliabilityRecord(SILENT, 0.0, "blocked", 0.0, True, ""),  # blocked, no reason given
        ]
    )
    guard = GuardService(store, Settings().spam, max_users=1_000, clock=clock)
    await guard.start()
    log = Log()
    committer: GroupCommit[Event, int | None] = GroupCommit("log", log.write)
    committer.start()
    limits = RateLimits(MemoryRateLimiter(LIMITS, clock=clock))
    service = IngestService(committer, 300.0, clock=clock, limits=limits, guard=guard)
    return service, log, committer, guard


def _candidate(rng: random.Random, n: int) -> FeedbackWire | Exception:
    if rng.random() < 0.05:
        error = WireError("type", "not a feedback type")
        error.label = "unknown"
        return error
    kind = rng.choice(sorted(FEEDBACK_TYPES))
    value = rng.choice([None, None, 1.0, 4.0, 7.0, -3.0, 30.0])
    user = rng.choice([BLOCKED, SILENT, "u1", "u2", "u3", "u4"])
    event_id = f"e{rng.randrange(n)}"  # repeats: duplicates
    timestamp = rng.choice([None, None, 1_799_999_000.0, 1_800_009_000.0])  # one too late
    return FeedbackWire(user, f"i{rng.randrange(5)}", kind, event_id, value, None, timestamp)


async def test_one_event_requests_as_the_batch_path_takes_them() -> None:
    clock = Clock()
    one, one_log, one_commit, one_guard = await _service(clock)
    batch, batch_log, batch_commit, batch_guard = await _service(clock)
    rng = random.Random(3)
    statuses: set[str] = set()
    token = REQUEST_ID.set("req-1")
    try:
        for n in range(1, 1_500):
            clock.now += rng.choice([0.0, 0.5, 2.0, 20.0, 61.0])
            candidate = _candidate(rng, n)
            (got,) = await one.submit([candidate], "key-1")
            (want,) = await batch._submit_batch([candidate], "key-1")
            assert isinstance(got, EventOutcome)
            assert got == want, (n, candidate)
            statuses.add(got.status)
    finally:
        REQUEST_ID.reset(token)
        for committer, guard in ((one_commit, one_guard), (batch_commit, batch_guard)):
            await committer.stop()
            await guard.stop()
    assert one_log.events == batch_log.events
    assert statuses == {"accepted", "duplicate", "rejected", "rate_limited", "blocked"}
    blocked = [e for e in one_log.events if e.user_id in (BLOCKED, SILENT)]
    assert not blocked
