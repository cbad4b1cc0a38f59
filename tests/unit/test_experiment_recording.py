"""Recording a user's first exposure (``ExperimentService._record_exposures``): committed
before any request of the user waiting for it answers, once for concurrent first requests,
nothing half-recorded when a request is cancelled (client gone), and a failed write
reported to every request waiting for it.

The store and the ``stored`` look-up are held at gates, so each test puts a request
exactly where it means to: before the exposure is held (the look-up), or while it is
written (the commit)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore
from recloop.config import ExperimentSettings
from recloop.core.experiments import Experiment, Metric, Variant
from recloop.ports import StateChanges
from recloop.services.experiments import ExperimentService

Exposing = asyncio.Task[tuple[str | None, str | None]]
"""A request's ``expose``, in a task."""

EXPERIMENT = Experiment(
    "x",
    "x",
    (Variant("c", 0.5), Variant("t", 0.5)),
    (Metric("clicks", "continuous", event="click"),),
    seed="same-seed",
)


class GatedStore(InMemoryStateStore):
    """The in-memory store; commits wait at ``gate`` while it is closed, fail with
    ``failure`` when set, and the exposures committed are listed by user."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.committing = asyncio.Event()
        self.failure: Exception | None = None
        self.exposed: list[str] = []

    async def commit(self, changes: StateChanges) -> None:
        self.committing.set()
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        self.exposed += [e.user_id for e in changes.exposures]
        await super().commit(changes)


class Lookup:
    """The service's ``stored`` hook (does the store hold the user?), waiting at ``gate``:
    the recording request waits here before it holds anything."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.asked = asyncio.Event()
        self.calls = 0

    async def __call__(self, user_id: str) -> bool:
        self.calls += 1
        self.asked.set()
        await self.gate.wait()
        return False


@pytest.fixture
def store() -> GatedStore:
    return GatedStore()


@pytest.fixture
def lookup() -> Lookup:
    return Lookup()


@pytest.fixture
async def service(store: GatedStore, lookup: Lookup) -> AsyncIterator[ExperimentService]:
    service = running(store, lookup)
    await service.start()
    await service.create(EXPERIMENT)
    await service.transition("x", "start")
    try:
        yield service
    finally:
        store.gate.set()
        lookup.gate.set()
        await service.stop()


def running(store: GatedStore, lookup: Lookup) -> ExperimentService:
    return ExperimentService(
        store, InMemoryEventLog(), ExperimentSettings(), holds=lambda _: False, stored=lookup
    )


async def until_waiting() -> None:
    """Let every ready task run until it waits (none of them waits on a timer)."""
    for _ in range(10):
        await asyncio.sleep(0)


def counted(service: ExperimentService) -> int:
    return sum(s.n for (_, metric), s in service.counted_stats("x").items() if metric == "clicks")


async def two_first_requests(
    service: ExperimentService, lookup: Lookup
) -> tuple[Exposing, Exposing]:
    """A user's first request, held at the look-up (nothing held yet), and a second one of
    the same user, waiting."""
    first = asyncio.create_task(service.expose("x", "u"))
    await lookup.asked.wait()
    second = asyncio.create_task(service.expose("x", "u"))
    await until_waiting()
    return first, second


async def writing(service: ExperimentService, store: GatedStore, lookup: Lookup) -> Exposing:
    """A user's first request, held while its exposure is committed."""
    lookup.gate.set()
    store.gate.clear()
    first = asyncio.create_task(service.expose("x", "u"))
    await store.committing.wait()
    return first


async def test_concurrent_first_requests_record_once_and_answer_once_committed(
    service: ExperimentService, store: GatedStore, lookup: Lookup
) -> None:
    first, second = await two_first_requests(service, lookup)
    store.gate.clear()
    lookup.gate.set()
    await store.committing.wait()
    await until_waiting()
    assert not first.done() and not second.done()  # the exposure is not committed yet
    store.gate.set()
    answers = await asyncio.gather(first, second)
    assert answers[0] == answers[1]
    assert answers[0][0] in ("c", "t")
    assert store.exposed == ["u"]
    assert lookup.calls == 1
    assert counted(service) == 1


async def test_a_request_cancelled_before_holding_leaves_nothing_and_a_waiting_one_records(
    service: ExperimentService, store: GatedStore, lookup: Lookup
) -> None:
    first, second = await two_first_requests(service, lookup)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await until_waiting()
    assert service.exposures_of("u") == []
    assert store.exposed == []
    assert counted(service) == 0
    lookup.gate.set()
    variant, _ = await second
    assert [e["variant"] for e in service.exposures_of("u")] == [variant]
    assert store.exposed == ["u"]
    assert counted(service) == 1


async def test_a_request_cancelled_while_its_exposure_is_written_leaves_it_recorded(
    service: ExperimentService, store: GatedStore, lookup: Lookup
) -> None:
    first = await writing(service, store, lookup)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    store.gate.set()
    await service.stop()  # writes what is pending, then stops
    assert store.exposed == ["u"]
    held = service.exposures_of("u")
    assert len(held) == 1
    restarted = running(store, lookup)
    await restarted.start()
    try:
        assert restarted.exposures_of("u") == held
        assert restarted.counted_stats("x") == service.counted_stats("x")
        await restarted.expose("x", "u")
        assert store.exposed == ["u"]  # not recorded again
    finally:
        await restarted.stop()


async def test_a_failed_write_is_reported_to_every_waiting_request(
    service: ExperimentService, store: GatedStore, lookup: Lookup
) -> None:
    first, second = await two_first_requests(service, lookup)
    store.failure = OSError("disk full")
    lookup.gate.set()
    answers = await asyncio.gather(first, second, return_exceptions=True)
    assert answers == [store.failure, store.failure]
    assert store.exposed == []


async def test_a_request_during_the_write_answers_once_the_exposure_is_committed(
    service: ExperimentService, store: GatedStore, lookup: Lookup
) -> None:
    first = await writing(service, store, lookup)
    second = asyncio.create_task(service.expose("x", "u"))  # the exposure is held already
    await until_waiting()
    assert not second.done()
    store.gate.set()
    assert await second == await first
    assert store.exposed == ["u"]
