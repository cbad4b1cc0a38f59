"""What a flagged user taught is taken back, and given back when they are unblocked (#17).

An attack of shilling profiles pushes a target item: they rank it, click it in an
experiment's treatment and rate it. It moves the item's shown and click counts
(its popularity and CTR features), the experiment's metric, the optimizer's counts
of the algorithm credited and the next model's training data. Once the attackers
are flagged, none of them keeps a trace; unblocked, they count again. On every
backend, after a restart too, and with the experiments service of a distributed
API instance (refreshed from the store) as well as the writer's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from recloop.config import ExperimentSettings, Settings
from recloop.container import Container
from recloop.learning.job import TrainingPlan, _join_here, run_plan
from recloop.learning.training import Outcome, TrainingData
from recloop.learning.validation import PromotionGate
from recloop.ports import ReliabilityRecord
from recloop.services.experiments import ExperimentService
from tests.conftest import Running, eventually, start_app
from tests.integration.test_experiments_api import EXPERIMENT
from tests.integration.test_privacy import close_to

ITEMS = [f"i{k}" for k in range(6)]
TARGET = "t"
GENUINE = [f"g{n}" for n in range(12)]


async def prepare(app: Running) -> None:
    for k, item in enumerate([*ITEMS, TARGET]):
        vector = np.zeros(8)
        vector[k] = 1.0
        r = await app.client.put(f"/items/{item}", json={"vector": vector.tolist()})
        assert r.status_code in (200, 201), r.text
    assert (await app.client.post("/experiments", json=EXPERIMENT)).status_code == 201
    assert (await app.client.post("/experiments/exp-ctr/start")).status_code == 200


async def visit(app: Running, user: str, candidates: list[str], clicks: list[str]) -> None:
    """Exposure, a ranking of ``candidates``, then a click on each of ``clicks`` naming it."""
    r = await app.client.get(f"/experiments/exp-ctr/assignment/{user}")
    assert r.status_code == 200, r.text
    body = [{"item_id": i, "algorithm": "popularity", "score": 1.0} for i in candidates]
    r = await app.client.post(
        f"/users/{user}/rank", json={"candidates": body, "k": len(candidates)}
    )
    assert r.status_code == 200, r.text
    impression_id = r.json()["impression_id"]
    events: list[dict[str, Any]] = [
        {
            "user_id": user,
            "item_id": item,
            "type": "click",
            "attribution": {"impression_id": impression_id, "algorithm": "popularity"},
        }
        for item in clicks
    ]
    events += [{"user_id": user, "item_id": i, "type": "impression"} for i in candidates]
    events.append({"user_id": user, "item_id": clicks[0], "type": "rating", "value": 5.0})
    r = await app.client.post("/feedback", json={"events": events})
    assert r.json()["accepted"] == len(events), r.text
    await app.idle(flush=True)


def attackers(container: Container, n: int) -> list[str]:
    """``n`` user ids the experiment puts in its treatment."""
    exp = container.experiments.get("exp-ctr")
    found = (f"shill-{k}" for k in range(200))
    return [u for u in found if container.experiments.variant_for(exp, u) == "treatment"][:n]


async def training_data(container: Container) -> TrainingData:
    """The next model's examples: what a training job reads and joins (the training
    process runs this same function on its own connection)."""
    seen: list[TrainingData] = []

    async def record(data: TrainingData, _plan: TrainingPlan) -> Outcome:
        seen.append(data)
        return Outcome(None, False, "recorded", {})

    plan = TrainingPlan(
        since=0.0,
        until=time.time() + 60,
        attribution_seconds=600.0,
        scheduled=False,
        last_end=-math.inf,
        min_new_examples=0,
        champion=None,
        gate=PromotionGate(0.0, 1.0),
        holdout_fraction=0.2,
        learner=None,
        alpha=0.05,
    )
    await run_plan(plan, container.store, container.event_log, lambda _: None, _join_here, record)
    return seen[0]


async def snapshot(app: Running) -> dict[str, Any]:
    container = app.container
    learning, retraction = container.learning, container.retraction
    assert learning is not None and retraction is not None

    async def followed() -> bool:  # the retraction follows the guard in the background
        return retraction.left_out() == container.guard.flagged_users()

    await eventually(followed)
    await learning.monitor()
    data = await training_data(app.container)
    results = (await app.client.get("/experiments/exp-ctr/results")).json()
    return {
        "target": list(learning._tally.item_stats.get(TARGET, [0, 0])),
        "items": {k: list(v) for k, v in learning._tally.item_stats.items()},
        # The statistics; whether events wait for a flush (provisional) is not one.
        "metrics": [{k: v for k, v in m.items() if k != "provisional"} for m in results["metrics"]],
        "observed": results["srm"]["observed"],
        "algorithms": {
            (row["segment"], row["algorithm"]): (row["impressions"], row["clicks"])
            for row in await container.optimizer.overview()
        },
        "examples": data.examples,
        "labels": list(data.labels),
        "timestamps": list(data.timestamps),
    }


def same(a: dict[str, Any], b: dict[str, Any]) -> None:
    close_to(a["metrics"], b["metrics"])
    for key in ("target", "items", "algorithms", "observed", "examples", "labels", "timestamps"):
        assert a[key] == b[key], key


def paced(settings_factory: Callable[..., Settings]) -> Settings:
    """The detector on, no rate limits, the retraction reading the log at once."""
    return settings_factory(
        spam={"enabled": True, "retraction_every_seconds": 0.05},
        rate_limits={"enabled": False},
        learning={"attribution_window_minutes": 10, "monitor_seconds": 3600},
    )


async def flag(app: Running, blocked: list[str], suspect: list[str]) -> None:
    """Block ``blocked`` by hand and store the detector's verdict on ``suspect`` (as a
    worker's verdict reaches an API instance: through the store)."""
    for user in blocked:
        assert (await app.client.post(f"/users/{user}/block")).status_code == 200
    await app.container.store.put_reliability(
        [ReliabilityRecord(u, 20.0, "suspect", time.time(), False, "test") for u in suspect]
    )
    await app.container.guard.start()


