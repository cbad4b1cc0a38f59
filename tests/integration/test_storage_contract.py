"""One contract, every storage adapter: the in-memory fake must behave like SQL."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sqlalchemy import inspect, text

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore
from recloop.adapters.sql import SqlDatabase, SqlEventLog, SqlStateStore
from recloop.core.bandit import COUNT_LIMIT, PerformanceCounts
from recloop.core.events import Event
from recloop.core.experiments import UserMetric
from recloop.core.items import Item
from recloop.core.preferences import LearningRate, UserState
from recloop.core.slates import Slate
from recloop.core.state import UserRows
from recloop.core.stats import PairStats
from recloop.ports import (
    AlgorithmCount,
    EventLog,
    Impression,
    ImpressionHead,
    ModelRecord,
    StateChanges,
    StateStore,
    TrainingJob,
    WaitingReport,
)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def adapters(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[EventLog, StateStore]]:
    if request.param == "memory":
        yield InMemoryEventLog(), InMemoryStateStore()
        return
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    db = SqlDatabase(url)
    await db.migrate()
    yield SqlEventLog(db), SqlStateStore(db)
    await db.dispose()


_RATE = LearningRate()


def ev(event_id: str, user: str = "u", kind: str = "like", **kw: object) -> Event:
    return Event(event_id=event_id, user_id=user, item_id="i", type=kind, timestamp=1.5, **kw)


async def test_append_assigns_increasing_offsets_and_refuses_duplicates(
    adapters: tuple[EventLog, StateStore],
) -> None:
    log, _ = adapters
    assert await log.last_offset() == 0
    first = await log.append([ev("a"), ev("b"), ev("a")])
    assert first[0] is not None and first[1] is not None
    assert first[1] > first[0]
    assert first[2] is None  # the same event_id twice in one batch
    again = await log.append([ev("b"), ev("c")])
    assert again[0] is None
    assert again[1] is not None and again[1] > first[1]
    assert await log.last_offset() == again[1]


async def test_read_returns_events_in_order_with_all_fields(
    adapters: tuple[EventLog, StateStore],
) -> None:
    log, _ = adapters
    full = Event(
        event_id="x",
        user_id="u1",
        item_id="i9",
        type="rating",
        timestamp=1700000000.25,
        value=4.0,
        text="great",
        context={"device": "tv", "position": 3},
        attribution={"algorithm": "popularity", "propensity": 0.5},
    )
    offsets = await log.append([ev("a"), full, ev("c")])
    events = await log.read(0, 10)
    assert [e.event_id for e in events] == ["a", "x", "c"]
    assert [e.offset for e in events] == offsets
    got = events[1]
    assert (got.value, got.text, got.timestamp) == (4.0, "great", 1700000000.25)
    assert dict(got.context) == {"device": "tv", "position": 3}
    assert dict(got.attribution) == {"algorithm": "popularity", "propensity": 0.5}
    assert [e.event_id for e in await log.read(offsets[0], 1)] == ["x"]
    assert await log.read(offsets[2], 10) == []


async def test_user_state_round_trips_exactly(adapters: tuple[EventLog, StateStore]) -> None:
    _, store = adapters
    state = UserState.new("u1", 4)
    state.vector = np.array([0.1, -0.2, 1e-300, 0.3333333333333333])
    state.events_applied, state.events_skipped, state.interactions = 5, 1, 6
    state.impressions, state.explicit_offset, state.implicit_offset = 9, 42, 40
    state.first_event_at, state.last_event_at, state.updated_at = 1.0, 2.0, 3.0
    await store.commit(StateChanges(users=UserRows.of([state]), watermark=17))
    got = await store.get_users(["u1", "nobody"])
    assert set(got) == {"u1"}
    assert np.array_equal(got["u1"].vector, state.vector)
    for name in UserState.__slots__:
        if name != "vector":
            assert getattr(got["u1"], name) == getattr(state, name), name
    assert await store.get_watermark() == 17
    state.events_applied = 6
    await store.commit(StateChanges(users=UserRows.of([state])))
    assert (await store.get_users(["u1"]))["u1"].events_applied == 6
    assert await store.get_watermark() == 17


def _state(user_id: str, offset: int, signal: float = 1.0) -> UserState:
    state = UserState.new(user_id, 4)
    state.apply_explicit(offset, signal, np.arange(4.0), 1.0, _RATE, 1.0)
    return state


async def test_the_state_journal_holds_newer_rows_until_compacted(
    adapters: tuple[EventLog, StateStore],
) -> None:
    """Journaled rows are read back as the users' state, newest record first, kept through
    a retried commit once, and reach the user table when their records are compacted."""
    _, store = adapters
    old_a = _state("a", 1)
    await store.commit(StateChanges(users=UserRows.of([old_a])))
    a, b = _state("a", 3), _state("b", 4)
    first = StateChanges(journal=UserRows.of([a, b]), journal_seq=1, commit_id="j1")
    await store.commit(first)
    await store.commit(first)  # a retry of a commit that went through
    newer_b = _state("b", 9, -1.0)
    await store.commit(StateChanges(journal=UserRows.of([newer_b]), journal_seq=2))
    records = await store.get_journal()
    assert [(seq, rows.user_ids) for seq, rows in records] == [(1, ["a", "b"]), (2, ["b"])]
    got = await store.get_users(["a", "b", "nobody"])
    assert set(got) == {"a", "b"}
    np.testing.assert_array_equal(got["a"].vector, a.vector)
    assert got["a"].explicit_offset == 3
    np.testing.assert_array_equal(got["b"].vector, newer_b.vector)
    for name in UserState.__slots__:
        if name != "vector":
            assert getattr(got["b"], name) == getattr(newer_b, name), name
    # Compacting record 1 writes the rows of the users whose latest record it is (a).
    await store.commit(StateChanges(users=UserRows.of([a]), journal_through=1))
    assert [seq for seq, _ in await store.get_journal()] == [2]
    got = await store.get_users(["a", "b"])
    assert got["a"].explicit_offset == 3 and got["b"].explicit_offset == 9
    await store.commit(StateChanges(users=UserRows.of([newer_b]), journal_through=2))
    assert await store.get_journal() == []
    got = await store.get_users(["a", "b"])
    assert (got["a"].explicit_offset, got["b"].explicit_offset) == (3, 9)


async def test_the_stored_user_ids_are_the_user_tables_and_the_journals(
    adapters: tuple[EventLog, StateStore],
) -> None:
    """``get_user_ids`` names every user whose state a read would find (the user table's
    and the journal's, each at least once), and no other."""
    _, store = adapters
    assert await store.get_user_ids() == []
    await store.commit(StateChanges(users=UserRows.of([_state("a", 1), _state("b", 2)])))
    await store.commit(
        StateChanges(journal=UserRows.of([_state("b", 3), _state("c", 4)]), journal_seq=1)
    )
    ids = await store.get_user_ids()
    assert set(ids) == {"a", "b", "c"} == set(await store.get_users(["a", "b", "c", "d"]))
    await store.commit(
        StateChanges(users=UserRows.of([_state("b", 3), _state("c", 4)]), journal_through=1)
    )
    assert sorted(set(await store.get_user_ids())) == ["a", "b", "c"]


async def test_a_new_store_reads_the_journal_another_wrote(tmp_path: Path) -> None:
    """The journal index is per process: a store opened later (a restart) finds the
    journaled rows through it."""
    db = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'j.db'}")
    await db.migrate()
    try:
        writer = SqlStateStore(db)
        await writer.get_users(["x"])  # the index is read (empty) and then kept up to date
        await writer.commit(StateChanges(journal=UserRows.of([_state("x", 5)]), journal_seq=7))
        assert (await writer.get_users(["x"]))["x"].explicit_offset == 5
        assert (await SqlStateStore(db).get_users(["x"]))["x"].explicit_offset == 5
    finally:
        await db.dispose()


