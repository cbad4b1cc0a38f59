"""The canary monitor's running counts against the full re-read they replace.

The oracle is the monitor's former counting (every impression of the window and its
feedback, read again on each pass), kept here as it was. Random impressions and clicks
arrive over many passes, in the order storage makes them visible, while the slots move
(deploy, promote, rollback); after each pass the service's counts, item statistics and
the verdicts taken from them equal the oracle's over everything logged so far."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore
from recloop.config import LearningSettings
from recloop.core.deployment import Slots, judge_canary
from recloop.core.events import Event
from recloop.core.features import FEATURE_NAMES
from recloop.core.slates import Slate
from recloop.learning.learner import Artifact, LightGbmLearner
from recloop.learning.tally import Tally
from recloop.ports import Impression, ImpressionHead, ModelRecord
from recloop.services import learning as learning_module
from recloop.services.learning import DAY, LearningService

WINDOW = 600.0


def old_count(
    impressions: Sequence[Impression],
    feedback: Mapping[str, Sequence[Any]],
    slots: Slots,
    window: float,
) -> tuple[dict[tuple[str, str], tuple[int, int]], dict[str, tuple[int, int]]]:
    """The former ``LearningService._count``."""
    starts = {
        "green": slots.deployed_at or 0.0,
        "blue": max(t for t in (slots.deployed_at, slots.promoted_at, 0.0) if t is not None)
        if slots.green_version is not None or slots.promoted_at is not None
        else 0.0,
    }
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    items: dict[str, tuple[int, int]] = {}
    for imp in impressions:
        clicked = {
            e.item_id
            for e in feedback.get(imp.impression_id, ())
            if e.type == "click" and e.timestamp <= imp.created_at + window
        }
        for slot in imp.slate:
            shown, clicks = items.get(slot["item_id"], (0, 0))
            items[slot["item_id"]] = (shown + 1, clicks + (slot["item_id"] in clicked))
        if imp.model_slot is None:
            continue
        if imp.created_at < starts.get(imp.model_slot, 0.0):
            continue
        key = (imp.model_slot, imp.model_version or "")
        n, k = counts.get(key, (0, 0))
        counts[key] = (n + 1, k + int(bool(clicked)))
    return counts, items


def old_since(slots: Slots, now: float, item_stats_days: float) -> float:
    """The former monitor's window start."""
    since = now - item_stats_days * DAY
    starts = [t for t in (slots.deployed_at, slots.promoted_at) if t is not None]
    if starts and (slots.green_version or slots.promoted_at):
        since = min(since, max(starts))
    return since


def shown(items: Sequence[str]) -> Slate:
    n = len(items)
    return Slate(tuple(items), (1.0,) * n, (1.0,) * n, (False,) * n, ((),) * n)


async def with_models(store: InMemoryStateStore) -> None:
    """Models m1 and m2 in the registry (the slots name them; the monitor loads them)."""
    X = np.random.default_rng(0).normal(size=(50, len(FEATURE_NAMES)))
    y = (X[:, 0] > 0).astype(float)
    artifact = Artifact.of(LightGbmLearner().fit(X, y, FEATURE_NAMES))
    for version in ("m1", "m2"):
        record = ModelRecord(
            version, 1.0, "candidate", "test", artifact.kind, artifact.sha256, 0.0, 1.0,
            50, int(y.sum()), {}, list(artifact.feature_names),
        )  # fmt: skip
        await store.put_model(record, artifact.data)


