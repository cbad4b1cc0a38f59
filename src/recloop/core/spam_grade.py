"""A judgement round's reputations as columns: every signal graded for all its users at once.

:func:`recloop.core.spam.judge` grades one user's signals one by one, a
:class:`~recloop.core.spam.Signal` each, and sums their evidence per family;
:func:`grade_columns` grades the same signals for every user judged together,
one array per signal, and returns each user's score, hard rule and status. Its
inputs are columns too (:class:`EvidenceColumns`, the guard's table gives them
for the judged slots without a per-user object); :func:`grade_many` takes one
:class:`~recloop.core.spam.Evidence` per user and reads their fields out into
those columns. Differential tests hold both to ``judge``. The guard asks
``judge`` for a user's signals by name only when it needs them (the reason of a
new record, a report).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
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
class EvidenceColumns:
    """What a judgement round reads of its users' evidence (:class:`Evidence`' fields), one
    array per field over the users judged together."""

    actions: npt.NDArray[Any]
    repeats: npt.NDArray[Any]
    action_types: npt.NDArray[Any]
    max_explicit_in_second: npt.NDArray[Any]
    dwells: npt.NDArray[Any]
    short_dwells: npt.NDArray[Any]
    clicks: npt.NDArray[Any]
    unseen_clicks: npt.NDArray[Any]
    reviews: npt.NDArray[Any]
    reviews_with_links: npt.NDArray[Any]
    reviews_with_repeats: npt.NDArray[Any]
    max_text_copies: npt.NDArray[Any]
    hard_rule_at: Floats
    """NaN: no violation."""
    rule: npt.NDArray[np.int64]
    """Each user's hard rule, as an index into ``reasons`` (0: none)."""
    reasons: Sequence[str | None]
    """The hard rules' reasons (the first: ``None``)."""
    review_keys: Mapping[int, Iterable[str]]
    """The latest reviews' text keys of the users (by index) who wrote reviews."""


def evidence_columns(activities: Sequence[Evidence]) -> EvidenceColumns:
    """The fields of each user's :class:`Evidence`, read out into columns."""

    def column(name: str) -> Floats:
        return np.array([getattr(a, name) for a in activities], np.float64)

    reasons: dict[str | None, int] = {None: 0}
    rule = np.array(
        [reasons.setdefault(a.hard_rule_reason, len(reasons)) for a in activities], np.int64
    )
    return EvidenceColumns(
        **{name: column(name) for name in _COUNTERS},
        hard_rule_at=np.array(
            [math.nan if a.hard_rule_at is None else a.hard_rule_at for a in activities],
            np.float64,
        ),
        rule=rule,
        reasons=list(reasons),
        review_keys={i: a.review_keys for i, a in enumerate(activities) if a.reviews},
    )