async def test_items_round_trip_and_replace(adapters: tuple[EventLog, StateStore]) -> None:
    _, store = adapters
    item = Item("i1", np.array([0.6, 0.8]), "given", {"genre": "jazz", "tags": ["a"]}, 5.0)
    await store.put_items([item])
    got = await store.get_items(["i1", "i2"])
    assert set(got) == {"i1"}
    assert np.array_equal(got["i1"].vector, item.vector)
    assert dict(got["i1"].attributes) == {"genre": "jazz", "tags": ["a"]}
    await store.put_items([Item("i1", np.array([1.0, 0.0]), "hashed", {}, 6.0)])
    assert (await store.get_items(["i1"]))["i1"].vector_source == "hashed"


async def test_dead_letters_are_kept(adapters: tuple[EventLog, StateStore]) -> None:
    _, store = adapters
    await store.add_dead_letter(ev("p", offset=3), "ValueError: bad")
    assert await store.count_dead_letters() == 1
    await store.ping()


async def test_partition_positions_only_move_forward(
    adapters: tuple[EventLog, StateStore],
) -> None:
    _, store = adapters
    assert await store.get_positions() == {}
    await store.commit(StateChanges(positions={0: 10, 3: 7}))
    await store.commit(StateChanges(positions={0: 4, 3: 9}))  # a late write from a lost owner
    assert await store.get_positions() == {0: 10, 3: 9}
    assert await store.get_watermark() == 0  # the embedded watermark is a separate row