class Clock:
    def __init__(self) -> None:
        self.now = 10 * DAY

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("seed", range(6))
async def test_running_counts_equal_a_full_reread_on_every_pass(seed: int) -> None:
    rng = random.Random(seed)
    store, log = InMemoryStateStore(), InMemoryEventLog()
    clock = Clock()
    item_stats_days = rng.choice([0.02, 0.05])  # ~30 and ~70 minutes: impressions expire
    config = LearningSettings(
        attribution_window_minutes=WINDOW / 60.0,
        item_stats_days=item_stats_days,
        min_canary_impressions=10**9,  # the monitor never acts: the slots are moved below
    )
    await with_models(store)
    learning = LearningService(store, log, config, clock=clock)
    await learning.start(background=False)
    slot_states = [
        Slots(),
        Slots(blue_version="m1"),
        Slots(blue_version="m1", green_version="m2", canary_fraction=0.5, deployed_at=None),
    ]
    logged: list[Impression] = []
    pending: list[Impression] = []  # created, not yet visible in storage
    events = 0
    for step in range(40):
        clock.now += rng.uniform(5.0, 200.0)
        for _ in range(rng.randrange(0, 30)):
            slot = rng.choice([None, "blue", "green"])
            version = None if slot is None else rng.choice(["m1", "m2", None])
            items = rng.sample([f"i{n}" for n in range(25)], rng.randrange(0, 5))
            pending.append(
                Impression(
                    f"imp{len(logged) + len(pending)}",
                    "u",
                    "new",
                    clock.now - rng.uniform(0.0, 30.0),  # committed a little after creation
                    0.1,
                    shown(items),
                    model_slot=slot,
                    model_version=version,
                )
            )
        # Storage shows an impression within a bounded time of its creation (it is
        # committed before rank answers): _LAG_SECONDS bounds it, 50 s here.
        visible = [i for i in pending if rng.random() < 0.7 or i.created_at < clock.now - 50]
        pending = [i for i in pending if i not in visible]
        await store.add_impressions(visible)
        logged.extend(visible)
        clicks = []
        for imp in rng.sample(logged, min(len(logged), rng.randrange(0, 20))):
            names = [*imp.shown.item_ids, "elsewhere"]
            clicks.append(
                Event(
                    f"c{events}",
                    "u",
                    rng.choice(names),
                    rng.choice(["click", "click", "view"]),
                    imp.created_at + rng.uniform(0.0, 2 * WINDOW),
                    attribution={"impression_id": imp.impression_id},
                )
            )
            events += 1
        await log.append(clicks)
        if step % 9 == 4:  # the slots move: deploy, promote, roll back, as another process
            state = rng.choice(slot_states)
            if state.green_version is not None:
                state = Slots(
                    blue_version="m1", green_version="m2", canary_fraction=0.5,
                    deployed_at=clock.now - rng.uniform(0, 500),
                )  # fmt: skip
            elif rng.random() < 0.5:
                state = Slots(
                    blue_version="m2", previous_version="m1", promoted_at=clock.now,
                    deployed_at=clock.now - 900,
                )  # fmt: skip
            await store.put_deployment(state.to_dict(), None)
        assert await learning.monitor() is None
        slots = learning._slots
        since = old_since(slots, clock.now, item_stats_days)
        window = [i for i in logged if i.created_at >= since]
        feedback = await log.read_feedback_of([i.impression_id for i in window])
        counts, items = old_count(window, feedback, slots, WINDOW)
        tally = learning._tally
        assert {k: tuple(v) for k, v in tally.counts.items() if v[0]} == counts
        assert {k: tuple(v) for k, v in tally.item_stats.items()} == items
        for blue in (slots.blue_version or "", "m1", "m2"):
            for green in ("m1", "m2", ""):
                old_verdict = judge_canary(
                    counts.get(("blue", blue), (0, 0)), counts.get(("green", green), (0, 0)), 5
                )
                new_verdict = judge_canary(
                    tally.count(("blue", blue)), tally.count(("green", green)), 5
                )
                assert new_verdict == old_verdict
    assert logged and any(v[1] for v in learning._tally.counts.values())


async def test_a_restarted_monitor_rebuilds_the_same_counts_from_storage() -> None:
    rng = random.Random(1)
    store, log = InMemoryStateStore(), InMemoryEventLog()
    clock = Clock()
    config = LearningSettings(attribution_window_minutes=WINDOW / 60.0)
    first = LearningService(store, log, config, clock=clock)
    await first.start(background=False)
    for step in range(10):
        clock.now += 60.0
        made = [
            Impression(
                f"imp{step}-{n}",
                "u",
                "new",
                clock.now,
                0.1,
                shown(["a", "b"]),
                model_slot="blue",
                model_version="m1",
            )
            for n in range(30)  # 300 in all: the restarted monitor reads them in slices
        ]
        await store.add_impressions(made)
        await log.append(
            [
                Event(
                    f"c{step}-{n}",
                    "u",
                    rng.choice("ab"),
                    "click",
                    clock.now + 1.0,
                    attribution={"impression_id": i.impression_id},
                )
                for n, i in enumerate(made)
                if rng.random() < 0.3
            ]
        )
        await first.monitor()
    second = LearningService(store, log, config, clock=clock)
    await second.start(background=False)
    await second.monitor()
    assert second._tally.counts == first._tally.counts
    assert second._tally.item_stats == first._tally.item_stats
    assert first._tally.count(("blue", "m1"))[0] == 300
    assert learning_module._ADD_CHUNK < 300


