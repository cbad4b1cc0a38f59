"""The guard's evidence in columns equals the one-user reference, event for event.

Random streams of every event type (impression floods, re-viewed items, bursts over
the hard rules' limits, late timestamps, ratings replaced and evicted, reviews with
copied texts) go through ``UserActivity`` + ``record_event`` one event at a time, and
through ``ActivityTable.fold`` in batches of random sizes, with compactions of the log
in between; every counter, the hard rules, the profiles, the readings and the verdicts
must be the same.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pytest

from recloop.core import spam_table
from recloop.core.events import EXPLICIT_TYPES, FEEDBACK_TYPES
from recloop.core.spam import (
    ItemStats,
    SpamConfig,
    TextRegistry,
    UserActivity,
    activity_readings,
    record_event,
)
from recloop.core.spam_batch import judge_many, readings_of_columns
from recloop.core.spam_table import _STEPS, CODES, ActivityTable, _link_sorted, _link_steps

SMALL = SpamConfig(
    recent_actions=8,
    remembered_items=4,
    max_actions_per_second=5.0,
    max_explicit_per_second=3.0,
    max_profile_ratings=5,
    remembered_reviews=2,
)
TEXTS = [
    "a perfectly ordinary review of this thing, nothing more",
    "BUY NOW at http://cheap.example.com best prices best prices",
    "loooooooooved it so much, would buy again and again",
    "short",
]


@dataclass
class Event:
    user: str
    type: str
    item: str
    value: float | None
    t: float
    text: str | None


def stream(seed: int, users: int, events: int, items: int) -> list[Event]:
    rng = random.Random(seed)
    clocks = {f"u{u}": 1_000_000.0 + rng.uniform(0, 3_600) for u in range(users)}
    types = sorted(FEEDBACK_TYPES)
    out: list[Event] = []
    burst: tuple[str, int, list[str]] | None = None  # (user, events left, types)
    while len(out) < events:
        if burst is None and rng.random() < 0.04:  # a run over the hard rules' limits
            kinds = rng.choice([types, ["like", "rating", "save"], ["click", "view"]])
            burst = (rng.choice(list(clocks)), rng.randint(4, 30), kinds)
        if burst is not None:
            user, left, kinds = burst
            burst = (user, left - 1, kinds) if left > 1 else None
            if rng.random() < 0.3:  # a batch's untimed events: one instant
                pass
            else:
                clocks[user] += rng.uniform(0.0, 0.12) - (0.5 if rng.random() < 0.05 else 0.0)
            kind = rng.choice(kinds)
        else:
            user = rng.choice(list(clocks))
            mode = rng.random()
            if mode < 0.05:
                gap = 0.0  # the previous event's instant (stamped with one request)
            elif mode < 0.15:
                gap = rng.uniform(0.0, 0.05)  # quick steps
            elif mode < 0.2:
                gap = -rng.uniform(0.0, 5.0)  # a late timestamp
            else:
                gap = rng.expovariate(1 / 40.0)
            clocks[user] += gap
            kind = rng.choice(types + ["impression", "click", "view"] * 3)
        value: float | None = None
        if kind == "rating":
            value = float(rng.randint(1, 5)) if rng.random() < 0.95 else None
        elif kind == "dwell":
            value = rng.uniform(0, 10) if rng.random() < 0.9 else None
        elif kind in ("view", "click", "purchase") and rng.random() < 0.2:
            value = rng.uniform(0, 100)
        text = rng.choice(TEXTS) if kind == "review" and rng.random() < 0.8 else None
        out.append(Event(user, kind, f"i{rng.randrange(items)}", value, clocks[user], text))
    return out


def reference(events: list[Event], config: SpamConfig) -> tuple[dict[str, UserActivity], ItemStats]:
    items, texts = ItemStats(), TextRegistry()
    users: dict[str, UserActivity] = {}
    for e in events:
        activity = users.setdefault(e.user, UserActivity(config))
        record_event(activity, items, texts, e.type, e.item, e.value, e.t, e.text, e.user)
    return users, items


def columns(
    events: list[Event], config: SpamConfig, seed: int
) -> tuple[ActivityTable, dict[str, int], ItemStats]:
    rng = random.Random(seed)
    # a floor of 16: the log and the dicts are compacted as they go
    table, items, texts = ActivityTable(config, 2, floor=16), ItemStats(), TextRegistry()
    slots: dict[str, int] = {}
    at = 0
    while at < len(events):
        batch = events[at : at + rng.choice([1, 2, 7, 50, 300])]
        at += len(batch)
        new = [u for u in dict.fromkeys(e.user for e in batch) if u not in slots]
        for u in new:
            slots[u] = len(slots)
        table.open(np.array([slots[u] for u in new], np.int64))
        table.fold(
            np.array([slots[e.user] for e in batch], np.int64),
            np.array([CODES[e.type] for e in batch], np.int64),
            [e.item for e in batch],
            np.array([math.nan if e.value is None else e.value for e in batch]),
            np.array([e.t for e in batch]),
            items,
            texts,
            [e.user for e in batch],
            [e.text for e in batch],
        )
        if rng.random() < 0.2:
            table.compact()
    return table, slots, items


COUNTERS = [
    "events",
    "actions",
    "seen",
    "clicks",
    "unseen_clicks",
    "dwells",
    "short_dwells",
    "repeats",
    "reviews",
    "reviews_with_links",
    "reviews_with_repeats",
    "max_text_copies",
    "max_explicit_in_second",
    "hard_rule_at",
    "hard_rule_reason",
    "first_at",
    "last_at",
    "action_types",
]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("config", [SMALL, SpamConfig()], ids=["small", "default"])
@pytest.mark.parametrize("seed", range(12))
def test_the_columns_fold_as_the_reference_does(config: SpamConfig, seed: int) -> None:
    fold_as_the_reference(config, seed)


@pytest.mark.parametrize("steps", [0, 10**6], ids=["sorted", "one by one"])
@pytest.mark.parametrize("seed", range(6))
def test_either_path_of_the_fold_folds_as_the_reference_does(
    steps: int, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch through the sorted numpy paths, or through the one-by-one ones."""
    monkeypatch.setattr(spam_table, "_STEPS", steps)
    monkeypatch.setattr(spam_table, "_FOLD_STEPS", steps)
    fold_as_the_reference(SMALL, seed)