async def test_a_retried_commit_is_applied_once(adapters: tuple[EventLog, StateStore]) -> None:
    """A commit whose answer was lost is retried with its id: its deltas (algorithm counts,
    experiment sums) must not be added twice. A new id is a new commit."""
    _, store = adapters
    bucket = 1_800_000_000.0

    def changes(commit_id: str | None) -> StateChanges:
        return StateChanges(
            algorithm_counts=[
                AlgorithmCount("new", "popularity", bucket, PerformanceCounts(impressions=10))
            ],
            experiment_stats=[("x", "control", "ctr", PairStats.of(x=[1.0], y=[2.0]))],
            watermark=7,
            commit_id=commit_id,
        )

    async def totals() -> tuple[int, float]:
        counts = await store.get_algorithm_counts(0.0)
        stats = await store.get_experiment_stats("x")
        return sum(c.counts.impressions for c in counts), sum(s.sum_y for _, _, s in stats)

    await store.commit(changes("c1"))
    await store.commit(changes("c1"))  # the retry of a commit that went through
    assert await totals() == (10, 2.0)
    await store.commit(changes("c2"))
    assert await totals() == (20, 4.0)
    await store.commit(changes(None))  # no id: applied every time (e.g. a single attempt)
    assert await totals() == (30, 6.0)
    assert await store.get_watermark() == 7


async def test_a_stale_user_state_does_not_overwrite_a_newer_one(
    adapters: tuple[EventLog, StateStore],
) -> None:
    _, store = adapters
    newer = UserState.new("u", 4)
    newer.apply_explicit(5, 1.0, np.ones(4), 1.0, _RATE, 1.0)
    stale = UserState.new("u", 4)
    stale.apply_explicit(2, -1.0, np.ones(4), 1.0, _RATE, 1.0)
    await store.commit(StateChanges(users=UserRows.of([newer])))
    await store.commit(StateChanges(users=UserRows.of([stale])))
    kept = (await store.get_users(["u"]))["u"]
    assert kept.explicit_offset == 5
    np.testing.assert_array_equal(kept.vector, newer.vector)


