"""Spam and bot detection (core.spam): each signal on hand-built cases, the score, end to end."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from benchmarks.spam_eval import ATTACK_MODELS, BOT_MODELS, Simulation, Sizes
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.errors import InvalidInput
from recloop.core.spam import (
    BLOCKED,
    SUSPECT,
    TRUSTED,
    ItemStats,
    RatingMoments,
    Signal,
    SpamConfig,
    TextRegistry,
    UserActivity,
    burstiness,
    coefficient_of_variation,
    evidence,
    grown,
    hard_rule,
    has_link,
    has_repeated_chars,
    hour_entropy,
    item_diversity,
    judge,
    profile_features,
    record_event,
    reputation,
    signals,
    text_key,
)

CONFIG = SpamConfig()
DAY = 86_400.0
T0 = 1_700_000_000.0  # a Tuesday, 22:13 UTC


def read(activity: UserActivity, items: ItemStats | None = None) -> dict[str, Signal]:
    return signals(activity, items or ItemStats(), CONFIG, now=activity.last_at)


def human(seed: int = 3, days: int = 20) -> UserActivity:
    """A person: one to three sessions a day in the evening, bursty gaps, impressions first."""
    rng = np.random.default_rng(seed)
    activity = UserActivity()
    item = 0
    for day in range(days):
        for _ in range(int(rng.integers(1, 4))):
            t = T0 + day * DAY + float(rng.uniform(17, 23)) * 3600.0
            for _ in range(int(rng.integers(2, 8))):
                item += 1
                activity.observe("impression", f"i{item}", None, t)
                t += float(rng.lognormal(math.log(8.0), 0.8))
                activity.observe("click", f"i{item}", None, t)
                activity.observe("view", f"i{item}", None, t + 0.3)
                dwell = float(rng.lognormal(math.log(40.0), 1.0))
                t += 0.3 + dwell
                activity.observe("dwell", f"i{item}", dwell, t)
                t += float(rng.lognormal(math.log(20.0), 1.0))
    return activity


# -- Timing ------------------------------------------------------------------------------


def test_periodic_bot_has_cv_near_zero_and_fires() -> None:
    bot = UserActivity()
    for k in range(200):
        t = T0 + 90.0 * k
        bot.observe("impression", f"i{k % 50}", None, t)
        bot.observe("click", f"i{k % 50}", None, t + 0.5)
    found = read(bot)
    assert found["interarrival_cv"].value == pytest.approx(0.0, abs=1e-6)
    assert found["interarrival_cv"].fired
    assert found["burstiness"].value == pytest.approx(-1.0)
    assert found["burstiness"].fired


def test_poisson_bot_is_not_bursty_and_runs_around_the_clock() -> None:
    rng = np.random.default_rng(1)
    bot = UserActivity()
    t = T0
    for k in range(1500):
        bot.observe("impression", f"i{k}", None, t)
        bot.observe("click", f"i{k}", None, t + 1.0)
        t += float(rng.exponential(180.0))
    found = read(bot)
    assert abs(found["burstiness"].value) < 0.05
    assert found["burstiness"].fired
    assert found["hour_entropy"].value > 0.98
    assert found["hour_entropy"].fired
    assert not found["interarrival_cv"].fired  # Poisson timing is irregular: CV near 1


def test_a_human_fires_no_timing_or_behaviour_signal() -> None:
    found = read(human())
    for name in (
        "explicit_burst", "event_rate", "interarrival_cv", "burstiness", "hour_entropy",
        "repeated_item", "item_diversity", "short_dwell", "clicks_without_impressions",
    ):  # fmt: skip
        assert not found[name].fired, name
    assert found["burstiness"].value > 0.1
    assert found["interarrival_cv"].value > 1.0
    assert found["hour_entropy"].value < 0.9
    assert judge(human(), ItemStats(), CONFIG, now=T0 + 30 * DAY).status == TRUSTED


def test_a_flood_fires_the_rate_signal_and_the_hard_rule() -> None:
    flood = UserActivity()
    for k in range(60):
        flood.observe("like", f"i{k}", None, T0 + 0.05 * k)
    found = read(flood)
    assert found["event_rate"].fired
    assert found["event_rate"].value == pytest.approx(20.0)
    assert found["explicit_burst"].fired
    assert hard_rule(flood, CONFIG, now=T0 + 10.0) == "more than 10 explicit events in 1 s"
    verdict = judge(flood, ItemStats(), CONFIG, now=T0 + 10.0)
    assert (verdict.status, verdict.score, verdict.hard_rule) == (
        BLOCKED,
        0.0,
        flood.hard_rule_reason,
    )


def test_the_hard_rule_counts_more_than_the_limit_in_one_second() -> None:
    ten = UserActivity()
    for k in range(10):  # 10 explicit events in one second is the limit, not beyond it
        ten.observe("rating", f"i{k}", 4.0, T0 + 0.09 * k)
    assert hard_rule(ten, CONFIG, now=T0) is None
    ten.observe("like", "i99", None, T0 + 0.95)
    assert hard_rule(ten, CONFIG, now=T0) is not None
    remembered = replace(CONFIG, hard_rule_seconds=60.0)
    assert hard_rule(ten, remembered, now=T0 + 61.0) is None


def test_implicit_floods_trip_the_actions_rule() -> None:
    flood = UserActivity()
    for k in range(30):
        flood.observe("click", "i1", None, T0 + 0.03 * k)
    assert hard_rule(flood, CONFIG, now=T0) == "more than 25 events in 1 s"


def test_burstiness_and_cv_match_their_formulas() -> None:
    intervals = np.array([1.0, 2.0, 3.0, 10.0])
    mu, sigma = 4.0, math.sqrt(((1 - 4) ** 2 + (2 - 4) ** 2 + (3 - 4) ** 2 + (10 - 4) ** 2) / 4)
    assert burstiness(intervals) == pytest.approx((sigma - mu) / (sigma + mu))
    assert coefficient_of_variation(intervals) == pytest.approx(sigma / mu)
    assert burstiness(np.array([5.0, 5.0, 5.0])) == -1.0
    assert math.isnan(burstiness(np.array([3.0])))
    rng = np.random.default_rng(0)
    assert burstiness(rng.exponential(1.0, 200_000)) == pytest.approx(0.0, abs=0.01)


def test_hour_entropy_on_a_hand_case() -> None:
    hours = [2, 2, 4] + [0] * 21  # N = 8 events in K = 3 hours
    p = np.array([0.25, 0.25, 0.5])
    expected = (-(p * np.log(p)).sum() + (3 - 1) / (2 * 8)) / math.log(24)
    assert hour_entropy(hours) == pytest.approx(expected)
    assert hour_entropy([7] * 24) == 1.0
    assert math.isnan(hour_entropy([0] * 24))


# -- Behaviour -----------------------------------------------------------------------------


def test_repeated_user_item_events_fire() -> None:
    hammer = UserActivity()
    for k in range(100):
        hammer.observe("impression", f"i{k % 2}", None, T0 + 60.0 * k)
        hammer.observe("click", f"i{k % 2}", None, T0 + 60.0 * k + 1.0)
    found = read(hammer)
    assert found["repeated_item"].value == pytest.approx(98 / 100)
    assert found["repeated_item"].fired
    assert found["item_diversity"].value == pytest.approx(math.log(2) / math.log(100))
    assert found["item_diversity"].fired


def test_item_diversity_is_normalised_entropy() -> None:
    assert item_diversity(["a", "b", "a", "b"]) == pytest.approx(math.log(2) / math.log(4))
    assert math.isnan(item_diversity(["a"]))


def test_clicks_without_impressions() -> None:
    blind, seeing = UserActivity(), UserActivity()
    for k in range(20):
        t = T0 + 40.0 * k
        blind.observe("click", f"i{k}", None, t)
        seeing.observe("impression", f"i{k}", None, t - 3.0)
        seeing.observe("click", f"i{k}", None, t)
    assert (blind.clicks, blind.unseen_clicks) == (20, 20)
    assert read(blind)["clicks_without_impressions"].fired
    assert read(seeing)["clicks_without_impressions"].value == 0.0
    assert not read(seeing)["clicks_without_impressions"].fired
    # a deployment whose clients log no impressions turns the signal off
    off = signals(blind, ItemStats(), replace(CONFIG, impressions_logged=False), now=T0)
    assert off["clicks_without_impressions"].weight == 0.0


def population(
    users: int, seeing: int, config: SpamConfig = CONFIG
) -> tuple[dict[str, UserActivity], ItemStats]:
    """``users`` users with 20 clicks each, the first ``seeing`` of them shown each item
    first; the rest click items never shown (their clients log no impressions)."""
    items = ItemStats()
    activities = {}
    for u in range(users):
        activity = activities[f"u{u}"] = UserActivity(config)
        for k in range(20):
            t = T0 + 40.0 * k + u
            if u < seeing:
                record_event(activity, items, None, "impression", f"i{k}", None, t - 3.0)
            record_event(activity, items, None, "click", f"i{k}", None, t)
    return activities, items


def test_clicks_without_impressions_count_only_where_the_population_logs_impressions() -> None:
    """ "auto": a deployment whose clients log no exposures (most clicks unseen) does not
    accuse every clicking user; one whose clients do still accuses the one who does not."""
    weight = "clicks_without_impressions"
    blind, items = population(users=10, seeing=0)
    assert (items.clicks, items.unseen_clicks) == (200, 200)
    assert not items.impressions_logged(CONFIG)
    assert signals(blind["u0"], items, CONFIG, now=T0)[weight].weight == 0.0
    on = replace(CONFIG, impressions_logged=True)
    assert signals(blind["u0"], items, on, now=T0)[weight].weight > 0.0
    mostly, items = population(users=10, seeing=8)
    assert items.impressions_logged(CONFIG)
    found = signals(mostly["u9"], items, CONFIG, now=T0)[weight]
    assert found.fired and found.weight > 0.0
    assert not signals(mostly["u0"], items, CONFIG, now=T0)[weight].fired
    # the edge: exactly unseen_clicks_max of the population's clicks unseen still counts
    _, items = population(users=10, seeing=5)
    assert items.unseen_clicks == CONFIG.unseen_clicks_max * items.clicks
    assert items.impressions_logged(CONFIG)


def test_impressions_logged_is_true_false_or_auto() -> None:
    with pytest.raises(InvalidInput, match="true, false or auto"):
        SpamConfig(impressions_logged="sometimes")  # type: ignore[arg-type]


def sessions(spacing: float) -> UserActivity:
    """Three sessions of 30 actions each (12 of them likes, the rest views and clicks of
    impressed items), an hour apart; within a session the actions are ``spacing`` apart
    (0: a batch sent without timestamps, every event stamped with its request's instant)."""
    rng = np.random.default_rng(5)
    activity = UserActivity(CONFIG)
    items = ItemStats()
    for session in range(3):
        start = T0 + 3_600.0 * session
        for k in range(30):
            t, item = start + spacing * k, f"i{int(rng.integers(200))}"
            kind = "like" if k % 5 < 2 else ("view" if k % 2 else "click")
            record_event(activity, items, None, "impression", item, None, t)
            record_event(activity, items, None, kind, item, None, t)
    return activity


def test_a_batch_of_untimed_events_is_one_arrival_to_the_timing_rules() -> None:
    """A client that sends each session as one batch without timestamps is not a flood:
    its events share one instant, which the hard rules and the rate count once."""
    batched = sessions(spacing=0.0)
    verdict = judge(batched, ItemStats(), CONFIG, now=batched.last_at)
    assert verdict.hard_rule is None
    assert not verdict.signals["event_rate"].fired
    assert batched.max_explicit_in_second == 1
    assert batched.recent_rate()[1] == 3  # three arrivals
    # the same actions really 10 ms apart are a flood: both hard rules still hold
    flood = sessions(spacing=0.01)
    assert flood.hard_rule_reason == "more than 25 events in 1 s"  # the latest violation
    assert flood.max_explicit_in_second > CONFIG.max_explicit_per_second


def test_a_view_counts_as_having_seen_the_item() -> None:
    activity = UserActivity()
    activity.observe("view", "i1", None, T0)
    activity.observe("click", "i1", None, T0 + 1.0)
    assert activity.unseen_clicks == 0


def test_very_short_dwell_on_many_items() -> None:
    skimmer, reader = UserActivity(), UserActivity()
    for k in range(40):
        skimmer.observe("dwell", f"i{k}", 0.8, T0 + 30.0 * k)
        reader.observe("dwell", f"i{k}", 45.0 if k % 5 else 1.5, T0 + 30.0 * k)
    assert read(skimmer)["short_dwell"].value == 1.0
    assert read(skimmer)["short_dwell"].fired
    assert read(reader)["short_dwell"].value == pytest.approx(0.2)
    assert not read(reader)["short_dwell"].fired
    few = UserActivity()
    for k in range(5):
        few.observe("dwell", f"i{k}", 0.5, T0 + k)
    assert read(few)["short_dwell"].weight == 0.0  # five bounces are not evidence yet


# -- Review text -------------------------------------------------------------------------


def test_links_and_repeated_characters() -> None:
    assert has_link("buy now at https://cheap.example/x")
    assert has_link("visit www.deals.example")
    assert has_link("go to shop-best.com today")
    assert not has_link("I rated it 4.5 out of 5. Loved it.")
    assert has_repeated_chars("sooooo good") and has_repeated_chars("wow!!!!!")
    assert not has_repeated_chars("good book, 100 pages")

    spammer = UserActivity()
    for k in range(3):
        spammer.observe("review", f"i{k}", None, T0 + k, text=f"Great!!!!! see www.x{k}.example")
    found = read(spammer)
    assert found["review_links"].fired and found["review_repeated_chars"].fired

    one_link = UserActivity()
    one_link.observe("review", "i1", None, T0, text="my blog: https://blog.example/review")
    assert not read(one_link)["review_links"].fired  # one review with a link is not spam


def test_the_same_text_by_many_users() -> None:
    registry, items = TextRegistry(), ItemStats()
    text = "Absolutely the best product I have ever bought, five stars"
    users = {f"u{k}": UserActivity() for k in range(4)}
    copies = []
    for k, (uid, activity) in enumerate(users.items()):
        record_event(activity, items, registry, "review", f"i{k}", None, T0 + k, text, uid)
        copies.append(activity.max_text_copies)
    assert copies == [1, 2, 3, 4]
    assert registry.add("u0", text.upper() + "!!") == 4  # normalised: case and punctuation
    first = signals(users["u0"], items, CONFIG, now=T0, texts=registry)["review_copies"]
    assert (first.value, first.fired) == (4.0, True)  # the first poster too, with the registry
    assert not read(users["u0"])["review_copies"].fired  # without it: 1 copy when posted


def test_short_common_texts_are_not_compared() -> None:
    registry = TextRegistry()
    assert [registry.add(f"u{k}", "Great, loved it!") for k in range(5)] == [1] * 5
    assert text_key("Great, loved it!") is None


# -- Rating profiles -----------------------------------------------------------------------


def hand_stats() -> ItemStats:
    """Three items; the profile under test (a=5, b=5, c=1) is among their ratings."""
    stats = ItemStats()
    for item, values in {"a": [5, 4, 3], "b": [2, 2, 5], "c": [1, 3, 4, 4]}.items():
        for value in values:
            stats.add_rating(item, float(value))
    return stats


def test_rdma_and_wdma_on_a_hand_computed_profile() -> None:
    # item means 4, 3, 3 with 3, 3, 4 ratings; deviations |5-4|, |5-3|, |1-3| = 1, 2, 2
    f = profile_features({"a": 5.0, "b": 5.0, "c": 1.0}, hand_stats(), CONFIG)
    assert f is not None
    assert f.rdma == pytest.approx((1 / 3 + 2 / 3 + 2 / 4) / 3)  # Chirita et al. 2005
    assert f.wdma == pytest.approx((1 / 9 + 2 / 9 + 2 / 16) / 3)  # Williams et al. 2007
    assert (f.fmtd, f.extremity, f.n) == (4.0, 1.0, 3)


def test_mean_var_and_fmtd_use_the_target_partition_with_the_lower_mean_var() -> None:
    stats = ItemStats()
    for item, mean in (("t", 2.0), *((f"f{k}", 3.0 + (k % 2)) for k in range(10))):
        for value in (mean - 1, mean, mean + 1):
            stats.add_rating(item, value)
    # an average-attack profile: the target at the top, every filler at its item's mean
    profile = {"t": 5.0, **{f"f{k}": 3.0 + (k % 2) for k in range(10)}}
    for item, value in profile.items():
        stats.add_rating(item, value)
    f = profile_features(profile, stats, CONFIG)
    assert f is not None
    assert f.filler == 10  # the target partition is the top-rated item alone
    k = CONFIG.item_prior_ratings
    mu = stats.global_moments.mean
    assert mu is not None
    # MeanVar: squared deviations of the fillers from their items' leave-one-out means,
    # shrunk k ratings towards the global mean; FMTD: |mean of target - mean of filler|
    deviations = [(m - (3 * m + k * mu) / (3 + k)) ** 2 for m in (3.0, 4.0)]
    assert f.mean_var == pytest.approx(sum(deviations) / 2)
    assert f.fmtd == pytest.approx(5.0 - 3.5)
    assert f.mean_var_ratio < CONFIG.mean_var_ratio_min


def test_popularity_separates_random_from_popular_choices() -> None:
    stats = ItemStats()
    for rank in range(1, 501):
        for _ in range(max(1, 2000 // rank)):
            stats.add_rating(f"i{rank}", 4.0)
    mainstream = profile_features({f"i{r}": 4.0 for r in range(1, 41)}, stats, CONFIG)
    rng = np.random.default_rng(2)
    chosen = rng.choice(np.arange(1, 501), size=40, replace=False)
    scattered = profile_features({f"i{r}": 4.0 for r in chosen}, stats, CONFIG)
    assert mainstream is not None and scattered is not None
    assert mainstream.popularity == pytest.approx(0.0, abs=1e-9)  # the 40 most popular
    assert scattered.popularity == pytest.approx(1.0, abs=0.25)


def test_target_focus_sees_a_pushed_item() -> None:
    stats = ItemStats()
    rng = np.random.default_rng(5)
    for k in range(200):  # ordinary items
        for value in np.clip(np.round(rng.normal(3.0 + (k % 3) * 0.5, 1.0, 20)), 1, 5):
            stats.add_rating(f"i{k}", float(value))
    for value in (2, 2, 1, 3, 2, 3, 2, 1):  # a poorly rated item...
        stats.add_rating("target", float(value))
    for _ in range(30):  # ...pushed by 30 profiles
        stats.add_rating("target", 5.0)
    f = profile_features({"target": 5.0, "i0": 3.0, "i1": 4.0}, stats, CONFIG)
    ordinary = profile_features({"i0": 5.0, "i1": 5.0, "i2": 5.0}, stats, CONFIG)
    assert f is not None and ordinary is not None
    assert f.target_focus > 10
    assert ordinary.target_focus < CONFIG.focus_max


def test_agreement_and_deviation_of_an_honest_profile() -> None:
    stats = ItemStats()
    for k in range(30):
        for value in (1.0 + k % 5, 1.0 + k % 5, 2.0 + k % 4):
            stats.add_rating(f"i{k}", value)
    profile = {f"i{k}": 1.0 + k % 5 for k in range(30)}
    for item, value in profile.items():
        stats.add_rating(item, value)
    f = profile_features(profile, stats, CONFIG)
    assert f is not None
    assert f.agreement > 0.9
    assert f.deviation < CONFIG.deviation_max


# -- Score and verdict ----------------------------------------------------------------------


def test_a_new_user_with_three_normal_ratings_is_trusted() -> None:
    stats = ItemStats()
    for item, value in (("a", 4.0), ("b", 3.0), ("c", 5.0)) * 20:
        stats.add_rating(item, value)
    newcomer = UserActivity()
    for k, (item, value) in enumerate((("a", 4.0), ("b", 3.0), ("c", 5.0))):
        record_event(newcomer, stats, None, "rating", item, value, T0 + 30.0 * k)
    verdict = judge(newcomer, stats, CONFIG, now=T0 + 100.0)
    assert verdict.status == TRUSTED
    assert verdict.score == pytest.approx(80.0)  # the prior alone: Beta(4, 1)
    assert all(s.weight == 0.0 for s in verdict.signals.values())


def test_a_new_user_with_three_extreme_ratings_is_trusted_too() -> None:
    stats = hand_stats()
    newcomer = UserActivity()
    for item, value in (("a", 5.0), ("b", 5.0), ("c", 1.0)):
        record_event(newcomer, stats, None, "rating", item, value, T0)
    assert judge(newcomer, stats, CONFIG, now=T0).status == TRUSTED


@settings(max_examples=200, deadline=None)
@given(positive=st.floats(0, 1e4), negative=st.floats(0, 1e4), more=st.floats(1e-3, 1e3))
def test_the_score_is_monotonic_in_evidence(positive: float, negative: float, more: float) -> None:
    score = reputation(positive, negative, CONFIG)
    assert 0.0 <= score <= 100.0
    assert reputation(positive, negative + more, CONFIG) < score
    assert reputation(positive + more, negative, CONFIG) > score


@settings(max_examples=100, deadline=None)
@given(weights=st.lists(st.floats(0.01, 50), min_size=1, max_size=6), extra=st.floats(0.01, 50))
def test_a_fired_signal_never_raises_the_score(weights: list[float], extra: float) -> None:
    names = ["rdma", "popularity", "event_rate", "short_dwell", "review_copies", "agreement"]
    found = {name: Signal(0.0, True, w) for name, w in zip(names, weights, strict=False)}
    before = reputation(*evidence(found, CONFIG), CONFIG)
    found["hour_entropy"] = Signal(1.0, True, extra)
    assert reputation(*evidence(found, CONFIG), CONFIG) < before


def test_evidence_counts_each_family_once() -> None:
    one = {"rdma": Signal(2.0, True, 5.0)}
    same_family = {**one, "wdma": Signal(0.1, True, 3.0), "fmtd": Signal(4.0, True, 4.0)}
    assert evidence(same_family, CONFIG) == evidence(one, CONFIG) == (0.0, 5.0)
    clean = {"rdma": Signal(1.0, False, 8.0), "popularity": Signal(0.5, False, 1.0)}
    assert evidence(clean, CONFIG) == pytest.approx((CONFIG.clean_cap + 0.25, 0.0))


def test_evidence_weights_grow_with_profile_length() -> None:
    weights = [grown(10.0, n, 30.0, 8) for n in (3, 7, 8, 20, 100, 1000)]
    assert weights[:2] == [0.0, 0.0]
    assert weights[2:] == sorted(weights[2:])
    assert weights[-1] < 10.0


def test_statuses_follow_the_thresholds() -> None:
    config = SpamConfig()
    assert reputation(0.0, 3.0, config) == pytest.approx(50.0)  # 4 / (4 + 1 + 3)
    low = judge(UserActivity(), ItemStats(), config, now=T0)
    assert low.status == TRUSTED
    assert SUSPECT != BLOCKED


def test_config_names_the_bad_field() -> None:
    with pytest.raises(InvalidInput, match=r"spam\.block_threshold"):
        SpamConfig(block_threshold=60.0)
    with pytest.raises(InvalidInput, match=r"spam\.w_rate"):
        SpamConfig(w_rate=-1.0)
    with pytest.raises(InvalidInput, match=r"spam\.recent_actions"):
        SpamConfig(recent_actions=1)
    assert SpamConfig(block_threshold=50.0).block_threshold == 50.0  # no suspect band


# -- Population statistics and memory ---------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=2, max_size=60))
def test_item_moments_match_numpy(values: list[int]) -> None:
    stats = ItemStats()
    for value in values:
        stats.add_rating("x", float(value))
    assert stats.count("x") == len(values)
    assert stats.mean("x") == pytest.approx(np.mean(values))
    assert stats.variance("x") == pytest.approx(np.var(values, ddof=1), abs=1e-9)
    moments = stats.moments("x")
    assert (moments.n_max, moments.n_min) == (values.count(5), values.count(1))


def test_rating_moments_merge_exactly() -> None:
    a, b = RatingMoments(2, 9.0, 41.0, 1, 0), RatingMoments(3, 6.0, 14.0, 0, 1)
    assert (a + b) - b == a
    shard1, shard2 = ItemStats(), ItemStats()
    shard1.add_rating("x", 4.0)
    shard2.add_rating("x", 2.0)
    shard1.merge(shard2)
    assert (shard1.count("x"), shard1.mean("x")) == (2, 3.0)


def test_a_changed_rating_replaces_the_old_one() -> None:
    stats, activity = ItemStats(), UserActivity()
    record_event(activity, stats, None, "rating", "a", 2.0, T0)
    record_event(activity, stats, None, "rating", "a", 5.0, T0 + 60.0)
    record_event(activity, stats, None, "rating", "b", 3.0, T0 + 90.0)
    assert (stats.count("a"), stats.mean("a")) == (1, 5.0)
    assert activity.ratings == {"a": 5.0, "b": 3.0}
    assert stats.profile_lengths == RatingMoments(1, 2.0, 4.0, 0, 0)  # one user, 2 items
    with pytest.raises(InvalidInput, match="item_id"):
        stats.remove_rating("nothing", 3.0)


def test_log_ranks_share_ties_and_refresh_lazily() -> None:
    stats = ItemStats()
    for item, n in (("a", 3), ("b", 1), ("c", 1)):
        for _ in range(n):
            stats.add_rating(item, 4.0)
    ranks = stats.log_ranks(refresh=0.5)
    assert ranks.table["b"] == ranks.table["c"]  # tied: both at rank 2.5
    stats.add_rating("d", 4.0)  # 6 ratings now, under 5 * 1.5: the cached table stays
    assert stats.log_ranks(refresh=0.5) is ranks
    assert "d" in stats.log_ranks(refresh=0.0).table


def test_memory_per_user_is_bounded() -> None:
    config = SpamConfig(recent_actions=64, remembered_items=128, max_profile_ratings=100)
    activity = UserActivity(config)
    for k in range(5000):
        t = T0 + k
        activity.observe("impression", f"i{k}", None, t)
        activity.observe("click", f"i{k}", None, t + 0.5)
        activity.observe("rating", f"i{k}", 3.0, t + 0.7)
        activity.observe("review", f"i{k}", None, t + 0.8, text=f"review number {k} " * 3)
    assert len(activity.ratings) == 100
    assert len(activity.recent_items()) == 64
    assert len(activity.intervals()) <= 63
    # pairs and impressed items are trimmed to the window once twice as many are held
    assert len(activity._pairs) <= 2 * 128 and len(activity._impressed) <= 2 * 128
    assert len(activity.review_keys) == config.remembered_reviews
    assert activity.events == 20_000 and activity.clicks == 5000


def test_signals_are_complete_and_json_ready() -> None:
    found = read(human())
    assert set(found) == {
        "explicit_burst", "event_rate", "interarrival_cv", "burstiness", "hour_entropy",
        "repeated_item", "item_diversity", "short_dwell", "clicks_without_impressions",
        "review_links", "review_repeated_chars", "review_copies", "rdma", "wdma",
        "item_mean_deviation", "mean_var", "fmtd", "extremity", "agreement", "popularity",
        "target_focus", "length_var", "target_group",
    }  # fmt: skip
    for signal in found.values():
        assert isinstance(signal.value, float) and isinstance(signal.fired, bool)
        assert signal.weight >= 0.0


# -- End to end: seeded simulations ------------------------------------------------------------


@pytest.fixture(scope="module")
def simulation() -> Iterator[Simulation]:
    """300 genuine users, 1000 items, two weeks (the world of benchmarks/spam_eval.py)."""
    sim = Simulation(Sizes(users=300, items=1000, days=14.0, bots=5), seed=1, config=CONFIG)
    sim.build(lambda message: None)
    yield sim


@pytest.mark.parametrize("model", ATTACK_MODELS)
def test_each_attack_model_is_caught_without_flagging_genuine_users(
    simulation: Simulation, model: str
) -> None:
    # attack size 5 % (15 profiles), filler size 5 % (50 items)
    cell = simulation.run_cell(model, attack_size=0.05, filler_size=0.05, index=1)
    assert cell.attackers == 15
    assert cell.caught == cell.attackers
    assert cell.false_alarms == 0


@pytest.mark.parametrize("model", BOT_MODELS)
def test_each_bot_model_is_caught(simulation: Simulation, model: str) -> None:
    cell = simulation.run_bots(model, index=2)
    assert cell.caught == cell.attackers == 5
    assert cell.false_alarms == 0