@pytest.mark.parametrize("steps", [0, 10**6], ids=["sorted", "one by one"])
@pytest.mark.parametrize("kinds", [["like"], ["like", "rating", "click"]])
def test_an_event_breaking_both_hard_rules_is_held_by_the_explicit_one(
    steps: int, kinds: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of explicit events breaks both rules at the same event: the explicit rule,
    checked second, is the one held (as ``record_event`` applies them in turn)."""
    monkeypatch.setattr(spam_table, "_STEPS", steps)
    monkeypatch.setattr(spam_table, "_FOLD_STEPS", steps)
    events = [
        Event("u0", kinds[k % len(kinds)], f"i{k}", 4.0, 1_000.0 + 0.05 * k, None)
        for k in range(10)
    ]
    expected, _ = reference(events, SMALL)
    table, slots, _ = columns(events, SMALL, 0)
    view = table.views(np.array([slots["u0"]], np.int64))[0]
    assert expected["u0"].hard_rule_reason == "more than 3 explicit events in 1 s"
    assert (view.hard_rule_reason, view.hard_rule_at) == (
        expected["u0"].hard_rule_reason,
        expected["u0"].hard_rule_at,
    )


def fold_as_the_reference(config: SpamConfig, seed: int) -> None:
    events = stream(seed, users=7, events=1_500, items=12 if seed % 2 else 300)
    expected, expected_items = reference(events, config)
    table, slots, items = columns(events, config, seed)
    order = sorted(expected)
    judged = np.array([slots[u] for u in order], np.int64)
    views = table.views(judged)
    readings = readings_of_columns(table.columns(judged, items.catalogue)[1])
    for user, view, reading in zip(order, views, readings, strict=True):
        ref = expected[user]
        for name in COUNTERS:
            assert getattr(view, name) == getattr(ref, name), (user, name)
        assert list(view.hours) == list(ref.hours)
        assert list(view.ratings.items()) == list(ref.ratings.items())
        assert list(view.review_keys) == list(ref.review_keys)
        assert view.recent_items() == ref.recent_items()
        assert view.recent_rate() == ref.recent_rate()
        assert view.intervals().tolist() == ref.intervals().tolist()
        wanted = activity_readings(ref, expected_items.catalogue)
        for field in wanted.__dataclass_fields__:
            assert same(getattr(reading, field), getattr(wanted, field)), (user, field)
    assert items.global_moments == expected_items.global_moments
    assert items.profile_lengths == expected_items.profile_lengths
    clicks = (items.clicks, items.unseen_clicks)
    assert clicks == (expected_items.clicks, expected_items.unseen_clicks)
    assert clicks == (
        sum(a.clicks for a in expected.values()),
        sum(a.unseen_clicks for a in expected.values()),
    )
    for item in {e.item for e in events}:
        assert items.moments(item) == expected_items.moments(item)
    now = max(e.t for e in events)
    judged = judge_many(views, items, config, now, readings=readings)
    wanted_verdicts = judge_many([expected[u] for u in order], expected_items, config, now)
    for got, want in zip(judged, wanted_verdicts, strict=True):
        assert (got.status, got.hard_rule) == (want.status, want.hard_rule)
        assert got.score == pytest.approx(want.score, abs=1e-9)


def test_a_closed_slot_starts_again_empty() -> None:
    table, items = ActivityTable(SMALL), ItemStats()
    slot = np.array([0], np.int64)
    for _round in range(2):
        table.open(slot)
        for k in range(20):
            table.fold(
                slot,
                np.array([CODES["click"]], np.int64),
                ["i1"],
                np.array([math.nan]),
                np.array([100.0 + k * 0.01]),
                items,
            )
        view = table.views(slot)[0]
        # the same 20 clicks each time: nothing of the first user's evidence carried over
        assert (view.events, view.repeats, view.unseen_clicks) == (20, 19, 20)
        assert view.hard_rule_reason == "more than 5 events in 1 s"
        table.close(slot)
    table.compact()
    assert table.views(slot)[0].events == 0


def _rank_from_end(keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each row's position from the end among the rows of its key (0: the latest)."""
    order = np.lexsort((rows, keys))
    k = keys[order]
    ends = np.r_[np.flatnonzero(k[1:] != k[:-1]), len(k) - 1]
    end_of = np.repeat(ends, np.diff(np.r_[-1, ends]))
    out = np.empty(len(keys), np.int64)
    out[order] = end_of - np.arange(len(k))
    return out


def reachable_by_ranks(table: ActivityTable) -> np.ndarray:
    """The rows compaction keeps, as it chose them before walking from the heads: ranked
    from the end of each key (user, (user, type), user's explicit rows) by sorting the
    whole log, the forgotten users' rows left out."""
    n, config = table._rows, table.config
    rows = np.arange(n)
    slot = table.log_slot[:n].astype(np.int64)
    code = table.log_code[:n].astype(np.int64)
    alive = table.uid[slot] == table.log_uid[:n]
    recent = config.recent_actions
    keep = _rank_from_end(slot, rows) < max(recent, int(config.max_actions_per_second))
    keep |= _rank_from_end(slot * len(CODES) + code, rows) < recent
    explicit = np.flatnonzero(np.isin(code, [CODES[t] for t in EXPLICIT_TYPES]))
    keep[explicit] |= _rank_from_end(slot[explicit], explicit) < int(config.max_explicit_per_second)
    return keep & alive


@pytest.mark.parametrize("config", [SMALL, SpamConfig()], ids=["small", "default"])
@pytest.mark.parametrize("seed", range(8))
def test_compaction_keeps_what_ranking_the_whole_log_keeps(config: SpamConfig, seed: int) -> None:
    """The rows reachable from the heads are the rows the sort-based ranking kept, through
    compactions, users forgotten and their slots reopened."""
    rng = random.Random(seed)
    events = stream(seed, users=9, events=2_500, items=20)
    table, items = ActivityTable(config, 2, floor=16), ItemStats()
    slots: dict[str, int] = {}
    at = 0
    while at < len(events):
        batch = events[at : at + rng.choice([1, 3, 40, 200])]
        at += len(batch)
        new = [u for u in dict.fromkeys(e.user for e in batch) if u not in slots]
        for u in new:
            slots[u] = len(slots)
        table.open(np.array([slots[u] for u in new], np.int64))
        batch_slots = np.array([slots[e.user] for e in batch], np.int64)
        grouped = table.fold(
            batch_slots,
            np.array([CODES[e.type] for e in batch], np.int64),
            [e.item for e in batch],
            np.array([math.nan if e.value is None else e.value for e in batch]),
            np.array([e.t for e in batch]),
            items,
        )
        unique = np.unique(batch_slots, return_index=True, return_counts=True)
        assert [g.tolist() for g in grouped] == [u.tolist() for u in unique]
        if rng.random() < 0.15:  # a user forgotten; their slot reopened for a fresh start
            slot = np.array([rng.choice(list(slots.values()))], np.int64)
            table.close(slot)
            table.open(slot)
        assert table.reachable().tolist() == reachable_by_ranks(table).tolist()
        if rng.random() < 0.3:
            table.compact()


@pytest.mark.parametrize("seed", range(20))
def test_linking_row_by_row_is_linking_sorted(seed: int) -> None:
    """The small rounds' row-by-row links are the sorted path's, heads included."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 3 * _STEPS))
    keys = rng.integers(0, 6, n)
    rows = np.arange(100, 100 + n)
    heads = rng.integers(-1, 50, 6)
    heads_sorted = heads.copy()
    assert (
        _link_steps(keys, rows, heads).tolist() == _link_sorted(keys, rows, heads_sorted).tolist()
    )
    assert heads.tolist() == heads_sorted.tolist()
