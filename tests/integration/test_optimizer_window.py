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


def shrinking(clock: Clock, half: float | None) -> Optimizer:
    config = BanditSettings(
        algorithms=["a", "b", "c"],
        default_weights={
            s: {"a": 1.0, "b": 1.0, "c": 2.0} for s in ("new", "inactive", "power", "regular")
        },
        prior_strength=100.0,
        weight_mode="mean",
        weight_evidence_half=half,
        cache_seconds=0.0,
        seed=1,
    )
    return Optimizer(InMemoryStateStore(), config, clock=clock)


async def test_shrunk_weights_are_the_blend_without_evidence_and_learnt_with_it() -> None:
    clock = Clock(100 * DAY)
    opt = shrinking(clock, 100.0)
    before = await opt.weights("regular")  # no evidence: the default weights' blend, exactly
    assert before.weights == {"a": 0.25, "b": 0.25, "c": 0.5}
    assert before.learnt_share == 0.0
    # a little evidence, a lucky streak for b: the weights move towards it by λ only
    await opt.report(
        [
            PerformanceReport("a", "regular", 10, 1, 0, None, clock.now),
            PerformanceReport("b", "regular", 10, 5, 0, None, clock.now),
            PerformanceReport("c", "regular", 10, 1, 0, None, clock.now),
        ],
        "little",
    )
    little = await opt.weights("regular")
    assert little.evidence == 10.0
    assert little.learnt_share == 1.0 - 100.0 / 110.0
    posts = opt.posteriors("regular", clock.now)
    total = sum(p.mean for p in posts.values())
    blend = {"a": 0.25, "b": 0.25, "c": 0.5}
    lam = little.learnt_share
    for alg, p in posts.items():  # none at the floor: exactly the mix
        assert abs(little.weights[alg] - (lam * p.mean / total + (1 - lam) * blend[alg])) < 1e-12
    assert abs(little.weights["b"] - 0.25) < 0.05  # the streak barely moves the blend
    unshrunk = await shrinking(clock, None).weights("regular")
    assert unshrunk.learnt_share == 1.0
    # lots of evidence that a is the better algorithm: the weights favour it
    await opt.report(
        [
            PerformanceReport("a", "regular", 20_000, 6_000, 0, None, clock.now),
            PerformanceReport("b", "regular", 20_000, 1_000, 0, None, clock.now),
            PerformanceReport("c", "regular", 20_000, 1_000, 0, None, clock.now),
        ],
        "lots",
    )
    lots = await opt.weights("regular")
    assert lots.learnt_share > 0.99
    assert lots.weights["a"] > 0.7 > lots.weights["c"] > lots.weights["b"]
    posts = opt.posteriors("regular", clock.now)
    total = sum(p.mean for p in posts.values())
    assert abs(lots.weights["a"] - posts["a"].mean / total) < 0.01