async def restarted(
    settings: Settings, before: dict[str, Any], unblocked: list[str], after: dict[str, Any]
) -> None:
    """A restart reads back ``before`` from the store; unblocking ``unblocked`` (or
    clearing them) then gives ``after``."""
    app, close = await start_app(settings)
    try:
        same(await snapshot(app), before)
        for user in unblocked:
            assert (await app.client.post(f"/users/{user}/unblock")).status_code == 200
        same(await snapshot(app), after)
    finally:
        await close()


async def genuine_visits(app: Running, users: list[str]) -> None:
    """The items and the experiment, then a visit of each genuine user."""
    await prepare(app)
    for n, user in enumerate(users):
        await visit(app, user, [*ITEMS[:4], TARGET], [ITEMS[n % 4]])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_flagged_attack_leaves_no_trace_and_unblocking_restores_it(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(
        spam={"enabled": True},
        rate_limits={"enabled": False},
        learning={"attribution_window_minutes": 10, "monitor_seconds": 3600},
    )
    app, close = await start_app(settings)
    try:
        await prepare(app)
        for n, user in enumerate(GENUINE):
            await visit(app, user, [*ITEMS[:4], TARGET], [ITEMS[n % 4]])
        clean = await snapshot(app)

        # A distributed API instance's experiments service: it reads, never writes.
        api = ExperimentService(
            app.container.store,
            app.container.event_log,
            ExperimentSettings(),
            excluded=app.container.guard.flagged_users,
        )
        await api.start()

        shills = attackers(app.container, 5)
        assert len(shills) == 5
        for user in shills:
            await visit(app, user, [TARGET, ITEMS[0]], [TARGET] * 3)
        attacked = await snapshot(app)
        # The attack moved all three.
        assert attacked["target"][0] > clean["target"][0]
        assert attacked["target"][1] > clean["target"][1]
        treatment = next(m for m in attacked["metrics"] if m["name"] == "clicks")["variants"][1]
        before = next(m for m in clean["metrics"] if m["name"] == "clicks")["variants"][1]
        assert treatment["users"] == before["users"] + 5
        assert treatment["mean"] != before["mean"]
        assert attacked["examples"] == clean["examples"] + 2 * 5
        assert sum(attacked["labels"]) == sum(clean["labels"]) + 5
        assert attacked["algorithms"] != clean["algorithms"]

        # Flagged: two blocked by hand, three suspect by the detector's stored verdict
        # (as a worker's verdict reaches an API instance: through the store).
        for user in shills[:2]:
            assert (await app.client.post(f"/users/{user}/block")).status_code == 200
        now = time.time()
        await app.container.store.put_reliability(
            [ReliabilityRecord(u, 20.0, "suspect", now, False, "test") for u in shills[2:]]
        )
        await app.container.guard.start()
        assert app.container.guard.flagged_users() == frozenset(shills)
        same(await snapshot(app), clean)
        # Their own preference vectors stay, for inspection.
        prefs = await app.client.get(f"/users/{shills[0]}/preferences")
        assert prefs.status_code == 200 and prefs.json()["events_applied"] > 0

        await api.refresh(statistics=True)
        close_to(api.results("exp-ctr")["metrics"], clean["metrics"])
        assert api.results("exp-ctr")["srm"]["observed"] == clean["observed"]
    finally:
        await close()

    app, close = await start_app(settings)  # the flags, and what they exclude, stay
    try:
        assert app.container.guard.flagged_users() == frozenset(shills)
        same(await snapshot(app), clean)

        # Unblocked (or cleared), they count again: everything they taught comes back.
        for user in shills:
            assert (await app.client.post(f"/users/{user}/unblock")).status_code == 200
        assert app.container.guard.flagged_users() == frozenset()
        same(await snapshot(app), attacked)
    finally:
        await close()


@pytest.mark.parametrize("backend", ["memory"])
async def test_unblocking_in_the_same_process_restores_the_attack(
    settings_factory: Callable[..., Settings],
) -> None:
    """The in-memory backend (nothing survives a restart): block, then unblock, in one run."""
    settings = settings_factory(
        spam={"enabled": True},
        rate_limits={"enabled": False},
        learning={"attribution_window_minutes": 10, "monitor_seconds": 3600},
    )
    app, close = await start_app(settings)
    try:
        await prepare(app)
        for n, user in enumerate(GENUINE[:6]):
            await visit(app, user, [*ITEMS[:4], TARGET], [ITEMS[n % 4]])
        clean = await snapshot(app)
        shills = attackers(app.container, 3)
        for user in shills:
            await visit(app, user, [TARGET, ITEMS[0]], [TARGET] * 3)
        attacked = await snapshot(app)
        assert attacked["target"] != clean["target"]
        for user in shills:
            await app.client.post(f"/users/{user}/block")
        same(await snapshot(app), clean)
        # A flagged user's events are held, not learnt from: their values stay put.
        r = await app.client.post(
            "/feedback", json={"user_id": shills[0], "item_id": TARGET, "type": "click"}
        )
        assert r.status_code == 403
        for user in shills:
            await app.client.post(f"/users/{user}/unblock")
        same(await snapshot(app), attacked)
        stats = app.container.experiments._stats["exp-ctr"]
        stored = await app.container.store.get_experiment_stats("exp-ctr")
        for variant, metric, pair in stored:  # the stored sums never lost anyone
            close_to(dataclasses.asdict(pair), dataclasses.asdict(stats[(variant, metric)]))
    finally:
        await close()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
async def test_erasure_and_flags_in_any_order_count_a_user_once(
    settings_factory: Callable[..., Settings], backend: str
) -> None:
    """Erasing a flagged user keeps out what they taught (their record goes with the rest
    of their rows, so they are no longer flagged: the take-back must become the stored
    counts', not vanish); unblocking an erased user brings nothing back (nothing of them
    is left); a user erased while trusted who comes back and is then flagged has only
    their new contribution taken back (what was learnt before the erasure stays, as for
    anyone erased). Algorithm counts, experiment statistics, item counts and training
    data alike, after a restart too."""
    settings = paced(settings_factory)
    app, close = await start_app(settings)
    try:
        await genuine_visits(app, GENUINE[:6])
        shills = attackers(app.container, 4)
        for user in shills:
            await visit(app, user, [TARGET, ITEMS[0]], [TARGET] * 3)
        attacked = await snapshot(app)

        # Flagged: one blocked by hand, one suspect by the detector's stored verdict.
        await flag(app, shills[:1], shills[1:2])
        flagged = await snapshot(app)
        assert flagged["algorithms"] != attacked["algorithms"]
        assert flagged["target"] != attacked["target"]

        # Erased while flagged: what they taught stays out.
        for user in shills[:2]:
            r = await app.client.delete(f"/users/{user}")
            assert r.status_code == 200, r.text
            assert r.json()["removed"]["events"] > 0
        assert app.container.guard.flagged_users() == frozenset()
        same(await snapshot(app), flagged)

        # Unblocked after the erasure: nothing of them is left to come back.
        assert (await app.client.post(f"/users/{shills[0]}/unblock")).status_code == 200
        same(await snapshot(app), flagged)

        # Erased while trusted: their algorithm counts stay (docs/privacy.md), the rest goes.
        assert (await app.client.delete(f"/users/{shills[2]}")).status_code == 200
        erased = await snapshot(app)
        assert erased["algorithms"] == flagged["algorithms"]
        assert erased["target"] != flagged["target"]
        # They come back, attack again, and are flagged: only the new part is taken back.
        await visit(app, shills[2], [TARGET, ITEMS[0]], [TARGET] * 3)
        returned = await snapshot(app)
        assert returned["algorithms"] != erased["algorithms"]
        assert (await app.client.post(f"/users/{shills[2]}/block")).status_code == 200
        same(await snapshot(app), erased)
    finally:
        await close()
    if backend == "memory":
        return

    await restarted(settings, erased, shills[2:3], returned)


async def rank_for(app: Running, user: str, candidates: list[str]) -> str:
    """A ranking shown to ``user``; its impression id."""
    body = [{"item_id": i, "algorithm": "popularity", "score": 1.0} for i in candidates]
    r = await app.client.post(
        f"/users/{user}/rank", json={"candidates": body, "k": len(candidates)}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["impression_id"])


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
async def test_clicks_on_other_users_impressions_are_taken_back(
    settings_factory: Callable[..., Settings], backend: str
) -> None:
    """Attackers click the target on impressions shown to genuine users (whose impressions
    are never left out): the target's click count, the algorithm credited and the next
    model's labels move, and once the attackers are flagged none of it is left; unblocked,
    it counts again; after a restart the counts are rebuilt the same from storage."""
    settings = paced(settings_factory)
    app, close = await start_app(settings)
    try:
        await genuine_visits(app, GENUINE[:6])
        shown = [await rank_for(app, user, [TARGET, *ITEMS[:3]]) for user in GENUINE[:3]]
        await app.idle(flush=True)
        clean = await snapshot(app)
        shills = attackers(app.container, 3)
        for user in shills:
            events = [
                {
                    "user_id": user,
                    "item_id": TARGET,
                    "type": "click",
                    "attribution": {"impression_id": impression_id, "algorithm": "popularity"},
                }
                for impression_id in shown
            ]
            r = await app.client.post("/feedback", json={"events": events})
            assert r.json()["accepted"] == len(events), r.text
        await app.idle(flush=True)
        attacked = await snapshot(app)
        # The clicks moved the target's CTR feature and the credited algorithm's counts.
        assert attacked["target"][0] == clean["target"][0]
        assert attacked["target"][1] == clean["target"][1] + len(shown)
        assert attacked["algorithms"] != clean["algorithms"]

        # Flagged: one blocked by hand, the others suspect by a stored verdict.
        await flag(app, shills[:1], shills[1:])
        assert app.container.guard.flagged_users() == frozenset(shills)
        same(await snapshot(app), clean)
        if backend == "memory":  # nothing survives a restart: unblocked in this run
            for user in shills:
                assert (await app.client.post(f"/users/{user}/unblock")).status_code == 200
            same(await snapshot(app), attacked)
    finally:
        await close()
    if backend == "memory":
        return

    # The tally rebuilt from storage, the same; unblocked, their clicks count again.
    await restarted(settings, clean, shills, attacked)
