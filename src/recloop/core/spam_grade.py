"""A judgement round's reputations as columns: every signal graded for all its users at once.

:func:`recloop.core.spam.judge` grades one user's signals one by one, a
:class:`~recloop.core.spam.Signal` each, and sums their evidence per family;
:func:`grade_many` grades the same signals for every user judged together,
one array per signal, and returns each user's score, hard rule and status. A
differential test holds it to ``judge``. The guard asks ``judge`` for a user's
signals by name only when it needs them (the reason of a new record, a report).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from recloop.core.spam import (
    BLOCKED,
    FAMILIES,
    SUSPECT,
    TRUSTED,
    ActivityReadings,
    Evidence,
    ItemStats,
    ProfileFeatures,
    SpamConfig,
    TextRegistry,
)
from recloop.core.spam_groups import GroupReading
from recloop.core.spam_norms import LOW_SIDE, ProfileNorms

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Column = tuple[Floats, Bools]
"""A signal for every user: its evidence weight, and whether it fired."""


@dataclass(frozen=True, slots=True)
class Graded:
    """Each user's reputation, as :func:`recloop.core.spam.judge` gives it."""

    score: Floats
    rule: list[str | None]
    status: list[str]


def _severity(value: Any, threshold: Any, span: float, high: bool = True) -> Floats:
    """:func:`recloop.core.spam.severity` of each value."""
    value = np.asarray(value, np.float64)
    with np.errstate(invalid="ignore"):
        beyond = value - threshold if high else threshold - value
        bad = np.isfinite(value) & (beyond > 0)
        graded = np.ones_like(beyond) if span <= 0 else np.minimum(beyond / span, 1.0)
    out: Floats = np.where(bad, graded, 0.0)
    return out