_COUNTERS = (
    "actions", "repeats", "action_types", "max_explicit_in_second", "dwells", "short_dwells",
    "clicks", "unseen_clicks", "reviews", "reviews_with_links", "reviews_with_repeats",
    "max_text_copies",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Graded:
    """Each user's reputation, as :func:`recloop.core.spam.judge` gives it."""

    score: Floats
    rule: list[str | None]
    status: list[str]
    fired: Mapping[str, npt.NDArray[np.bool_]]
    """Each signal's column of which users it fired for, by name, in the order of
    :func:`recloop.core.spam.signals`."""

    def reason(self, i: int) -> str:
        """User ``i``'s reason, as a reliability record states it: the hard rule held, or
        the names of the signals that fired (``judge``'s verdict's, in its order).

        >>> g = Graded(np.zeros(2), [None, "flood"], ["blocked"] * 2,
        ...            {"a": np.array([True, True]), "b": np.array([False, True])})
        >>> g.reason(0), g.reason(1)
        ('a', 'flood')
        """
        return self.rule[i] or ", ".join(name for name, at in self.fired.items() if at[i])


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


FeatureColumns = tuple[npt.NDArray[np.int64], Mapping[str, npt.NDArray[Any]]]
"""The users (indices, ascending) with a rating profile, and their
:class:`~recloop.core.spam.ProfileFeatures`' fields by name
(:func:`recloop.core.spam_batch.profile_feature_columns`)."""


def _signals(
    evidence: EvidenceColumns,
    items: ItemStats,
    config: SpamConfig,
    texts: TextRegistry | None,
    norms: ProfileNorms | None,
    groups: Sequence[GroupReading | None],
    features: FeatureColumns,
    readings: Mapping[str, npt.NDArray[Any]],
) -> dict[str, Column]:
    """Every signal of :func:`recloop.core.spam.signals`, for every user."""
    c = config
    users = len(evidence.actions)
    out: dict[str, Column] = {}
    r = {name: np.asarray(readings[name], np.float64) for name in _READINGS}

    def column(name: str) -> Floats:
        return np.asarray(getattr(evidence, name), np.float64)

    # timing
    burst = column("max_explicit_in_second")
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
    actions = column("actions")
    out["hour_entropy"] = _graded(
        r["hour_entropy"],
        c.hour_entropy_max,
        c.hour_entropy_span,
        _grown(c.w_hour_entropy, actions, c.hour_half, c.hour_min_actions),
    )
    # behaviour
    catalogue = items.catalogue
    repeats = _excess_repeats(column("repeats"), actions, column("action_types"), catalogue)
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
    dwells = column("dwells")
    out["short_dwell"] = _graded(
        _shares(column("short_dwells"), dwells),
        c.short_dwell_max,
        c.short_dwell_span,
        _grown(c.w_short_dwell, dwells, c.dwell_half, c.dwell_min),
    )
    clicks = column("clicks")
    out["clicks_without_impressions"] = _graded(
        _shares(column("unseen_clicks"), clicks),
        c.unseen_clicks_max,
        c.unseen_clicks_span,
        _grown(c.w_unseen_clicks, clicks, c.clicks_half, c.clicks_min)
        if items.impressions_logged(c)
        else 0.0,
    )
    # review texts
    reviews = column("reviews")
    w = _grown(c.w_text, reviews, c.reviews_half, c.reviews_min)
    for name, counted, threshold in (
        ("review_links", "reviews_with_links", c.links_max),
        ("review_repeated_chars", "reviews_with_repeats", c.repeated_chars_max),
    ):
        kind = column(counted)
        weight, fired = _graded(_shares(kind, reviews), threshold, c.text_span, w)
        unsure = kind < c.reviews_min  # a share needs reviews_min reviews of the kind
        out[name] = (np.where(fired & unsure, w, weight), fired & ~unsure)
    copies = column("max_text_copies").copy()
    if texts is not None:
        for i, keys in evidence.review_keys.items():
            copies[i] = max([copies[i], *(texts.copies(key) for key in keys)])
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
    features: FeatureColumns,
    items: ItemStats,
    c: SpamConfig,
    norms: ProfileNorms | None,
    users: int,
) -> dict[str, Column]:
    """The rating-profile signals (``_profile_signals``) of every user; none for a user
    without a profile."""
    held, columns = features
    out: dict[str, Column] = {}
    if not len(held):
        nothing = (np.zeros(users), np.zeros(users, np.bool_))
        return dict.fromkeys(_PROFILE_SIGNALS, nothing)

    def col(name: str) -> Floats:
        return np.asarray(columns[name], np.float64)

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


def _feature_columns(features: Sequence[ProfileFeatures | None]) -> FeatureColumns:
    held = [i for i, f in enumerate(features) if f is not None]
    profiles = [features[i] for i in held]
    columns = {
        name: np.array([getattr(f, name) for f in profiles], np.float64)
        for name in ProfileFeatures.__dataclass_fields__
    }
    return np.array(held, np.int64), columns


_READINGS = tuple(ActivityReadings.__dataclass_fields__)


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
    :func:`recloop.core.spam_batch.judge_many` computes them): :func:`grade_columns` of
    the fields read out of each user's objects."""
    read = {name: np.array([getattr(x, name) for x in readings], np.float64) for name in _READINGS}
    found = _feature_columns(features)
    evidence = evidence_columns(activities)
    return grade_columns(evidence, items, config, now, texts, norms, groups, found, read)


def grade_columns(
    evidence: EvidenceColumns,
    items: ItemStats,
    config: SpamConfig,
    now: float,
    texts: TextRegistry | None,
    norms: ProfileNorms | None,
    groups: Sequence[GroupReading | None],
    features: FeatureColumns,
    readings: Mapping[str, npt.NDArray[Any]],
) -> Graded:
    """Each user's :func:`recloop.core.spam.judge` score, hard rule and status, from their
    evidence, profile features and readings as columns (``groups`` one per user)."""
    users = len(evidence.actions)
    found = _signals(evidence, items, config, texts, norms, groups, features, readings)
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
    with np.errstate(invalid="ignore"):
        held = now - evidence.hard_rule_at <= config.hard_rule_seconds  # NaN: none
    code = np.where(held, evidence.rule, 0)
    rules: list[str | None] = [None] * users
    for i in np.flatnonzero(code).tolist():
        rules[i] = evidence.reasons[code[i]]
    ruled = code != 0
    score = np.where(ruled, 0.0, score)
    status = np.where(
        ruled | (score < config.block_threshold),
        BLOCKED,
        np.where(score < config.suspect_threshold, SUSPECT, TRUSTED),
    ).tolist()
    return Graded(score, rules, status, {name: fired for name, (_, fired) in found.items()})
