"""Deferred CUPED covariates (issue 20): a first exposure does not read the user's history;
the covariates of the users exposed meanwhile are read together later, and then the values
and each variant's sums are those of reading each user's history at exposure (the oracle),
and those of the (x, y) pairs computed from the raw events."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore
from recloop.config import ExperimentSettings
from recloop.core.events import Event
from recloop.core.experiments import Experiment, Metric, Variant
from recloop.core.ids import uuid7
from recloop.core.stats import PairStats
from recloop.services.experiments import DAY, ExperimentService

METRICS = (
    Metric("bought", "binomial", event="purchase"),
    Metric("clicks", "continuous", event="click"),
    Metric("rated", "continuous", event="rating", aggregate="sum"),
    Metric("ctr", "ratio", numerator="click", denominator="impression"),
)
TYPES = ("purchase", "click", "rating", "impression", "view")
T = 100 * DAY
"""When the users are exposed."""


class Clock:
    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> float:
        return self.now


class CountingLog(InMemoryEventLog):
    """The in-memory log, counting the per-user reads a first exposure would make."""

    def __init__(self) -> None:
        super().__init__()
        self.user_reads = 0

    async def read_user_events(self, user_id: str, since: float, until: float) -> list[Event]:
        self.user_reads += 1
        return await super().read_user_events(user_id, since, until)


def experiment(eid: str) -> Experiment:
    return Experiment(eid, eid, (Variant("c", 0.5), Variant("t", 0.5)), METRICS, seed="same-seed")


def event(rng: random.Random, user: str, at: float) -> Event:
    kind = rng.choice(TYPES)
    value = float(rng.randint(1, 5)) if kind == "rating" else None
    return Event(uuid7(), user, "i", kind, at, value=value)


def oracle_pairs(metric: Metric, events: Sequence[Event], at: float) -> tuple[float, float]:
    """(x, y) of one user from the raw events, written out independently of core."""

    def value(selected: Sequence[Event]) -> float:
        if metric.type == "binomial":
            return 1.0 if any(e.type == metric.event for e in selected) else 0.0
        if metric.type == "ratio":
            return float(sum(e.type == metric.numerator for e in selected))
        hits = [e for e in selected if e.type == metric.event]
        return float(sum(e.value or 0.0 for e in hits) if metric.aggregate == "sum" else len(hits))

    before = [e for e in events if at - 14 * DAY <= e.timestamp < at]
    after = [e for e in events if e.timestamp >= at]
    if metric.type == "ratio":
        return float(sum(e.type == metric.denominator for e in after)), value(after)
    return value(before), value(after)


async def test_deferred_covariates_equal_the_reads_at_exposure_and_the_raw_events() -> None:
    rng = random.Random(20)
    clock = Clock()
    log = CountingLog()
    users = [f"u{n}" for n in range(60)]
    history: dict[str, list[Event]] = {u: [] for u in users}
    for u in users[:45]:  # a quarter without history
        for _ in range(rng.randint(1, 12)):
            # some older than the 14-day pre-period: not counted
            history[u].append(event(rng, u, T - rng.uniform(0.01, 20.0) * DAY))
    logged = [e for u in users for e in history[u]]
    rng.shuffle(logged)
    await log.append(logged)

    now_read = ExperimentService(InMemoryStateStore(), log, ExperimentSettings(), clock)
    store = InMemoryStateStore()
    deferred = ExperimentService(
        store, log, ExperimentSettings(covariate_seconds=3600.0), clock, defer_covariates=True
    )
    for service, eid in ((now_read, "a"), (deferred, "b")):
        await service.start()
        await service.create(experiment(eid))
        await service.transition(eid, "start")
    try:
        for u in users:
            await now_read.expose("a", u)
        reads = log.user_reads
        for u in users:
            await deferred.expose("b", u)
        assert log.user_reads == reads  # the deferred first exposures read no history
        assert deferred.covariates_due("b") == len(users)
        assert (await deferred.live_results("b"))["covariates_pending"] == len(users)

        # Events after exposure move y in both, before and after the covariates are read.
        clock.now = T + 3600.0
        later = [event(rng, rng.choice(users), T + rng.uniform(0, 3000)) for _ in range(300)]

        async def apply(events: Sequence[Event]) -> None:
            """As the processor applies them: the changes commit with the state."""
            for e in events:
                for service in (now_read, deferred):
                    if service.watches(e.user_id):
                        changes = service.observe(e.user_id, e.type, e.value, e.timestamp)
                        if service is deferred:
                            await store.commit(changes)
                history[e.user_id].append(e)

        await apply(later[:150])
        assert await deferred.settle_covariates() == len(users)
        assert deferred.covariates_due("b") == 0
        await apply(later[150:])

        a, b = now_read.counted_stats("a"), deferred.counted_stats("b")
        assert a == b
        for metric in METRICS:
            for variant in ("c", "t"):
                pairs = [
                    oracle_pairs(metric, history[u], T)
                    for u in users
                    if deferred.variant_for(deferred.get("b"), u) == variant
                ]
                expected = PairStats()
                for x, y in pairs:
                    expected = expected + PairStats(1, x, x * x, y, y * y, x * y)
                got = b[(variant, metric.name)]
                assert got.n == expected.n
                for name in ("sum_x", "sum_x2", "sum_y", "sum_y2", "sum_xy"):
                    assert abs(getattr(got, name) - getattr(expected, name)) < 1e-9, name
        shown_a = {k: v for k, v in now_read.results("a").items() if k != "experiment_id"}
        shown_b = {k: v for k, v in deferred.results("b").items() if k != "experiment_id"}
        assert shown_a == shown_b
        assert any(c["cuped"] for m in shown_b["metrics"] for c in m["comparisons"])
    finally:
        for service in (now_read, deferred):
            await service.stop()

    # The stored values are the ones read: a restart reads again only the users whose
    # every covariate is 0, and finds them unchanged.
    restarted = ExperimentService(
        store, log, ExperimentSettings(covariate_seconds=3600.0), clock, defer_covariates=True
    )
    await restarted.start()
    try:
        await restarted.settle_covariates()
        assert restarted.counted_stats("b") == b
    finally:
        await restarted.stop()


async def test_an_erased_user_is_no_longer_due() -> None:
    clock = Clock()
    log = InMemoryEventLog()
    await log.append([Event(uuid7(), "gone", "i", "click", T - DAY)])
    deferred = ExperimentService(
        InMemoryStateStore(),
        log,
        ExperimentSettings(covariate_seconds=3600.0),
        clock,
        defer_covariates=True,
    )
    await deferred.start()
    await asyncio.sleep(0)  # the first pass, at once, finds no one: the next is an hour away
    try:
        await deferred.create(experiment("b"))
        await deferred.transition("b", "start")
        await deferred.expose("b", "gone")
        await deferred.expose("b", "kept")
        assert deferred.covariates_due("b") == 2
        deferred.forget("gone")
        assert deferred.covariates_due("b") == 1
        assert await deferred.settle_covariates() == 1
    finally:
        await deferred.stop()
