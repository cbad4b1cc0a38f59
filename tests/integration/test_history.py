"""The history sampler over a seeded run: what it writes is what the services hold (the
optimizer's posteriors, each running experiment's anytime-valid interval and power, the
canary's judged interval), it purges past retention, and it runs in the background."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from recloop.adapters.memory.history import InMemoryHistoryStore
from recloop.config import Settings
from recloop.core.stats import sample_size
from recloop.services.history import HistoryService
from tests.conftest import Running, eventually, start_app
from tests.console_seed import MODELS, seed_api, seed_models


@pytest.fixture(params=["memory"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def seeded(settings_factory: Callable[..., Settings]) -> AsyncIterator[Running]:
    settings = settings_factory(console={"history_interval_seconds": 0})
    running, close = await start_app(settings)
    await seed_api(running.client, list(settings.bandit.algorithms))
    await seed_models(running.container.store)
    await running.idle(flush=True)
    yield running
    await close()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sampler(running: Running, clock: Clock) -> tuple[HistoryService, InMemoryHistoryStore]:
    c = running.container
    store = InMemoryHistoryStore()
    s = c.settings
    return HistoryService(
        store, s.console, s.learning, c.optimizer, c.experiments, c.learning, clock
    ), store


async def test_a_sample_holds_what_the_services_hold(seeded: Running) -> None:
    c = seeded.container
    assert c.history is not None and c.history.config.history_interval_seconds == 0  # no background
    clock = Clock(1_000_000.0)
    history, store = sampler(seeded, clock)
    written = await history.sample()
    assert history.last_sample == (clock.now, written)

    algorithms = await store.read("algorithm", None, 0.0, 10_000)
    rows = await c.optimizer.overview()
    assert len(algorithms) == len(rows) == 4 * len(c.optimizer.algorithms)
    by_key = {(r["segment"], r["algorithm"]): r for r in rows}
    for p in algorithms:
        row = by_key[(p.scope, p.subject)]
        assert p.at == clock.now
        assert p.values["mean"] == row["posterior_mean"]
        assert [p.values["low"], p.values["high"]] == row["posterior_interval"]
        assert p.values["weight"] == row["weight"] and p.values["impressions"] == 2000

    experiments = await store.read("experiment", None, 0.0, 10_000)
    assert {p.scope for p in experiments} == {"exp-blend"}  # the draft is not sampled
    results = c.experiments.results("exp-blend", sequential=True)
    fixed = c.experiments.results("exp-blend", sequential=False)
    mde, goal = c.settings.console.power_mde, c.settings.console.power
    for metric, metric_fixed in zip(results["metrics"], fixed["metrics"], strict=True):
        [comparison] = metric["comparisons"]
        [point] = [p for p in experiments if p.subject == f"{metric['name']}:treatment"]
        assert point.values["effect"] == comparison["relative_effect"]
        assert [point.values["low"], point.values["high"]] == comparison["ci_relative"]
        # anytime-valid: wider than the fixed-horizon interval
        low, high = metric_fixed["comparisons"][0]["ci_relative"]
        assert point.values["low"] < low and point.values["high"] > high
        base, arm = metric["variants"]
        assert point.values["users"] == base["users"] + arm["users"]
        n = min(base["users"], arm["users"])
        if metric["type"] == "binomial":
            effect = proportion_effectsize(base["mean"] * (1 + mde), base["mean"])
            expected = NormalIndPower().power(abs(effect), nobs1=n, alpha=0.05, ratio=1.0)
            assert point.values["power"] == pytest.approx(expected, rel=1e-9)
            needed = sample_size(base["mean"], mde, 0.05, goal)
            assert point.values["remaining"] == needed - n
        else:
            assert 0 < point.values["power"] < 1 and point.values["remaining"] > 0

    assert await store.read("canary", None, 0.0, 10) == []  # nothing deployed
    assert written == len(algorithms) + len(experiments)

    assert c.learning is not None
    await c.learning.deploy(MODELS[0], "try it")
    clock.now += 300
    await history.sample()
    [canary] = await store.read("canary", None, 0.0, 10)
    assert (canary.scope, canary.subject, canary.at) == (MODELS[0], "canary", clock.now)
    live = (await c.learning.deployment())["live"]
    assert canary.values["served"] == live["green"]["impressions"]
    assert canary.values["baseline"] == live["blue"]["impressions"]
    assert canary.values["margin"] == c.settings.learning.rollback_margin
    # too few impressions to compare: no interval yet, but the point says so over time
    assert canary.values["effect"] is None


async def test_points_past_retention_are_purged(seeded: Running) -> None:
    clock = Clock(1_000_000.0)
    history, store = sampler(seeded, clock)
    retention = history.config.history_retention_seconds
    await history.sample()
    clock.now += retention / 2
    await history.sample()
    assert len({p.at for p in await store.read("algorithm", None, 0.0, 10_000)}) == 2
    clock.now += retention / 2 + 1
    await history.sample()
    kept = sorted({p.at for p in await store.read("algorithm", None, 0.0, 10_000)})
    assert kept == [clock.now - retention / 2 - 1, clock.now]
    # the pages read the last window only
    window = history.config.history_window_seconds
    assert window < retention / 2
    assert {p[-1].at for p in (await history.series("algorithm")).values()} == {clock.now}
    assert all(len(p) == 1 for p in (await history.series("algorithm")).values())


async def test_the_sampler_runs_in_the_background(seeded: Running) -> None:
    c = seeded.container
    store = InMemoryHistoryStore()
    config = c.settings.console.model_copy(update={"history_interval_seconds": 0.05})
    history = HistoryService(
        store, config, c.settings.learning, c.optimizer, c.experiments, c.learning
    )
    await history.start()
    try:

        async def three() -> bool:
            found = await store.read("experiment", "exp-blend", 0.0, 10_000)
            return len({p.at for p in found}) >= 3

        await eventually(three)
        assert history.sampling and history.last_sample is not None
    finally:
        await history.stop()
    assert history.last_error is None and not history.sampling