async def test_archive_tells_duplicates_from_redeliveries(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    for url in (sqlite_url, request.getfixturevalue("postgres_url")):
        db = SqlDatabase(url)
        await db.migrate()
        try:
            log = SqlEventLog(db)
            first = [ev("a", partition=1, offset=1), ev("b", partition=1, offset=2)]
            assert await log.archive(first) == [True, True]
            # Redelivered from the same positions (after a crash): still first seen there.
            again = [ev("a", partition=1, offset=1), ev("b", partition=1, offset=2)]
            assert await log.archive(again) == [True, True]
            # The same ids at later positions (a client's retry): duplicates; in one batch too.
            retry = [ev("a", partition=1, offset=7), ev("c", partition=1, offset=8)]
            retry.append(ev("c", partition=1, offset=9))
            assert await log.archive(retry) == [False, True, False]
            found = await log.read_user_events("u", 0.0, 10.0)
            assert sorted(e.event_id for e in found) == ["a", "b", "c"]
        finally:
            await db.dispose()


async def test_model_registry_deployment_and_jobs(adapters: tuple[EventLog, StateStore]) -> None:
    _, store = adapters
    assert await store.get_models() == []
    assert await store.get_deployment() == (None, [])
    for n in (1, 2):
        record = ModelRecord(
            version=f"v{n}",
            created_at=float(n),
            status="candidate",
            reason="",
            kind="lightgbm",
            sha256="ab" * 32,
            window_start=0.0,
            window_end=float(n),
            examples=100 * n,
            positives=10 * n,
            metrics={"auc": 0.7},
            feature_names=["a", "b"],
        )
        await store.put_model(record, b"model-" + bytes([n]))
    await store.set_model_status("v1", "rejected", "auc 0.51 < 0.52")
    listed = await store.get_models()
    assert [m.version for m in listed] == ["v2", "v1"]
    assert (listed[1].status, listed[1].reason) == ("rejected", "auc 0.51 < 0.52")
    found = await store.get_model("v2")
    assert found is not None and found[1] == b"model-\x02" and found[0].metrics == {"auc": 0.7}
    assert await store.get_model("v9") is None

    await store.put_deployment({"blue": "v2"}, {"at": 5.0, "action": "deploy"})
    await store.put_deployment({"blue": "v2", "green": None}, None)
    assert await store.get_deployment() == (
        {"blue": "v2", "green": None},
        [{"at": 5.0, "action": "deploy"}],
    )

    job = TrainingJob("j1", "api", "queued", 1.0)
    await store.put_job(job)
    await store.put_job(TrainingJob("j1", "api", "done", 1.0, 2.0, "v2", "trained"))
    assert await store.get_job("j1") == TrainingJob("j1", "api", "done", 1.0, 2.0, "v2", "trained")
    assert await store.get_job("nope") is None


async def test_impressions_by_time_and_their_feedback(
    adapters: tuple[EventLog, StateStore],
) -> None:
    log, store = adapters
    shown = Slate.from_slate([{"item_id": "i"}])
    made = [Impression(f"imp{n}", "u", "new", float(n), 0.1, shown) for n in range(5)]
    await store.add_impressions(made)
    found = await store.get_impressions(1.0, 4.0)
    assert [i.impression_id for i in found] == ["imp1", "imp2", "imp3"]
    await log.append([ev("c1", kind="click", attribution={"impression_id": "imp2"})])
    feedback = await log.read_feedback_of(["imp1", "imp2"])
    assert list(feedback) == ["imp1", "imp2"]
    assert feedback["imp1"] == [] and [e.event_id for e in feedback["imp2"]] == ["c1"]


async def test_the_clicks_that_name_an_impression_are_read_alone(
    adapters: tuple[EventLog, StateStore],
) -> None:
    log, _ = adapters
    named = {"impression_id": "imp1"}
    await log.append(
        [
            ev("c1", kind="click", attribution=named),
            ev("l1", kind="like", attribution=named),  # names one, not a click
            ev("c2", kind="click"),  # a click naming none
            ev("c3", kind="click", attribution={"impression_id": "imp2"}),
            ev("c4", kind="click", attribution=named),
        ]
    )
    found = await log.read_impression_clicks(0, 10)
    assert [e.event_id for e in found] == ["c1", "c3", "c4"]
    assert found[1].attribution == {"impression_id": "imp2"}
    assert [e.offset for e in found] == sorted(e.offset or 0 for e in found)
    first = await log.read_impression_clicks(0, 1)
    assert [e.event_id for e in first] == ["c1"]
    rest = await log.read_impression_clicks(first[0].offset or 0, 10)
    assert [e.event_id for e in rest] == ["c3", "c4"]
    assert await log.read_impression_clicks(found[-1].offset or 0, 10) == []


async def test_an_impression_comes_back_as_logged_with_its_feature_set(
    adapters: tuple[EventLog, StateStore],
) -> None:
    _, store = adapters
    names = ("fusion", "affinity", "position", "inverse_position")
    features = np.array([[1.0, 0.25, 0.0, 1.0], [0.5, np.nan, 1.0, 0.5]], dtype=np.float32)
    shown = Slate(
        ("a", "b"), (0.9, 1 / 3), (0.95, 0.05), (False, True), (("als", "pop"), ()),
        features, names,
    )  # fmt: skip
    other = Slate(("c",), (0.1,), (1.0,), (False,), ((),), np.zeros((1, 1), np.float32), ("x",))
    made = [
        Impression("s1", "u", "new", 5.0, 0.1, shown, {"device": "tv"}, [{"e": 1}], "m1", "blue"),
        Impression("s2", "u", "new", 6.0, 0.1, other),
        Impression("s3", "u", "new", 7.0, 0.1),  # nothing shown
    ]
    await store.add_impressions(made)
    await store.add_impressions([Impression("s4", "v", "new", 8.0, 0.2, shown)])  # set known
    assert await store.get_impressions(0.0, 10.0) == [
        *made,
        Impression("s4", "v", "new", 8.0, 0.2, shown),
    ]
    found = await store.get_impression("s1")
    assert found == made[0]
    assert found.slate[1]["features"]["position"] == 1.0
    assert math.isnan(found.slate[1]["features"]["affinity"])
    # the canary monitor's read: each impression's head, the rest left unread
    heads = await store.get_impression_heads(5.5, 10.0)
    assert heads == [ImpressionHead.of(i) for i in await store.get_impressions(5.5, 10.0)]
    assert [(h.impression_id, h.item_ids) for h in heads] == [
        ("s2", ("c",)),
        ("s3", ()),
        ("s4", ("a", "b")),
    ]
    assert await store.get_impression_heads(0.0, 5.5) == [
        ImpressionHead("s1", "u", 5.0, ("a", "b"), "m1", "blue")
    ]
    known = {"s2", "s4", "elsewhere"}  # held by the reader already: left out, undecoded
    left = await store.get_impression_heads(0.0, 10.0, known)
    assert [h.impression_id for h in left] == ["s1", "s3"]
    assert left == [h for h in await store.get_impression_heads(0.0, 10.0) if h not in heads[::2]]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_impressions_are_read_by_a_range_of_their_creation_times(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Every read of impressions is a window of creation times (the canary monitor's, each
    pass): a range of the index, not a scan of the table."""
    url = (
        request.getfixturevalue("postgres_url")
        if backend == "postgres"
        else f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    )
    db = SqlDatabase(url)

    def indexes(connection: Any) -> set[str]:
        return {i["name"] for i in inspect(connection).get_indexes("impressions")}

    try:
        await db.migrate()
        async with db.read() as conn:
            assert "ix_impressions_created_at" in await conn.run_sync(indexes)
            if backend == "sqlite":
                plan = await conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT impression_id FROM impressions"
                    " WHERE created_at >= 1.0 AND created_at < 2.0"
                    " ORDER BY created_at, impression_id"
                )
                assert "ix_impressions_created_at" in " ".join(str(r) for r in plan.all())
    finally:
        await db.dispose()


async def test_impressions_logged_before_0010_are_read_as_they_were(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    slate = [
        {
            "item_id": "a", "position": 0, "score": 0.7, "propensity": 0.9, "explored": False,
            "algorithms": ["als"],
            "features": {"fusion": 1.0, "affinity": 0.1, "inverse_position": 1.0},
        },
        {
            "item_id": "b", "position": 1, "score": 0.2, "propensity": 0.1, "explored": True,
            "algorithms": [],
            "features": {"fusion": 0.5, "affinity": -0.3, "inverse_position": 0.5},
        },
    ]  # fmt: skip
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    for url in (sqlite_url, request.getfixturevalue("postgres_url")):
        db = SqlDatabase(url)
        await db.migrate("0008")
        try:
            async with db.write() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO impressions (impression_id, user_id, segment, created_at,"
                        " epsilon, model_version, slate, context, experiments, model_slot)"
                        " VALUES ('old', 'u', 'new', 1.0, 0.1, NULL, :slate, :context, :e, NULL)"
                    ),
                    {"slate": orjson.dumps(slate), "context": b"{}", "e": b"[]"},
                )
            await db.migrate()
            store = SqlStateStore(db)
            found = await store.get_impression("old")
            assert found is not None
            assert found.slate == [
                {**s, "features": {k: float(np.float32(v)) for k, v in s["features"].items()}}
                for s in slate
            ]
            assert [i.impression_id for i in await store.get_impressions(0.0, 2.0)] == ["old"]
            assert await store.get_impression_heads(0.0, 2.0) == [
                ImpressionHead("old", "u", 1.0, ("a", "b"))
            ]
        finally:
            await db.dispose()


async def test_algorithm_counts_saturate_instead_of_overflowing(
    adapters: tuple[EventLog, StateStore],
) -> None:
    """Issue 16: a bucket's sums stop at COUNT_LIMIT, however many reports add to them
    (a 64-bit column would overflow, a Python int would not fit the JSON answer)."""
    _, store = adapters
    near = COUNT_LIMIT - 5
    big = PerformanceCounts(near, near, near, float(near), near)
    row = AlgorithmCount("new", "popularity", 1_800_000_000.0, big)
    assert await store.add_performance_report("r1", b"[]", [row])
    assert await store.add_performance_report("r2", b"[]", [row])
    await store.commit(StateChanges(algorithm_counts=[row], commit_id="c1"))
    (got,) = await store.get_algorithm_counts(0.0)
    counts = got.counts
    assert (counts.impressions, counts.clicks, counts.conversions) == (COUNT_LIMIT,) * 3
    assert counts.satisfaction_n == COUNT_LIMIT


async def test_fractional_algorithm_counts_add_and_read_back(
    adapters: tuple[EventLog, StateStore],
) -> None:
    """Issue 15: inverse-propensity credit counts fractions of impressions and clicks; they
    add up as PerformanceCounts does (values exact in binary, so equal to the bit), and
    whole counts read back as whole numbers (int), as before the columns became floats."""
    _, store = adapters
    bucket = 1_800_000_000.0
    ips = PerformanceCounts(1.25, 1.25, 0, 0.0, 0)
    rows = [
        AlgorithmCount("new", "popularity", bucket, ips),
        AlgorithmCount("new", "popularity", bucket, ips.scaled(2.0)),
        AlgorithmCount("new", "trending", bucket, PerformanceCounts(3, 1)),
    ]
    await store.commit(StateChanges(algorithm_counts=rows[:2], commit_id="c1"))
    await store.commit(StateChanges(algorithm_counts=rows[2:], commit_id="c2"))
    got = {r.algorithm: r.counts for r in await store.get_algorithm_counts(0.0)}
    assert (
        got["popularity"] == ips + ips.scaled(2.0) == PerformanceCounts(3.75, 3.75, 0, 0.0, 0, 2.5)
    )
    assert got["trending"] == PerformanceCounts(3, 1)
    assert isinstance(got["trending"].impressions, int)
    assert isinstance(got["trending"].clicks, int)


async def test_the_squared_credit_weights_add_subtract_and_read_back(
    adapters: tuple[EventLog, StateStore],
) -> None:
    """Session 14: each bucket keeps the impressions' squared credit weights beyond them
    (``impressions_sq_excess``) for the effective sample size; it adds up through the
    state commit and the reports and is taken back by a negative delta (an erasure), as the
    counts are; whole counts keep 0 (values exact in binary, so equal to the bit)."""
    _, store = adapters
    bucket = 1_800_000_000.0
    one = PerformanceCounts(impressions=1)
    ips = one.scaled(4.0) + one.scaled(1.25) + PerformanceCounts(clicks=1).scaled(4.0)
    gone = one.scaled(2.5)
    await store.commit(
        StateChanges(
            algorithm_counts=[
                AlgorithmCount("new", "popularity", bucket, ips),
                AlgorithmCount("new", "popularity", bucket, gone),
            ],
            commit_id="c1",
        )
    )
    report = AlgorithmCount("new", "popularity", bucket, PerformanceCounts(10, 1))
    assert await store.add_performance_report("r1", b"[]", [report])
    erased = AlgorithmCount("new", "popularity", bucket, PerformanceCounts() - gone)
    await store.commit(StateChanges(algorithm_counts=[erased], commit_id="c2"))
    (got,) = await store.get_algorithm_counts(0.0)
    assert got.counts == ips + PerformanceCounts(10, 1)
    assert got.counts.impressions_sq == 4.0**2 + 1.25**2 + 10
    assert got.counts.effective_impressions == 15.25**2 / (16 + 1.5625 + 10)


async def test_counts_stored_before_0016_read_as_unweighted(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A bucket stored before the squares were kept reads with none beyond its impressions:
    its counts weigh what they did (their weights are not known any more)."""
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    for url in (sqlite_url, request.getfixturevalue("postgres_url")):
        db = SqlDatabase(url)
        await db.migrate("0015")
        try:
            async with db.write() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO algorithm_stats (segment, algorithm, bucket_start,"
                        " impressions, clicks, conversions, satisfaction_sum, satisfaction_n)"
                        " VALUES ('new', 'popularity', 3600.0, 12.5, 2.5, 0, 0.0, 0)"
                    )
                )
            await db.migrate()
            store = SqlStateStore(db)
            (got,) = await store.get_algorithm_counts(0.0)
            assert got.counts == PerformanceCounts(12.5, 2.5)
            assert got.counts.effective_impressions == 12.5
            await store.commit(
                StateChanges(
                    algorithm_counts=[AlgorithmCount("new", "popularity", 3600.0, got.counts)],
                    commit_id="c1",
                )
            )
            (got,) = await store.get_algorithm_counts(0.0)
            assert got.counts == PerformanceCounts(25.0, 5.0)
        finally:
            await db.dispose()


async def test_user_metrics_of_some_users(adapters: tuple[EventLog, StateStore]) -> None:
    """All of an experiment's values, or only those of the users asked for (a flagged
    user's, which a distributed API instance takes away from results)."""
    _, store = adapters
    rows = [("x", f"u{k}", m, UserMetric(float(k), 1.0)) for k in range(5) for m in ("a", "b")]
    rows.append(("y", "u1", "a", UserMetric(9.0, 0.0)))
    await store.commit(StateChanges(user_metrics=rows))
    every = await store.get_user_metrics("x")
    assert sorted((u, m, v.y) for u, m, v in every) == sorted(
        (u, m, v.y) for e, u, m, v in rows if e == "x"
    )
    some = await store.get_user_metrics("x", ["u1", "u3", "nobody"])
    assert sorted((u, m, v.y) for u, m, v in some) == [
        ("u1", "a", 1.0), ("u1", "b", 1.0), ("u3", "a", 3.0), ("u3", "b", 3.0)
    ]  # fmt: skip
    assert await store.get_user_metrics("x", []) == []


async def test_several_users_events_in_one_read(adapters: tuple[EventLog, StateStore]) -> None:
    log, _ = adapters
    events = [
        Event(event_id=f"e{n}", user_id=f"u{n % 3}", item_id="i", type="like", timestamp=float(n))
        for n in range(9)
    ]
    await log.append(events)
    found = await log.read_users_events(["u0", "u2", "nobody"], 1.0, 8.0)
    # each user as read_user_events gives them alone; every user asked is a key
    assert found == {
        "u0": await log.read_user_events("u0", 1.0, 8.0),
        "u2": await log.read_user_events("u2", 1.0, 8.0),
        "nobody": [],
    }
    assert [e.event_id for e in found["u0"]] == ["e3", "e6"]
    assert [e.event_id for e in found["u2"]] == ["e2", "e5"]


async def test_a_read_of_users_events_bounded_by_logging_time(
    adapters: tuple[EventLog, StateStore],
) -> None:
    """The retraction reads only the log's part above an offset found by logging time."""
    log, _ = adapters
    assert await log.offset_logged_before(time.time()) == 0  # an empty log
    marks: list[float] = []
    last: list[int] = []
    for batch in range(3):
        events = [
            Event(f"b{batch}e{n}", f"u{n % 2}", "i", "like", float(10 * batch + n))
            for n in range(4)
        ]
        offsets = await log.append(events)
        last.append(max(o for o in offsets if o is not None))
        await asyncio.sleep(0.01)
        marks.append(time.time())
        await asyncio.sleep(0.01)
    assert await log.offset_logged_before(0.0) == 0
    assert await log.offset_logged_before(marks[0]) == last[0]
    assert await log.offset_logged_before(marks[1]) == last[1]
    assert await log.offset_logged_before(marks[2]) == last[2]
    found = await log.read_users_events(["u0", "u1"], 0.0, 1e9, last[0])
    assert [e.event_id for e in found["u0"]] == ["b1e0", "b1e2", "b2e0", "b2e2"]
    assert [e.event_id for e in found["u1"]] == ["b1e1", "b1e3", "b2e1", "b2e3"]
    everything = await log.read_users_events(["u0"], 0.0, 1e9)
    assert len(everything["u0"]) == 6


async def test_waiting_reports_replace_their_partitions_rows(
    adapters: tuple[EventLog, StateStore],
) -> None:
    _, store = adapters
    assert await store.get_waiting() == []
    first = [
        WaitingReport(0, {"exp": {"click": 3, "impression": 2}}, 0, 10.0),
        WaitingReport(1, {}, None, 10.0),
    ]
    await store.put_waiting(first)
    assert await store.get_waiting() == first
    later = WaitingReport(1, {"exp": {"click": 1}, "other": {"purchase": 4}}, 7, 11.5)
    await store.put_waiting([later])
    assert await store.get_waiting() == [first[0], later]
