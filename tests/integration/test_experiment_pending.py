"""Results count the buffered events without reading the log (issue 20): the embedded
processor hands every event it takes to the experiments, which keep the waiting ones. A
differential test against the count read from the log (``pending_in_log``, the oracle) on
random traffic, through the API."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from recloop.config import Settings
from recloop.services.experiments import pending_in_log
from tests.conftest import Running, start_app
from tests.integration.test_experiments_api import EXPERIMENT, create_and_start

TYPES = ("impression", "click", "purchase", "view", "like", "dwell")


@pytest.fixture
async def app(settings_factory: Callable[..., Settings]):  # type: ignore[no-untyped-def]
    running, close = await start_app(settings_factory())
    yield running
    await close()


async def oracle(app: Running) -> tuple[int, dict[str, bool]]:
    """The buffered events and each metric's ``provisional``, read from the log."""
    c = app.container
    exp = c.experiments.get(EXPERIMENT["experiment_id"])
    exposures = {e.user_id: e for e in await c.store.get_exposures(exp.experiment_id)}
    by_type, complete = await pending_in_log(
        c.event_log, exp, exposures, c.processor.tracker.watermark, 10**9
    )
    assert complete
    provisional = {m.name: any(by_type.get(t, 0) for t in m.events()) for m in exp.all_metrics}
    return sum(by_type.values()), provisional


async def test_buffered_events_kept_as_they_go_equal_those_read_from_the_log(
    app: Running,
) -> None:
    rng = random.Random(14)
    await create_and_start(app)
    exposed = [f"e{n}" for n in range(25)]
    before = time.time()
    for user in exposed:
        await app.client.get(f"/experiments/exp-ctr/assignment/{user}")
    strangers = [f"s{n}" for n in range(10)]
    for round_ in range(6):
        events = [
            {
                "user_id": rng.choice(exposed + strangers),
                "item_id": f"i{rng.randrange(5)}",
                "type": rng.choice(TYPES),
                # half time-stamped before the exposures: they do not count
                "timestamp": rng.choice((before - rng.uniform(1.0, 3600.0), time.time())),
            }
            for _ in range(rng.randint(20, 80))
        ]
        for e in events:
            if e["type"] == "dwell":
                e["value"] = float(rng.randint(1, 60))
        r = await app.client.post("/feedback", json={"events": events})
        assert r.json()["rejected"] == 0, r.text
        flush = round_ in (2, 5)
        await app.idle(flush=flush)
        await app.container.processor.checkpoint()  # the watermark stays where it is now
        results = (await app.client.get("/experiments/exp-ctr/results")).json()
        events_expected, provisional_expected = await oracle(app)
        assert results["buffered"] == {"events": events_expected, "complete": True, "as_of": None}
        shown = {m["name"]: m["provisional"] for m in results["metrics"]}
        assert shown == provisional_expected
        # the exposures counted as they are recorded, against a count of the stored ones
        stored = await app.container.store.get_exposures("exp-ctr")
        by_variant = {"control": 0, "treatment": 0}
        for e in stored:
            by_variant[e.variant] += 1
        assert results["srm"]["observed"] == by_variant
        if flush:
            assert events_expected == 0
        else:
            assert events_expected > 0  # the case is not empty

    # Stopped: nothing moves it any more, whatever is still waiting.
    await app.client.post(
        "/feedback",
        json={"events": [{"user_id": exposed[0], "item_id": "i", "type": "click"}]},
    )
    await app.idle()
    await app.client.post("/experiments/exp-ctr/stop")
    results = (await app.client.get("/experiments/exp-ctr/results")).json()
    assert results["buffered"] == {"events": 0, "complete": True, "as_of": None}
