"""The feedback processor's apply path, at the service level on the memory adapters.

The processor (services.feedback, services.apply) applies a round of events vectorised
over the batch; the oracle is core.preferences' per-event ``UserState``, fed the same
events one by one in log order. The gate is the real guard, fed each event as the
embedded server feeds it (a user blocked by hand is held, the others learn at the
guard's reliability); the store, log and cache are the in-memory adapters.
"""

from __future__ import annotations

import random
import time

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore, TtlCache
from recloop.config import Settings, load_settings
from recloop.core.events import EXPLICIT_TYPES, Event
from recloop.core.items import make_item
from recloop.core.preferences import ImplicitAggregate, UserState
from recloop.resilience import RetryCounts
from recloop.services.apply import note_partitions, note_partitions_each
from recloop.services.feedback import Processor, ProcessorConfig
from recloop.services.guard import GuardService
from recloop.services.vectors import ItemVectors
from tests.conftest import eventually

DIM = 8
ITEMS = [f"i{n}" for n in range(6)]
USERS = ["ann", "bob", "cyd", "dee"]


def unit(rng: np.random.Generator) -> list[float]:
    v = rng.normal(size=DIM)
    return (v / np.linalg.norm(v)).tolist()


async def running(
    settings: Settings, seed: int = 0
) -> tuple[Processor, InMemoryStateStore, GuardService, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    store = InMemoryStateStore()
    vectors = {i: np.array(unit(rng)) for i in ITEMS}
    now = time.time()
    await store.put_items([make_item(i, v.tolist(), None, DIM, now) for i, v in vectors.items()])
    guard = GuardService(store, settings.spam, max_users=settings.cache.max_users)
    await guard.start()
    processor = new_processor(store, settings, guard)
    await processor.start(InMemoryEventLog())
    return processor, store, guard, vectors


def new_processor(store: InMemoryStateStore, settings: Settings, guard: GuardService) -> Processor:
    return Processor(
        store,
        TtlCache(100, 60.0),
        ItemVectors(store, 100, dim=DIM),
        ProcessorConfig.of(settings),
        gate=guard,
        retries=RetryCounts(),
        evidence=guard.observe,  # as embedded: the guard sees each event before it applies
    )


async def applied(processor: Processor, offset: int) -> None:
    async def done() -> bool:
        t = processor.tracker
        return t.in_flight == 0 and t.last_begun >= offset

    await eventually(done)


def settings() -> Settings:
    # The guard is not due to judge anyone during a test: every reliability stays the
    # one it has when the oracle reads it.
    spam = {"judge_every_events": 100_000, "judge_within_seconds": 3600.0}
    return load_settings(None, storage={"url": "memory://"}, vectors={"dim": DIM}, spam=spam)


@pytest.mark.parametrize("seed", range(3))
async def test_explicit_events_move_each_user_as_the_per_event_oracle(seed: int) -> None:
    s = settings()
    processor, store, guard, vectors = await running(s, seed)
    try:
        await guard.set_manual("dee", True, "test")  # held: kept, not learnt from
        rng = random.Random(seed)
        types = sorted(t for t in EXPLICIT_TYPES if t != "review")
        events = []
        for n in range(1, 201):
            kind = rng.choice(types)
            value = float(rng.randint(1, 5)) if kind == "rating" else None
            user, item = rng.choice(USERS), rng.choice(ITEMS)
            events.append(Event(f"e{n}", user, item, kind, 1_000.0 + n, value=value, offset=n))
        # Several rounds, a user's events spread over them (order within a user holds).
        for start in range(0, len(events), 37):
            await processor.dispatch(events[start : start + 37])
        await applied(processor, len(events))
        await processor.checkpoint()

        config = ProcessorConfig.of(s)
        oracle = {u: UserState.new(u, DIM) for u in USERS}
        for e in events:
            reliability = guard.reliability(e.user_id)
            if reliability is None:
                continue
            signal = config.signals.signal(e.type, e.value)
            oracle[e.user_id].apply_explicit(
                e.offset, signal, vectors[e.item_id], e.timestamp, config.rate, 0.0, reliability
            )
        stored = await store.get_users(USERS)
        for user in ("ann", "bob", "cyd"):
            live = processor.preferences(user)
            assert live is not None
            np.testing.assert_allclose(live.vector, oracle[user].vector, atol=1e-9)
            np.testing.assert_allclose(stored[user].vector, oracle[user].vector, atol=1e-9)
            assert stored[user].events_applied == oracle[user].events_applied > 0
        # The held user learnt nothing; their events are counted as held.
        held = processor.preferences("dee")
        assert held is None or not np.any(held.vector)
    finally:
        await processor.stop()
        await guard.stop()


async def test_a_restart_replays_only_what_the_checkpoint_does_not_cover() -> None:
    s = settings()
    processor, store, guard, vectors = await running(s)
    log = InMemoryEventLog()
    try:
        events = [Event(f"e{n}", "ann", ITEMS[n % 3], "like", 1_000.0 + n) for n in range(4)]
        offsets = await log.append(events)
        logged = [
            msgspec.structs.replace(e, offset=o) for e, o in zip(events, offsets, strict=True)
        ]
        await processor.dispatch(logged[:2])
        await applied(processor, logged[1].offset)
        await processor.checkpoint()
        covered = processor.preferences("ann")
        assert covered is not None and covered.events_applied == 2
    finally:
        await processor.stop()
    # A new process on the same store: the two covered events are not applied again,
    # the two after the watermark are.
    again = new_processor(store, s, guard)
    try:
        await again.start(log)
        await applied(again, logged[-1].offset)
        await again.checkpoint()
        config = ProcessorConfig.of(s)
        oracle = UserState.new("ann", DIM)
        reliability = guard.reliability("ann")
        assert reliability is not None
        for e in logged:
            signal = config.signals.signal(e.type, e.value)
            oracle.apply_explicit(
                e.offset, signal, vectors[e.item_id], e.timestamp, config.rate, 0.0, reliability
            )
        stored = (await store.get_users(["ann"]))["ann"]
        assert stored.events_applied == 4
        np.testing.assert_allclose(stored.vector, oracle.vector, atol=1e-9)
    finally:
        await again.stop()
        await guard.stop()


async def test_implicit_events_are_summed_per_user_and_item_and_applied_at_the_flush() -> None:
    s = settings()
    processor, store, guard, vectors = await running(s)
    try:
        kinds = ["view", "click", "view", "add_to_cart", "skip", "click"]
        events = [
            Event(f"e{n}", "ann", "i2", kind, 1_000.0 + n, offset=n)
            for n, kind in enumerate(kinds, start=1)
        ]
        await processor.dispatch(events)

        async def buffered() -> bool:
            return processor.implicit_buffered == len(events)

        await eventually(buffered)
        before = processor.preferences("ann")
        assert before is None or not np.any(before.vector)  # buffered until the flush
        await processor.flush_implicit()
        await applied(processor, len(events))
        await processor.checkpoint()

        config = ProcessorConfig.of(s)
        agg = ImplicitAggregate()
        for e in events:
            agg.add(config.signals.signal(e.type, e.value), False, e.offset, e.timestamp)
        oracle = UserState.new("ann", DIM)
        reliability = guard.reliability("ann")
        assert reliability is not None
        oracle.apply_implicit(agg, vectors["i2"], config.rate, 0.0, reliability)
        after = processor.preferences("ann")
        assert after is not None
        np.testing.assert_allclose(after.vector, oracle.vector, atol=1e-9)
        stored = (await store.get_users(["ann"]))["ann"]
        np.testing.assert_allclose(stored.vector, oracle.vector, atol=1e-9)
        assert stored.interactions == len(events)
    finally:
        await processor.stop()
        await guard.stop()


async def test_buffered_events_of_a_user_let_go_meanwhile_go_to_their_new_row() -> None:
    """Buffered events note their users' slots; a slot let go before the flush (the user
    evicted with nothing blocked) and taken by another user must not receive them."""
    s = settings()
    processor, _store, guard, _vectors = await running(s)
    try:
        events = [Event(f"e{n}", "ann", "i2", "click", 1_000.0 + n, offset=n) for n in range(1, 4)]
        await processor.dispatch(events)

        async def buffered() -> bool:
            return processor.implicit_buffered == len(events)

        await eventually(buffered)
        slot = processor.table.index["ann"]
        processor.evict("ann")  # no tombstone: the buffered events stay
        assert processor.implicit_buffered == len(events)
        processor.table.add_new(["bob"])  # the freed slot is the next one taken
        assert processor.table.index["bob"] == slot
        await processor.flush_implicit()
        await applied(processor, len(events))
        ann, bob = processor.preferences("ann"), processor.preferences("bob")
        assert ann is not None and ann.interactions == len(events)
        assert bob is None or (bob.interactions == 0 and not np.any(bob.vector))
    finally:
        await processor.stop()
        await guard.stop()


@examples(deadline=None, max_examples=200)
@given(
    partitions=st.lists(st.integers(0, 4), max_size=80),
    known=st.dictionaries(st.integers(0, 4), st.integers(0, 5), max_size=3),
)
def test_partition_bookkeeping_one_by_one_matches_numpy(
    partitions: list[int], known: dict[int, int]
) -> None:
    """note_partitions_each (a small round's) against note_partitions (its oracle): the
    same counts and first offsets, added to what is already noted."""
    offsets = list(range(10, 10 + len(partitions)))  # growing, hence growing per partition
    got_first, got_counts = dict(known), {p: 1 for p in known}
    want_first, want_counts = dict(known), {p: 1 for p in known}
    note_partitions_each(partitions, offsets, got_first, got_counts)
    note_partitions(
        np.array(partitions, dtype=np.int64), np.array(offsets, dtype=np.int64),
        want_first, want_counts,
    )  # fmt: skip
    assert got_first == want_first
    assert got_counts == want_counts


async def test_a_credit_weight_above_the_clip_is_counted_as_the_clip() -> None:
    """``attribution.credit_weights`` is accepted up to 1e9; the processor counts each
    weight at most ``exploration.credit_clip`` (3 by default), with its square."""
    s = settings()
    assert s.exploration.credit_clip == 3.0
    processor, store, guard, _ = await running(s)
    try:
        attribution = {"credit_weights": {"collaborative": 40.0, "popularity": 2.0}}
        events = [
            Event(f"e{n}", "ann", "i1", kind, 1_000.0 + n, offset=n, attribution=attribution)
            for n, kind in enumerate(["impression", "click"], start=1)
        ]
        await processor.dispatch(events)

        async def buffered() -> bool:
            return processor.implicit_buffered == len(events)

        await eventually(buffered)
        await processor.flush_implicit()
        await applied(processor, len(events))
        await processor.checkpoint()
        counted = {r.algorithm: r.counts for r in await store.get_algorithm_counts(0.0)}
        clipped, kept = counted["collaborative"], counted["popularity"]
        assert (clipped.impressions, clipped.clicks, clipped.impressions_sq) == (3.0, 3.0, 9.0)
        assert (kept.impressions, kept.clicks, kept.impressions_sq) == (2.0, 2.0, 4.0)
    finally:
        await processor.stop()
        await guard.stop()