def _grown(weight: float, n: Any, half: float, minimum: float) -> Floats:
    """:func:`recloop.core.spam.grown` of each count."""
    n = np.asarray(n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: Floats = np.where((n < minimum) | (n <= 0), 0.0, weight * n / (n + half))
    return out


def _graded(value: Any, threshold: Any, span: float, weight: Any, high: bool = True) -> Column:
    """:func:`recloop.core.spam.graded`: the weight and whether it fired."""
    return _scaled(_severity(value, threshold, span, high), weight)


def _scaled(s: Floats, weight: Any) -> Column:
    weight = np.broadcast_to(np.asarray(weight, np.float64), s.shape)
    fired = (s > 0) & (weight > 0)
    return np.where(fired, weight * s, weight), fired


def _shares(part: Floats, whole: Floats) -> Floats:
    with np.errstate(invalid="ignore", divide="ignore"):
        out: Floats = np.where(whole > 0, part / np.where(whole > 0, whole, 1.0), math.nan)
    return out


def _excess_repeats(repeats: Floats, actions: Floats, types: Floats, catalogue: int) -> Floats:
    """:func:`recloop.core.spam.excess_repeats` of each user."""
    share = _shares(repeats, actions)
    if catalogue <= 0:
        return share
    k = float(catalogue)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_type = actions / np.maximum(types, 1)
        expected = 1.0 - k * -np.expm1(per_type * math.log1p(-1.0 / k)) / per_type if k > 1 else 1.0
        expected = np.broadcast_to(np.asarray(expected, np.float64), share.shape)
        excess = np.maximum(0.0, (share - expected) / (1.0 - expected))
    out: Floats = np.where(actions <= 0, math.nan, np.where(expected >= 1.0, 0.0, excess))
    return out


def _column(activities: Sequence[Evidence], name: str) -> Floats:
    return np.array([getattr(a, name) for a in activities], np.float64)


def _signals(
    activities: Sequence[Evidence],
    items: ItemStats,
    config: SpamConfig,
    texts: TextRegistry | None,
    norms: ProfileNorms | None,
    groups: Sequence[GroupReading | None],
    features: Sequence[ProfileFeatures | None],
    readings: Sequence[ActivityReadings],
) -> dict[str, Column]:
    """Every signal of :func:`recloop.core.spam.signals`, for every user."""
    c = config
    users = len(activities)
    out: dict[str, Column] = {}
    r = {
        name: np.array([getattr(x, name) for x in readings], np.float64)
        for name in ActivityReadings.__dataclass_fields__
    }
    # timing
    burst = _column(activities, "max_explicit_in_second")
    fired = burst > c.max_explicit_per_second
    out["explicit_burst"] = (np.where(fired, c.w_rate, 0.0), fired)
    out["event_rate"] = _graded(
        np.minimum(r["rate"], 1e9),
        c.rate_max,
        c.rate_span,
        _grown(c.w_rate, r["rate_actions"], c.timing_half, c.rate_min_actions),
    )
    k = r["intervals"]
    out["interarrival_cv"] = _graded(
        r["cv"],
        c.cv_min,
        c.cv_span,
        _grown(c.w_cv, k, c.timing_half, c.timing_min_intervals),
        False,
    )
    out["burstiness"] = _graded(
        r["burstiness"],
        c.burstiness_min,
        c.burstiness_span,
        _grown(c.w_burstiness, k, c.timing_half, c.burstiness_min_intervals),
        False,
    )
    actions = _column(activities, "actions")
    out["hour_entropy"] = _graded(
        r["hour_entropy"],
        c.hour_entropy_max,
        c.hour_entropy_span,
        _grown(c.w_hour_entropy, actions, c.hour_half, c.hour_min_actions),
    )
    # behaviour
    catalogue = items.catalogue
    repeats = _excess_repeats(
        _column(activities, "repeats"), actions, _column(activities, "action_types"), catalogue
    )
    out["repeated_item"] = _graded(
        repeats,
        c.repeat_max,
        c.repeat_span,
        _grown(c.w_repetition, actions, c.behaviour_half, c.behaviour_min_actions),
    )
    out["item_diversity"] = _graded(
        r["diversity"],
        c.diversity_min,
        c.diversity_span,
        _grown(c.w_repetition, r["diversity_actions"], c.behaviour_half, c.behaviour_min_actions),
        False,
    )
    dwells = _column(activities, "dwells")
    out["short_dwell"] = _graded(
        _shares(_column(activities, "short_dwells"), dwells),
        c.short_dwell_max,
        c.short_dwell_span,
        _grown(c.w_short_dwell, dwells, c.dwell_half, c.dwell_min),
    )
    clicks = _column(activities, "clicks")
    out["clicks_without_impressions"] = _graded(
        _shares(_column(activities, "unseen_clicks"), clicks),
        c.unseen_clicks_max,
        c.unseen_clicks_span,
        _grown(c.w_unseen_clicks, clicks, c.clicks_half, c.clicks_min)
        if c.impressions_logged
        else 0.0,
    )
    # review texts
    reviews = _column(activities, "reviews")
    w = _grown(c.w_text, reviews, c.reviews_half, c.reviews_min)
    for name, counted, threshold in (
        ("review_links", "reviews_with_links", c.links_max),
        ("review_repeated_chars", "reviews_with_repeats", c.repeated_chars_max),
    ):
        kind = _column(activities, counted)
        weight, fired = _graded(_shares(kind, reviews), threshold, c.text_span, w)
        unsure = kind < c.reviews_min  # a share needs reviews_min reviews of the kind
        out[name] = (np.where(fired & unsure, w, weight), fired & ~unsure)
    copies = [
        float(max([a.max_text_copies, *(texts.copies(key) for key in a.review_keys)]))
        if texts is not None and a.reviews
        else float(a.max_text_copies)
        for a in activities
    ]
    out["review_copies"] = _graded(
        copies, c.copies_max, c.copies_span, np.where(reviews > 0, c.w_copies, 0.0)
    )
    out.update(_profile_signals(features, items, config, norms, users))
    # the group detector
    purity = np.array([math.nan if g is None else g.purity for g in groups], np.float64)
    weight = np.where(
        np.isnan(purity),
        0.0,
        c.w_group * _severity(purity, c.group_purity_min, c.group_purity_span),
    )
    out["target_group"] = (weight, weight > 0)
    return out


_PROFILE_SIGNALS = (
    "rdma", "wdma", "item_mean_deviation", "mean_var", "fmtd", "extremity", "agreement",
    "popularity", "target_focus", "length_var",
)  # fmt: skip


def _profile_signals(
    features: Sequence[ProfileFeatures | None],
    items: ItemStats,
    c: SpamConfig,
    norms: ProfileNorms | None,
    users: int,
) -> dict[str, Column]:
    """The rating-profile signals (``_profile_signals``) of every user; none for a user
    without a profile."""
    held = np.array([f is not None for f in features], np.bool_)
    profiles = [f for f in features if f is not None]
    out: dict[str, Column] = {}
    if not profiles:
        nothing = (np.zeros(users), np.zeros(users, np.bool_))
        return dict.fromkeys(_PROFILE_SIGNALS, nothing)

    def col(name: str) -> Floats:
        return np.array([getattr(f, name) for f in profiles], np.float64)

    n = col("n")

    def gate(name: str, value: Floats) -> Floats:
        if norms is None:
            return np.ones(len(value))
        per = norms.table.get(name)
        if per is None:
            return np.ones(len(value))
        centre, scale = per[None]
        with np.errstate(invalid="ignore"):
            z = (value - centre) * np.sqrt(np.maximum(n, 1) / max(norms.typical, 1.0)) / scale
            beyond = -z if name in LOW_SIDE else z
            z0 = norms.z0_of.get(name, norms.z0)
            if norms.span > 0:
                g = np.minimum(np.maximum((beyond - z0) / norms.span, 0.0), 1.0)
            else:
                g = (beyond > z0).astype(np.float64)
        result: Floats = np.where(np.isfinite(z), g, 1.0)
        return result

    def w(weight: float, size: Floats | None = None) -> Floats:
        return _grown(weight, n if size is None else size, c.profile_half, c.profile_min)

    def graded(statistic: str, threshold: Any, span: float, high: bool = True) -> Floats:
        value = col(statistic)
        return _severity(value, threshold, span, high) * gate(statistic, value)

    rho = col("agreement")
    with np.errstate(invalid="ignore", divide="ignore"):
        upper = np.where(
            np.isfinite(rho) & (n >= 4),
            np.tanh(
                np.arctanh(np.clip(rho, -0.999999, 0.999999))
                + c.agreement_z / np.sqrt(np.maximum(n - 3, 1))
            ),
            math.nan,
        )
        ranked = np.maximum(items.items, n + 1)
        popular = c.popularity_max + c.popularity_slack / (np.sqrt(n) * np.log(ranked / n))
    w_dev = w(c.w_deviation)
    popularity = col("popularity")
    found = {
        "rdma": _scaled(graded("rdma_ratio", c.rdma_ratio_max, c.rdma_ratio_span), w_dev),
        "wdma": _scaled(graded("wdma_ratio", c.rdma_ratio_max, c.rdma_ratio_span), w_dev),
        "item_mean_deviation": _scaled(
            graded("deviation", c.deviation_max, c.deviation_span), w_dev
        ),
        "mean_var": _scaled(
            graded("mean_var_ratio", c.mean_var_ratio_min, c.mean_var_ratio_span, False),
            w(c.w_mean_var, col("filler")),
        ),
        "fmtd": _scaled(graded("fmtd", c.fmtd_max, c.fmtd_span), w(c.w_shape)),
        "extremity": _scaled(graded("extremity", c.extremity_max, c.extremity_span), w(c.w_shape)),
        "agreement": _scaled(
            _severity(upper, c.agreement_min, c.agreement_span, False) * gate("agreement", rho),
            np.where(np.isfinite(upper), w(c.w_agreement), 0.0),
        ),
        "popularity": _scaled(
            _severity(popularity, popular, c.popularity_span) * gate("popularity", popularity),
            np.where(np.isfinite(popularity) & (n >= c.popularity_min), w(c.w_popularity), 0.0),
        ),
        "target_focus": _scaled(graded("target_focus", c.focus_max, c.focus_span), w(c.w_focus)),
        "length_var": _scaled(graded("length_z", c.length_z_max, c.length_z_span), w(c.w_length)),
    }
    for name, (weight, fired) in found.items():
        all_weight, all_fired = np.zeros(users), np.zeros(users, np.bool_)
        all_weight[held], all_fired[held] = weight, fired
        out[name] = (all_weight, all_fired)
    return out


def grade_many(
    activities: Sequence[Evidence],
    items: ItemStats,
    config: SpamConfig,
    now: float,
    texts: TextRegistry | None,
    norms: ProfileNorms | None,
    groups: Sequence[GroupReading | None],
    features: Sequence[ProfileFeatures | None],
    readings: Sequence[ActivityReadings],
) -> Graded:
    """Each user's :func:`recloop.core.spam.judge` score, hard rule and status, the
    signals graded as columns (``features`` and ``readings`` as
    :func:`recloop.core.spam_batch.judge_many` computes them)."""
    users = len(activities)
    found = _signals(activities, items, config, texts, norms, groups, features, readings)
    # evidence counted once per family: the largest fired weight against; else the
    # largest weight, scaled and capped, for (evidence())
    families: dict[str, list[str]] = {}
    for name in found:
        families.setdefault(FAMILIES.get(name, name), []).append(name)
    positive, negative = np.zeros(users), np.zeros(users)
    for members in families.values():
        fired_any = np.zeros(users, np.bool_)
        against, clean = np.zeros(users), np.zeros(users)
        for name in members:
            weight, fired = found[name]
            fired_any |= fired
            against = np.maximum(against, np.where(fired, weight, 0.0))
            clean = np.maximum(clean, np.where(fired, 0.0, weight))
        negative += against
        positive += np.where(
            fired_any, 0.0, np.minimum(clean * config.clean_evidence, config.clean_cap)
        )
    a = config.prior_trust + positive
    score = 100.0 * a / (a + config.prior_distrust + negative)
    rules: list[str | None] = []
    for activity in activities:
        at = activity.hard_rule_at
        held = at is not None and now - at <= config.hard_rule_seconds
        rules.append(activity.hard_rule_reason if held else None)
    ruled = np.array([rule is not None for rule in rules], np.bool_)
    score = np.where(ruled, 0.0, score)
    status = np.where(
        ruled | (score < config.block_threshold),
        BLOCKED,
        np.where(score < config.suspect_threshold, SUSPECT, TRUSTED),
    ).tolist()
    return Graded(score, rules, status)
