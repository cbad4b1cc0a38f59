"""The array-backed user table (core.state) against the per-user rules it vectorises.

The scalar methods of ``core.preferences.UserState`` are the oracle: a batch applied
through the table must give, to the bit, the vectors and counters that applying its
events one by one gives.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.events import SignalTable, TypeWeight
from recloop.core.preferences import ImplicitAggregate, LearningRate, UserState
from recloop.core.segments import SEGMENTS, SegmentRules, segment_codes, segment_of
from recloop.core.state import (
    ExplicitRound,
    UserRows,
    UserTable,
    aggregate,
    apply_explicit,
    apply_explicit_each,
    apply_explicit_steps,
    apply_implicit,
    occurrence_rank,
)

DIM = 4
RATE = LearningRate(base_alpha=0.3, alpha_max=0.5)
N_ITEMS = 5


def _items(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(N_ITEMS, DIM))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


events_strategy = st.lists(
    st.tuples(
        st.integers(0, 3),  # user
        st.integers(0, N_ITEMS),  # item (N_ITEMS: an unknown item)
        st.floats(-3.0, 3.0, allow_nan=False),  # signal
        st.sampled_from([100.0, 55.5, math.nan]),  # reliability (NaN: held)
        st.floats(0.0, 1e6, allow_nan=False),  # timestamp
    ),
    min_size=1,
    max_size=40,
)


def _table(users: int, start: list[UserState]) -> UserTable:
    table = UserTable(DIM, capacity=64)
    table.add(UserRows.of(start))
    return table


def _start_states(users: int, seed: int) -> list[UserState]:
    rng = np.random.default_rng(seed)
    states = []
    for u in range(users):
        s = UserState.new(f"u{u}", DIM)
        s.vector = rng.normal(size=DIM)
        if u % 2:
            s.explicit_offset, s.interactions, s.last_event_at = 3, 7, 10.0
        states.append(s)
    return states


@settings(deadline=None, max_examples=150)
@given(events=events_strategy, seed=st.integers(0, 2**16))
def test_explicit_batch_matches_one_event_at_a_time(
    events: list[tuple[int, int, float, float, float]], seed: int
) -> None:
    items = _items(seed)
    start = _start_states(4, seed)
    oracle = {s.user_id: UserState(**{f: getattr(s, f) for f in s.__slots__}) for s in start}
    for s in oracle.values():
        s.vector = s.vector.copy()
    table = _table(4, start)
    offsets = np.arange(1, len(events) + 1, dtype=np.int64)
    for (user, item, signal, rel, ts), offset in zip(events, offsets.tolist(), strict=True):
        state = oracle[f"u{user}"]
        if math.isnan(rel):
            state.hold_explicit(offset, ts, now=99.0)
        else:
            vector = items[item] if item < N_ITEMS else None
            state.apply_explicit(offset, signal, vector, ts, RATE, now=99.0, reliability=rel)

    slots, _ = table.slots([f"u{u}" for u, *_ in events])
    item_rows = np.array([items[i] if i < N_ITEMS else np.zeros(DIM) for _, i, *_ in events])
    explicit = ExplicitRound(
        slots,
        item_rows,
        np.array([i < N_ITEMS for _, i, *_ in events]),
        np.array([e[2] for e in events]),
        np.array([e[3] for e in events]),
        offsets,
        np.array([e[4] for e in events]),
    )
    apply_explicit(table, explicit, RATE, now=99.0)
    rows = table.rows(np.arange(4, dtype=np.int64))
    for i in range(4):
        got, want = rows.state(i), oracle[rows.user_ids[i]]
        assert np.array_equal(got.vector, want.vector)  # to the bit
        assert got == UserState(**{**_fields(want), "vector": got.vector})


_TABLE_COLUMNS = (
    "vectors", "events_applied", "events_skipped", "interactions", "impressions",
    "events_held", "first_event_at", "last_event_at", "updated_at", "explicit_offset",
    "implicit_offset", "dirty", "used",
)  # fmt: skip


@settings(deadline=None, max_examples=200)
@given(
    events=st.lists(
        st.tuples(
            st.integers(0, 3),  # user
            st.integers(0, N_ITEMS),  # item (N_ITEMS: an unknown item)
            st.floats(-3.0, 3.0, allow_nan=False),  # signal
            st.sampled_from([100.0, 55.5, 0.0, math.nan]),  # reliability (NaN: held)
            st.floats(0.0, 20.0, allow_nan=False),  # timestamp, around the start's 10.0
            st.integers(0, 8),  # offset: some at or below the user's (3), some repeated
        ),
        min_size=1,
        max_size=40,
    ),
    seed=st.integers(0, 2**16),
)
def test_explicit_one_by_one_matches_the_steps_to_the_bit(
    events: list[tuple[int, int, float, float, float, int]], seed: int
) -> None:
    """The small-round path against the vectorised one (its oracle): same table, same
    returns, whatever the round (repeated users, held, stale or unordered offsets)."""
    items = _items(seed)
    start = _start_states(4, seed)
    tables = [_table(4, start), _table(4, start)]
    for t in tables:
        t.round = 5
    slots, _ = tables[0].slots([f"u{u}" for u, *_ in events])
    explicit = ExplicitRound(
        slots,
        np.array([items[i] if i < N_ITEMS else np.zeros(DIM) for _, i, *_ in events]),
        np.array([i < N_ITEMS for _, i, *_ in events]),
        np.array([e[2] for e in events]),
        np.array([e[3] for e in events]),
        np.array([e[5] for e in events], dtype=np.int64),
        np.array([e[4] for e in events]),
    )
    learnt_each, before_each = apply_explicit_each(tables[0], explicit, RATE, 99.0)
    learnt_steps, before_steps = apply_explicit_steps(tables[1], explicit, RATE, 99.0)
    assert learnt_each.tolist() == learnt_steps.tolist()
    for a, b in [(before_each.interactions, before_steps.interactions),
                 (before_each.last_event_at, before_steps.last_event_at)]:  # fmt: skip
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    for name in _TABLE_COLUMNS:
        a, b = getattr(tables[0], name), getattr(tables[1], name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name  # to the bit


@settings(deadline=None, max_examples=100)
@given(
    rounds=st.lists(st.lists(st.integers(0, 40), max_size=12), max_size=8),
    dirty=st.sets(st.integers(0, 40)),
)
def test_add_new_matches_adding_new_rows(rounds: list[list[int]], dirty: set[int]) -> None:
    """add_new against add(new_rows(...)) (its oracle), round after round in a table small
    enough to drop rows: same slots, same columns to the bit."""
    tables = [UserTable(DIM, capacity=16), UserTable(DIM, capacity=16)]
    for k, users in enumerate(rounds):
        for t in tables:
            t.round = k
            held = {u for u in t.index}
            new = list(dict.fromkeys(f"u{u}" for u in users if f"u{u}" not in held))
            if t is tables[0]:
                t.add_new(new)
            else:
                t.add(t.new_rows(new))
            slots = [t.index[f"u{u}"] for u in sorted(dirty) if f"u{u}" in t.index]
            t.vectors[slots] += 1.0  # something to reset when a slot is used again
            t.first_event_at[slots] = 3.0
            t.dirty[slots] = k % 2 == 0
        assert tables[0].index == tables[1].index
        assert tables[0].evicted() == tables[1].evicted()
        for name in (*_TABLE_COLUMNS, "journal_seq", "pinned", "saving"):
            a, b = getattr(tables[0], name), getattr(tables[1], name)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name


def _fields(state: UserState) -> dict[str, object]:
    return {f: getattr(state, f) for f in state.__slots__}


@settings(deadline=None, max_examples=150)
@given(
    events=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, N_ITEMS),
            st.floats(-3.0, 3.0, allow_nan=False),
            st.booleans(),  # an impression
            st.floats(0.0, 1e6, allow_nan=False),
        ),
        min_size=1,
        max_size=40,
    ),
    held=st.sets(st.integers(0, 3)),
    seed=st.integers(0, 2**16),
)
def test_implicit_flush_matches_aggregates_applied_one_by_one(
    events: list[tuple[int, int, float, bool, float]], held: set[int], seed: int
) -> None:
    items = _items(seed)
    start = _start_states(4, seed)
    oracle = {s.user_id: UserState(**_fields(s)) for s in start}
    for s in oracle.values():
        s.vector = s.vector.copy()
    # The oracle: ImplicitAggregate per (user, item), applied in first-event order.
    aggs: dict[tuple[int, int], ImplicitAggregate] = {}
    for offset, (user, item, signal, impression, ts) in enumerate(events, start=1):
        aggs.setdefault((user, item), ImplicitAggregate()).add(signal, impression, offset, ts)
    for (user, item), agg in aggs.items():
        state = oracle[f"u{user}"]
        if user in held:
            state.hold_implicit(agg, now=5.0)
        else:
            vector = items[item] if item < N_ITEMS else None
            state.apply_implicit(agg, vector, RATE, now=5.0, reliability=80.0)

    table = _table(4, start)
    slots, _ = table.slots([f"u{u}" for u, *_ in events])
    groups = aggregate(
        slots,
        np.array([i for _, i, *_ in events], dtype=np.int64),
        np.array([e[2] for e in events]),
        np.array([e[3] for e in events]),
        np.arange(1, len(events) + 1, dtype=np.int64),
        np.array([e[4] for e in events]),
    )
    group_items = groups.items.tolist()
    group_users = [table.ids[s] for s in groups.users.tolist()]
    apply_implicit(
        table,
        groups,
        np.array([items[i] if i < N_ITEMS else np.zeros(DIM) for i in group_items]),
        np.array([i < N_ITEMS for i in group_items]),
        np.array([math.nan if int(u[1:]) in held else 80.0 for u in group_users]),  # type: ignore[index]
        RATE,
        now=5.0,
    )
    rows = table.rows(np.arange(4, dtype=np.int64))
    for i in range(4):
        got, want = rows.state(i), oracle[rows.user_ids[i]]
        assert np.array_equal(got.vector, want.vector)
        assert _fields(got) == {**_fields(want), "vector": got.vector}


@given(keys=st.lists(st.integers(0, 6), max_size=50))
def test_occurrence_rank_counts_earlier_equal_keys(keys: list[int]) -> None:
    rank = occurrence_rank(np.array(keys, dtype=np.int64))
    assert rank.tolist() == [keys[:i].count(k) for i, k in enumerate(keys)]


def test_signals_match_the_scalar_rule() -> None:
    table = SignalTable(
        {
            "rating": TypeWeight(1.0, 1.0),
            "dwell": TypeWeight(0.7, 0.5),
            "click": TypeWeight(0.3, 0.5),
        },
        dwell_full_seconds=300.0,
    )
    rng = np.random.default_rng(1)
    types = list(rng.choice(["rating", "dwell", "click"], size=500))
    values = rng.uniform(-10.0, 1000.0, size=500)
    got = table.signals(types, values)
    want = [table.signal(t, v) for t, v in zip(types, values.tolist(), strict=True)]
    assert got.tolist() == want


@given(
    interactions=st.lists(st.integers(0, 300), min_size=1, max_size=30),
    seed=st.integers(0, 1000),
)
def test_segment_codes_match_segment_of(interactions: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(interactions)
    last = np.where(rng.random(n) < 0.2, np.nan, rng.uniform(0, 100 * 86_400.0, n))
    now = rng.uniform(0, 100 * 86_400.0, n)
    rules = SegmentRules()
    codes = segment_codes(np.array(interactions), last, now, rules)
    for i in range(n):
        at = None if math.isnan(last[i]) else float(last[i])
        assert SEGMENTS[codes[i]] == segment_of(interactions[i], at, float(now[i]), rules)


def test_full_table_drops_least_recently_used_clean_rows_only() -> None:
    table = UserTable(DIM, capacity=10)
    table.add(table.new_rows([f"u{i}" for i in range(10)]))
    slots, _ = table.slots(["u0", "u1"])
    table.round = 5
    table.touch(slots, np.zeros(2), np.zeros(2), now=1.0)  # dirty and recently used
    table.pinned[table.index["u2"]] = True
    table.add(table.new_rows(["new"]))
    gone = set(table.evicted())
    assert gone and {"u0", "u1", "u2"}.isdisjoint(gone)
    assert "new" in table and len(table) <= 10


def test_rows_being_saved_are_not_dropped_until_saved() -> None:
    table = UserTable(DIM, capacity=4)
    table.add(table.new_rows(["a", "b", "c", "d"]))
    slots, _ = table.slots(["a", "b", "c", "d"])
    table.touch(slots, np.zeros(4), np.zeros(4), now=1.0)
    rows = table.take_dirty()
    assert len(rows) == 4
    table.add(table.new_rows(["e"]))  # room is made by growing, not by dropping
    assert table.evicted() == [] and len(table) == 5
    table.saved()
    table.add(table.new_rows(["f"]))
    assert table.evicted()


def test_rows_round_trip_through_user_state() -> None:
    state = UserState.new("u", DIM)
    state.vector = np.arange(DIM, dtype=float)
    state.events_applied, state.first_event_at, state.explicit_offset = 3, 2.5, 9
    back = UserRows.of([state]).state(0)
    assert _fields(back) == {**_fields(state), "vector": back.vector}
    assert np.array_equal(back.vector, state.vector)
    rows = UserRows.of([state])
    merged = rows + UserRows.of([UserState.new("u", DIM)])
    assert len(merged) == 1 and merged.state(0).events_applied == 0  # the later row wins


def test_empty_rows_are_of_no_states() -> None:
    """``UserRows.empty`` is ``UserRows.of([], dim)`` (the same columns, shapes and dtypes),
    its id list its own; rows added to it are those rows, and it stays empty."""
    for dim in (0, DIM):
        empty, reference = UserRows.empty(dim), UserRows.of([], dim)
        for name in ("vectors", "events_applied", "first_event_at", "implicit_offset"):
            got, want = getattr(empty, name), getattr(reference, name)
            assert got.shape == want.shape and got.dtype == want.dtype
        assert UserRows.empty(dim).user_ids is not empty.user_ids
        rows = UserRows.of([UserState.new("u", DIM)])
        assert (empty + rows) is rows and (rows + empty) is rows
        empty.user_ids.append("not shared")
        assert UserRows.empty(dim).user_ids == [] and len(UserRows.empty(dim)) == 0


def test_preferences_is_none_until_something_is_applied() -> None:
    table = UserTable(DIM)
    table.add(table.new_rows(["u"]))
    assert table.preferences("u") is None
    slots, _ = table.slots(["u"])
    table.touch(slots, np.array([1.0]), np.array([2.0]), now=3.0)
    prefs = table.preferences("u")
    assert prefs is not None and prefs.updated_at == 3.0 and prefs.first_event_at == 1.0


@given(
    stored=st.lists(st.sampled_from([f"u{i}" for i in range(12)]), max_size=8),
    held=st.lists(st.sampled_from([f"u{i}" for i in range(12)]), max_size=6, unique=True),
    dropped=st.lists(st.integers(0, 5), max_size=6),
    told=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_may_store_is_may_be_stored_of_one_user(
    stored: list[str], held: list[str], dropped: list[int], told: bool
) -> None:
    table = UserTable(dim=2)
    if told:
        table.know_stored(stored)
    table.add_new(held)
    for n in dropped:  # some of the held users let go of since
        if n < len(held):
            table.drop(held[n])
    for user_id in [f"u{i}" for i in range(12)]:
        assert table.may_store(user_id) == bool(table.may_be_stored([user_id])), user_id
