"""The batched profile features, activity readings and verdicts equal the one-user oracles'."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from recloop.core.spam import (
    ActivityReadings,
    ItemStats,
    ProfileFeatures,
    SpamConfig,
    UserActivity,
    activity_readings,
    profile_features,
)
from recloop.core.spam_batch import activity_readings_many, profile_features_many


def _same(got: ProfileFeatures | None, want: ProfileFeatures | None) -> bool:
    if got is None or want is None:
        return got is want
    for field in dataclasses.fields(ProfileFeatures):
        a, b = getattr(got, field.name), getattr(want, field.name)
        if isinstance(b, float) and math.isnan(b):
            if not math.isnan(a):
                return False
        elif not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            return False
    return True


def _population(
    rng: random.Random, items: int, raters: int
) -> tuple[ItemStats, list[dict[str, float]]]:
    stats = ItemStats()
    profiles: list[dict[str, float]] = []
    scale = [1.0, 1.5, 2.0, 3.0, 4.0, 4.5, 5.0]
    for _ in range(raters):
        size = rng.choice([0, 1, 2, 3, 5, 8, 13, 30])
        chosen = rng.sample(range(items + 5), min(size, items + 5))  # a few never rated by others
        style = rng.random()
        profile = {}
        for item in chosen:
            if style < 0.15:  # a flat profile: every rating the same
                value = 4.0
            elif style < 0.3:  # a push: extremes only
                value = rng.choice([1.0, 5.0])
            else:
                value = rng.choice(scale)
            profile[f"i{item}"] = value
        profiles.append(profile)
    for profile in profiles[: raters // 2]:  # half of them are in the statistics
        for item, value in profile.items():
            stats.add_rating(item, value)
        stats.note_profile_length(0, len(profile))
    return stats, profiles


@pytest.mark.parametrize("seed", range(6))
def test_batched_features_equal_the_one_profile_oracle(seed: int) -> None:
    rng = random.Random(seed)
    stats, profiles = _population(rng, items=rng.choice([3, 40, 300]), raters=120)
    config = SpamConfig()
    got = profile_features_many(profiles, stats, config)
    for profile, features in zip(profiles, got, strict=True):
        want = profile_features(profile, stats, config)
        assert _same(features, want), (profile, features, want)
    assert sum(f is not None for f in got) > 80


def test_with_no_statistics_yet_each_profile_is_its_own_baseline() -> None:
    config = SpamConfig()
    profiles = [{"a": 5.0, "b": 1.0, "c": 3.0}, {"a": 2.0}, {"x": 4.0, "y": 4.0, "z": 4.5}]
    got = profile_features_many(profiles, ItemStats(), config)
    for profile, features in zip(profiles, got, strict=True):
        assert _same(features, profile_features(profile, ItemStats(), config))


def test_judging_many_gives_each_user_the_verdict_judging_alone_gives() -> None:
    from recloop.core.spam import TextRegistry, UserActivity, judge, record_event
    from recloop.core.spam_batch import judge_many

    rng = random.Random(5)
    config, stats, texts = SpamConfig(), ItemStats(), TextRegistry()
    activities = []
    for _ in range(60):
        activity = UserActivity(config)
        t = 1_000.0 + rng.random() * 100
        for _ in range(rng.choice([0, 3, 12, 30])):
            kind = rng.choice(["view", "click", "rating", "rating", "like", "impression"])
            value = rng.choice([1.0, 3.0, 4.0, 5.0]) if kind == "rating" else None
            t += rng.choice([0.5, 30.0, 600.0])
            record_event(activity, stats, texts, kind, f"i{rng.randrange(40)}", value, t)
        activities.append(activity)
    now = 100_000.0
    verdicts = judge_many(activities, stats, config, now, texts)
    for activity, verdict in zip(activities, verdicts, strict=True):
        alone = judge(activity, stats, config, now, texts)
        assert (verdict.status, verdict.hard_rule) == (alone.status, alone.hard_rule)
        assert math.isclose(verdict.score, alone.score, rel_tol=1e-9, abs_tol=1e-9)
        assert verdict.signals.keys() == alone.signals.keys()
        for name, signal in alone.signals.items():
            assert verdict.signals[name].fired == signal.fired, name
    assert sum(v.features is not None for v in verdicts) > 20  # profiles were compared


def _activities(rng: random.Random, config: SpamConfig, users: int) -> list[UserActivity]:
    """Users of every kind the timing and behaviour detectors read: none, one or many
    actions, periodic bots, bursts at one instant, a few items re-viewed, around the clock."""
    activities = []
    for _ in range(users):
        activity = UserActivity(config)
        t = 1_000.0 + rng.random() * 100
        style = rng.random()
        for _ in range(rng.choice([0, 1, 2, 3, 12, 40, 300])):
            kind = rng.choice(["view", "click", "rating", "like", "impression", "dwell", "share"])
            if style < 0.2:  # a bot: one type, one period
                kind, step = "click", 10.0
            elif style < 0.3:  # everything at one instant
                step = 0.0
            else:
                step = rng.choice([0.5, 30.0, 600.0, 3_600.0, rng.expovariate(1 / 90)])
            t += step
            value = {"rating": rng.choice([1.0, 3.0, 5.0]), "dwell": rng.random() * 20}.get(kind)
            item = f"i{rng.randrange(3 if style > 0.9 else 400)}"
            activity.observe(kind, item, value, t)
        activities.append(activity)
    return activities


@pytest.mark.parametrize("seed", range(4))
def test_batched_activity_readings_equal_the_one_user_oracle(seed: int) -> None:
    rng = random.Random(seed)
    config = SpamConfig(recent_actions=rng.choice([8, 64, 256]))
    activities = _activities(rng, config, 150)
    catalogue = rng.choice([0, 2, 10, 5_000])
    got = activity_readings_many(activities, config.recent_actions, catalogue)
    for activity, readings in zip(activities, got, strict=True):
        want = activity_readings(activity, catalogue)
        for field in dataclasses.fields(ActivityReadings):
            a, b = getattr(readings, field.name), getattr(want, field.name)
            if isinstance(b, float) and math.isnan(b):
                assert math.isnan(a), (field.name, a, b)
            else:
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (field.name, a, b)
    assert sum(r.intervals >= 2 for r in got) > 50
    assert any(r.cv == 0.0 for r in got)  # the periodic bots
    # the bursts at one instant: one arrival (no rate), their actions all counted
    assert any(r.rate_actions == 1 and r.rate == 0.0 and r.diversity_actions > 1 for r in got)
