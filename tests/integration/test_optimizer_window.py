"""The optimizer's sliding window and cooldown, driven by an injected clock."""

from __future__ import annotations

from recloop.adapters.memory import InMemoryStateStore
from recloop.config import BanditSettings
from recloop.services.optimizer import Optimizer, PerformanceReport

HOUR, DAY = 3600.0, 86_400.0
ALGS = ("a", "b")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def optimizer(clock: Clock) -> Optimizer:
    config = BanditSettings(
        algorithms=list(ALGS),
        default_weights={s: {"a": 0.5, "b": 0.5} for s in ("new", "inactive", "power", "regular")},
        prior_ctr=0.05,
        prior_strength=100.0,
        bucket_minutes=HOUR // 60,
        window_days=7,
        cache_seconds=0.0,
        min_impressions=1000,
        cooldown_hours=DAY / 3600,
        seed=1,
    )
    return Optimizer(InMemoryStateStore(), config, clock=clock)


def report(algorithm: str, impressions: int, clicks: int, at: float) -> PerformanceReport:
    return PerformanceReport(algorithm, "regular", impressions, clicks, 0, None, at)


async def test_evidence_leaves_the_window_and_the_prior_returns() -> None:
    clock = Clock(100 * DAY)
    opt = optimizer(clock)
    await opt.report(
        [report("a", 10_000, 2_000, clock.now), report("b", 10_000, 100, clock.now)], "r"
    )
    assert (await opt.weights("regular")).weights["a"] > 0.95
    clock.now += 7 * DAY + 2 * HOUR  # the bucket has left the 7-day window
    weights = (await opt.weights("regular")).weights
    assert abs(weights["a"] - weights["b"]) < 0.2  # back to the even prior


async def test_disabled_algorithm_returns_on_probation_after_the_cooldown() -> None:
    clock = Clock(100 * DAY)
    opt = optimizer(clock)
    await opt.report([report("b", 5_000, 2, clock.now)], "r")
    first = await opt.weights("regular")
    assert set(first.weights) == {"a"}
    clock.now += DAY - 1
    assert set((await opt.weights("regular")).weights) == {"a"}
    clock.now += 1
    back = await opt.weights("regular")
    assert set(back.weights) == {"a", "b"}  # old evidence no longer counts against it
    await opt.report([report("b", 2_000, 0, clock.now)], "r2")
    assert set((await opt.weights("regular")).weights) == {"a"}  # new evidence does


async def test_mean_weights_follow_the_posterior_means_and_count_the_evidence() -> None:
    clock = Clock(100 * DAY)
    config = BanditSettings(
        algorithms=["a", "b", "c"],
        default_weights={
            s: dict.fromkeys("abc", 1.0) for s in ("new", "inactive", "power", "regular")
        },
        prior_strength=100.0,
        weight_mode="mean",
        cache_seconds=0.0,
        seed=1,
    )
    opt = Optimizer(InMemoryStateStore(), config, clock=clock)
    before = await opt.weights("regular")
    assert before.evidence == 0.0
    assert all(abs(w - 1 / 3) < 1e-12 for w in before.weights.values())
    await opt.report(
        [
            PerformanceReport("a", "regular", 4_000, 1_200, 0, None, clock.now),
            PerformanceReport("b", "regular", 4_000, 400, 0, None, clock.now),
            PerformanceReport("c", "regular", 1_000, 100, 0, None, clock.now),
        ],
        "r",
    )
    after = await opt.weights("regular")
    posts = opt.posteriors("regular", clock.now)
    total = sum(p.mean for p in posts.values())
    for alg, p in posts.items():  # proportional to the posterior means (none at the floor)
        assert abs(after.weights[alg] - p.mean / total) < 1e-9
    assert after.weights["a"] > after.weights["b"] > 0.02
    assert after.evidence == 3_000.0  # credited impressions per algorithm, on average