def test_a_click_counts_once_per_impression_and_item() -> None:
    t = Tally(window=10.0)
    t.restart({})
    t.add(
        [ImpressionHead.of(Impression("i1", "u", "new", 0.0, 0.1, shown(["a"]), model_slot="blue"))]
    )
    assert t.click("i1", "a", 5.0) and t.click("i1", "a", 6.0) and t.click("i1", "x", 7.0)
    assert t.count(("blue", "")) == (1, 1) and t.item_stats == {"a": [1, 1]}
    assert not t.click("nope", "a", 1.0)
    t.expire(math.inf)
    assert t.counts == {} and t.item_stats == {} and len(t) == 0


@pytest.mark.parametrize("seed", range(5))
def test_excluded_users_count_nowhere_and_count_again_once_included(seed: int) -> None:
    """Impressions and clicks (some by other users than the impression's) arrive while the
    excluded set changes and users are erased at random; after each step the counts equal
    the oracle's over the impressions of users not excluded now and the clicks of users
    neither excluded nor erased."""
    rng = random.Random(seed)
    users = [f"u{k}" for k in range(6)]
    items = [f"i{k}" for k in range(8)]
    tally = Tally(WINDOW)
    tally.restart({"blue": 0.0, "green": 0.0})
    logged: list[Impression] = []
    feedback: dict[str, list[Event]] = {}
    for step in range(60):
        now = 1_000.0 + step
        if rng.random() < 0.6:
            imp = Impression(
                f"imp{step}",
                rng.choice(users),
                "new",
                now,
                0.1,
                shown(rng.sample(items, 3)),
                model_slot=rng.choice(["blue", "green", None]),
                model_version="m1",
            )
            logged.append(imp)
            tally.add([ImpressionHead.of(imp)])
        if logged and rng.random() < 0.5:
            imp = rng.choice(logged)
            item = rng.choice([*imp.shown.item_ids, "elsewhere"])
            clicker = rng.choice([imp.user_id, *users])
            click = Event(f"c{step}", clicker, item, "click", now)
            feedback.setdefault(imp.impression_id, []).append(click)
            tally.click(imp.impression_id, item, now, clicker)
        if rng.random() < 0.2:
            tally.exclude(frozenset(u for u in users if rng.random() < 0.3))
        if rng.random() < 0.05:  # an erasure: the user's impressions and clicks go
            erased = rng.choice(users)
            tally.forget(erased)
            logged = [i for i in logged if i.user_id != erased]
            feedback = {k: [e for e in v if e.user_id != erased] for k, v in feedback.items()}
        kept = [i for i in logged if i.user_id not in tally.excluded]
        counted = {
            k: [e for e in v if e.user_id not in tally.excluded] for k, v in feedback.items()
        }
        counts, by_item = old_count(kept, counted, Slots(), WINDOW)
        assert {k: tuple(v) for k, v in tally.counts.items()} == counts
        assert {k: tuple(v) for k, v in tally.item_stats.items()} == by_item


def test_a_forgotten_user_leaves_every_count_for_good() -> None:
    """An erasure: the user's impressions leave the counts, excluded or not, and do not
    come back when the exclusion ends; expiring past them is safe."""

    def shown(impression_id: str, user_id: str, at: float) -> ImpressionHead:
        return ImpressionHead(impression_id, user_id, at, ("a", "b"), "m", "blue")

    def counts(t: Tally) -> tuple[Any, ...]:
        return (t.count(("blue", "m")), {k: tuple(v) for k, v in t.item_stats.items()})

    clean = Tally(WINDOW)
    clean.add([shown("g", "genuine", 10.0)])
    clean.click("g", "a", 20.0)
    for flagged in (False, True):
        t = Tally(WINDOW)
        t.add([shown("g", "genuine", 10.0), shown("x1", "x", 11.0), shown("x2", "x", 12.0)])
        t.click("g", "a", 20.0)
        t.click("x1", "b", 21.0)
        if flagged:
            t.exclude(frozenset({"x"}))
        assert t.forget("x") == 2
        assert counts(t) == counts(clean)
        t.exclude(frozenset())
        assert counts(t) == counts(clean)
        assert t.users() == {"genuine"}
        t.expire(100.0)
        assert counts(t) == ((0, 0), {})
