"""Many users judged at once: :func:`judge_many`, with the rating-profile features
(:func:`profile_features_many`) and the activity's statistics
(:func:`activity_readings_many`) computed for all of them together.

:func:`recloop.core.spam.profile_features` reads one profile with a few dozen
numpy calls on arrays as long as the profile, so on the 5 to 50 ratings of a
typical profile its cost is numpy's fixed cost per call. Judging users one by
one, that is most of what the guard costs (docs/benchmarks.md). Here the
profiles are laid end to end and every per-profile mean, sum, extreme and
correlation is a segment reduction (``np.bincount`` by profile,
``np.maximum.reduceat``), so a batch of users costs about what one did.

The definitions are :class:`~recloop.core.spam.ProfileFeatures`' and
:class:`~recloop.core.spam.ActivityReadings`'; the one-user functions stay the
oracles, and differential tests require the same values (to rounding) on random
populations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from recloop.core.events import RATING_MAX, RATING_MIN
from recloop.core.spam import (
    _HOURS,
    ActivityReadings,
    Evidence,
    ItemStats,
    ProfileFeatures,
    SpamConfig,
    TextRegistry,
    UserActivity,
    Verdict,
    _end_bin,
    _other_mean,
    judge,
)
from recloop.core.spam_groups import GroupReading
from recloop.core.spam_norms import ProfileNorms

Floats = npt.NDArray[np.float64]


def profile_features_many(
    profiles: Sequence[Mapping[str, float]], items: ItemStats, config: SpamConfig
) -> list[ProfileFeatures | None]:
    """:func:`~recloop.core.spam.profile_features` of each profile (item → rating).

    >>> stats = ItemStats()
    >>> for item, values in {"a": [5, 4, 3], "b": [2, 2, 5], "c": [1, 3, 4, 4]}.items():
    ...     for v in values:
    ...         stats.add_rating(item, float(v))
    >>> one, none = profile_features_many([{"a": 5.0, "b": 5.0, "c": 1.0}, {}], stats,
    ...                                   SpamConfig())
    >>> round(one.rdma, 6), round(one.wdma, 6), one.fmtd, one.extremity, none
    (0.5, 0.152778, 4.0, 1.0, None)
    """
    out: list[ProfileFeatures | None] = [None] * len(profiles)
    held, columns = profile_feature_columns(profiles, items, config)
    for i, features in zip(held.tolist(), features_of(columns), strict=True):
        out[i] = features
    return out


_FEATURES = tuple(ProfileFeatures.__dataclass_fields__)


def features_of(
    columns: Mapping[str, npt.NDArray[Any]], at: npt.NDArray[np.int64] | None = None
) -> list[ProfileFeatures]:
    """The :class:`ProfileFeatures` of :func:`profile_feature_columns`' profiles (those
    at ``at`` in its columns; all of them by default)."""
    rows = zip(
        *((columns[name] if at is None else columns[name][at]).tolist() for name in _FEATURES),
        strict=True,
    )
    return [ProfileFeatures(*values) for values in rows]


def profile_feature_columns(
    profiles: Sequence[Mapping[str, float]], items: ItemStats, config: SpamConfig
) -> tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[Any]]]:
    """:func:`profile_features_many` as columns: which profiles are not empty (ascending
    indices), and for those one array per field of :class:`ProfileFeatures`, by name."""
    held = [i for i, p in enumerate(profiles) if p]
    if not held:
        return np.zeros(0, np.int64), {name: np.zeros(0) for name in _FEATURES}
    sizes = np.fromiter((len(profiles[i]) for i in held), np.int64, len(held))
    users = len(held)
    seg = np.repeat(np.arange(users), sizes)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    total = int(sizes.sum())
    names = [item for i in held for item in profiles[i]]
    r = np.fromiter((v for i in held for v in profiles[i].values()), np.float64, total)
    tallies = items.tallies(names)
    counts, sums, squares = tallies[:, 0], tallies[:, 1], tallies[:, 2]
    n_top, n_bottom = tallies[:, 3], tallies[:, 4]
    n = sizes.astype(np.float64)

    def seg_sum(x: Floats) -> Floats:
        summed: Floats = np.bincount(seg, weights=x, minlength=users).astype(np.float64)
        return summed

    def seg_mean(x: Floats) -> Floats:
        return seg_sum(x) / n

    unknown = counts < 1
    counts = np.where(unknown, 1.0, counts)
    sums = np.where(unknown, r, sums)
    squares = np.where(unknown, r * r, squares)
    glob = items.global_moments
    mu_g: Floats | float = glob.mean if glob.mean is not None else seg_mean(r)[seg]
    var_g = glob.variance if glob.variance is not None else 1.0
    var_g = max(var_g, config.variance_floor)
    k = config.item_prior_ratings
    floor = config.variance_floor

    means = sums / counts
    raw_var = np.where(
        counts > 1, np.maximum(squares - sums * sums / counts, 0.0) / np.maximum(counts - 1, 1), 0.0
    )
    spread_var = np.maximum(((counts - 1) * raw_var + k * var_g) / (counts - 1 + k), floor)
    abs_dev = np.abs(r - means)
    rdma = seg_mean(abs_dev / counts)
    wdma = seg_mean(abs_dev / counts**2)
    mad = np.sqrt(spread_var * 2.0 / math.pi)
    rdma_ratio = rdma / seg_mean(mad / counts)
    wdma_ratio = wdma / seg_mean(mad / counts**2)

    n_loo = counts - 1
    s_loo = sums - r
    q_loo = squares - r * r
    m_loo = (s_loo + k * mu_g) / (n_loo + k)
    v_raw = np.where(
        n_loo > 1, np.maximum(q_loo - s_loo * s_loo / np.maximum(n_loo, 1), 0.0), 0.0
    ) / np.maximum(n_loo - 1, 1)
    v_loo = np.maximum(
        (np.maximum(n_loo - 1, 0) * v_raw + k * var_g) / (np.maximum(n_loo - 1, 0) + k), floor
    )
    sq_dev = (r - m_loo) ** 2
    deviation = seg_mean(sq_dev / v_loo)

    # MeanVar and FMTD over the better of the two target partitions (the maximum's
    # first; the minimum's replaces it only with a strictly lower MeanVar)
    r_max = np.maximum.reduceat(r, starts)
    r_min = np.minimum.reduceat(r, starts)
    mean_var = np.full(users, math.nan)
    mean_var_ratio = np.full(users, math.nan)
    fmtd = np.full(users, math.nan)
    filler_n = np.zeros(users, np.int64)
    found = np.zeros(users, bool)
    for target in (r == r_max[seg], r == r_min[seg]):
        filler = (~target).astype(np.float64)
        f = seg_sum(filler)
        has = f > 0
        safe_f = np.where(has, f, 1.0)
        mv = seg_sum(sq_dev * filler) / safe_f
        usual = seg_sum(v_loo * filler) / safe_f  # > 0 where there is filler
        ratio = mv / np.where(has, usual, 1.0)
        t = n - f
        target_mean = seg_sum(r * (1.0 - filler)) / np.where(t > 0, t, 1.0)
        gap = np.abs(target_mean - seg_sum(r * filler) / safe_f)
        better = has & (~found | (mv < mean_var))
        found |= has
        mean_var = np.where(better, mv, mean_var)
        mean_var_ratio = np.where(better, ratio, mean_var_ratio)
        fmtd = np.where(better, gap, fmtd)
        filler_n = np.where(better, f.astype(np.int64), filler_n)

    extremity = seg_mean(((r <= RATING_MIN) | (r >= RATING_MAX)).astype(np.float64))
    # Pearson's correlation of the ratings with the leave-one-out item means
    r_c = r - seg_mean(r)[seg]
    m_c = m_loo - seg_mean(m_loo)[seg]
    m_max = np.maximum.reduceat(m_loo, starts)
    m_min = np.minimum.reduceat(m_loo, starts)
    varied = (n >= 3) & (r_max > r_min) & (m_max > m_min)
    cov = seg_sum(r_c * m_c)
    scale = np.sqrt(seg_sum(r_c * r_c) * seg_sum(m_c * m_c))
    agreement = np.where(varied, np.clip(cov / np.where(varied, scale, 1.0), -1.0, 1.0), math.nan)

    ranks = items.log_ranks(config.popularity_refresh, config.popularity_refresh_items)
    table, unranked = ranks.table, ranks.unranked
    log_rank = np.fromiter((table.get(i, unranked) for i in names), np.float64, total)
    mean_log_rank = seg_mean(log_rank)
    middle = ((r > RATING_MIN) & (r < RATING_MAX)).astype(np.float64)
    in_middle = seg_sum(middle)
    enough = in_middle >= np.maximum(config.profile_min, sizes // 2)
    middle_mean = seg_sum(log_rank * middle) / np.where(in_middle > 0, in_middle, 1.0)
    mean_log_rank = np.where(enough, np.maximum(mean_log_rank, middle_mean), mean_log_rank)
    popularity = np.full(users, math.nan)
    floors = ranks.floor
    fits = sizes <= len(floors) * config.popularity_max_share
    if fits.any():
        lowest = np.full(users, math.nan)
        lowest[fits] = floors[sizes[fits] - 1]
        ok = fits & (lowest < 0)
        popularity = np.where(ok, (mean_log_rank - lowest) / np.where(ok, -lowest, 1.0), math.nan)

    top_usual, bottom_usual = items.end_shares(
        config.popularity_refresh, config.popularity_refresh_items
    )
    focus = np.zeros(users)
    for at_end, ends, value, usual in (
        (r >= RATING_MAX, n_top, RATING_MAX, top_usual),
        (r <= RATING_MIN, n_bottom, RATING_MIN, bottom_usual),
    ):
        at_end &= (ends >= 1) & (counts >= 3)
        if not at_end.any():
            continue
        e, c, t = ends[at_end], counts[at_end], sums[at_end]
        b = _end_bin(_other_mean(t - value, c - 1, e - 1, value))
        listed = _end_bin(_other_mean(t, c, e, value)) == b
        hits = usual[0, b] - np.where(listed, e, 0.0)
        trials = usual[1, b] - np.where(listed, c, 0.0)
        floor_p = config.focus_share_floor
        p = np.clip(hits / np.maximum(trials, 1), floor_p, 1.0 - floor_p)
        p = np.where(trials > 0, p, floor_p)
        sd = np.sqrt(p * (1 - p) / (c - 1) + usual[2, b])
        np.fmax.at(focus, seg[at_end], ((e - 1) / (c - 1) - p) / sd)

    lengths = items.profile_lengths
    length_var = np.zeros(users)
    length_z = np.zeros(users)
    if lengths.n >= 2 and lengths.mean is not None and lengths.variance:
        spread = lengths.variance * (lengths.n - 1)
        length_var = np.abs(n - lengths.mean) / spread
        length_z = (n - lengths.mean) / math.sqrt(lengths.variance)

    fields = (
        sizes, rdma, wdma, rdma_ratio, wdma_ratio, deviation, mean_var, mean_var_ratio, fmtd,
        filler_n, extremity, agreement, popularity, focus, length_var, length_z,
    )  # fmt: skip
    return np.array(held, np.int64), dict(zip(_FEATURES, fields, strict=True))


def judge_many(
    activities: Sequence[Evidence],
    items: ItemStats,
    config: SpamConfig,
    now: float,
    texts: TextRegistry | None = None,
    norms: ProfileNorms | None = None,
    groups: Sequence[GroupReading | None] | None = None,
    readings: Sequence[ActivityReadings] | None = None,
) -> list[Verdict]:
    """:func:`~recloop.core.spam.judge` of each user (``groups`` and ``readings``
    parallel to ``activities``), their profiles' features and, unless given, their
    activities' readings computed together."""
    features = profile_features_many([a.ratings for a in activities], items, config)
    if readings is None:
        readings = activity_readings_many(
            [_reference(a) for a in activities], config.recent_actions, items.catalogue
        )
    found = groups if groups is not None else [None] * len(activities)
    return [
        judge(a, items, config, now, texts, norms, g, f, r)
        for a, g, f, r in zip(activities, found, features, readings, strict=True)
    ]


def _reference(activity: Evidence) -> UserActivity:
    """The reference object behind ``activity`` (a table's views come with readings)."""
    if not isinstance(activity, UserActivity):
        raise TypeError("pass the readings of an ActivityTable's views (ActivityTable.columns)")
    return activity


def activity_readings_many(
    activities: Sequence[UserActivity], recent: int, catalogue: int = 0
) -> list[ActivityReadings]:
    """:func:`~recloop.core.spam.activity_readings` of each user (``recent``: the
    config's ``recent_actions``): the latest actions of all of them laid end to end,
    each statistic a segment reduction.

    >>> a, b = UserActivity(), UserActivity()
    >>> for t in (0.0, 10.0, 20.0, 30.0):
    ...     a.observe("click", "i1", None, t)
    >>> first, empty = activity_readings_many([a, b], recent=256)
    >>> round(first.rate, 3), first.intervals, first.cv, first.burstiness, first.diversity
    (0.1, 3, 0.0, -1.0, 0.0)
    >>> empty.rate, empty.intervals, math.isnan(empty.cv), math.isnan(empty.hour_entropy)
    (0.0, 0, True, True)
    """
    users = len(activities)
    if users == 0:
        return []
    tails = [a._all_times[-recent:] for a in activities]
    latest = [_dominant_times(a, recent) for a in activities]
    items = [a.recent_items() for a in activities]
    return readings_of_segments(
        _flat(tails, np.float64),
        np.fromiter(map(len, tails), np.int64, users),
        _flat(latest, np.float64),
        np.fromiter(map(len, latest), np.int64, users),
        np.array([a.hours for a in activities], np.float64).reshape(users, _HOURS),
        _flat(items, np.int64),
        catalogue,
    )


def _flat(parts: Sequence[Sequence[float]] | Sequence[Sequence[int]], dtype: type) -> Any:
    """The parts laid end to end, as one array of ``dtype``."""
    size = sum(map(len, parts))
    return np.fromiter(itertools.chain.from_iterable(parts), dtype, size)


def readings_of_segments(
    times: Floats,
    rate_n: npt.NDArray[np.int64],
    dominant: Floats,
    sizes: npt.NDArray[np.int64],
    hours: npt.NDArray[Any],
    items: npt.NDArray[np.int64],
    catalogue: int = 0,
) -> list[ActivityReadings]:
    """:class:`ActivityReadings` of users whose latest actions' timestamps (``times``,
    ``rate_n`` each), dominant type's latest timestamps (``dominant``, ``sizes`` each)
    and latest actions' items' hashes (``items``, ``rate_n`` each) are laid end to end,
    with a ``(users, 24)`` histogram of their hours: each statistic a segment reduction."""
    return readings_of_columns(
        reading_columns(times, rate_n, dominant, sizes, hours, items, catalogue)
    )


def readings_of_columns(columns: Mapping[str, npt.NDArray[Any]]) -> list[ActivityReadings]:
    """Each user's :class:`ActivityReadings` out of :func:`reading_columns`."""
    rows = zip(*(columns[name].tolist() for name in _READINGS), strict=True)
    return [ActivityReadings(*values) for values in rows]


_READINGS = tuple(ActivityReadings.__dataclass_fields__)


def reading_columns(
    times: Floats,
    rate_n: npt.NDArray[np.int64],
    dominant: Floats,
    sizes: npt.NDArray[np.int64],
    hours: npt.NDArray[Any],
    items: npt.NDArray[np.int64],
    catalogue: int = 0,
) -> dict[str, npt.NDArray[Any]]:
    """:func:`readings_of_segments` as columns: one array per field of
    :class:`ActivityReadings`, by name."""
    users = len(rate_n)
    if users == 0:
        return {name: np.zeros(0) for name in _READINGS}
    # the rate: the distinct instants (arrivals) of the latest actions of any type, over
    # their span
    span = _segment_span(times, rate_n)
    arrivals = _distinct_per_segment(times, rate_n)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(arrivals < 2, 0.0, (arrivals - 1) / np.where(span > 0, span, 1.0))

    # inter-arrival times of each user's dominant type, sorted within the user, between
    # distinct instants
    seg = np.repeat(np.arange(users), sizes)
    stamps = dominant[np.lexsort((dominant, seg))]
    gaps = np.diff(stamps)
    keep = (seg[1:] == seg[:-1]) & (gaps > 0)
    gaps, gap_seg = gaps[keep], seg[1:][keep]
    k = np.bincount(gap_seg, minlength=users)
    safe_k = np.maximum(k, 1)
    mu = np.bincount(gap_seg, gaps, users) / safe_k
    sigma = np.sqrt(np.bincount(gap_seg, (gaps - mu[gap_seg]) ** 2, users) / safe_k)
    few = k < 2
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = np.where(few | (mu <= 0), math.nan, sigma / mu)
        burst = np.where(few | (sigma + mu <= 0), math.nan, (sigma - mu) / (sigma + mu))

    # the hours of day: a (users, 24) histogram
    hours = np.asarray(hours, np.float64)
    total = hours.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = hours / total[:, None]
        plogp = np.where(hours > 0, p * np.log(np.where(hours > 0, p, 1.0)), 0.0)
        filled = (hours > 0).sum(axis=1)
        h = -plogp.sum(axis=1) + (filled - 1) / (2.0 * total)
        entropy = np.where(total > 0, np.minimum(h / math.log(_HOURS), 1.0), math.nan)

    diversity = _diversity_of_segments(items, rate_n, catalogue)
    found = (rate, arrivals, k, cv, burst, entropy, diversity, rate_n)
    return dict(zip(_READINGS, found, strict=True))


def _distinct_per_segment(values: Floats, sizes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """How many distinct values each segment of ``values`` holds.

    >>> _distinct_per_segment(np.array([1.0, 1.0, 2.0, 5.0, 5.0]), np.array([3, 0, 2])).tolist()
    [2, 0, 1]
    """
    users = len(sizes)
    seg = np.repeat(np.arange(users), sizes)
    ordered = values[np.lexsort((values, seg))]
    new = np.ones(len(ordered), np.bool_)
    new[1:] = (seg[1:] != seg[:-1]) | (ordered[1:] != ordered[:-1])
    return np.bincount(seg[new], minlength=users)


def _segment_span(values: Floats, sizes: npt.NDArray[np.int64]) -> Floats:
    """max - min of each segment of ``values`` (0 for an empty one)."""
    span = np.zeros(len(sizes))
    held = sizes > 0
    if held.any():
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))[held]
        span[held] = np.maximum.reduceat(values, starts) - np.minimum.reduceat(values, starts)
    return span


def _dominant_times(activity: UserActivity, recent: int) -> Sequence[float]:
    """The latest timestamps of the user's dominant action type (as
    :meth:`UserActivity.intervals` chooses it)."""
    times = activity._times
    if not times:
        return []
    dominant = max(times, key=lambda name: (min(len(times[name]), recent), name))
    return times[dominant][-recent:]


def _diversity_of_segments(
    items: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64], catalogue: int
) -> Floats:
    """:func:`~recloop.core.spam.item_diversity` of each segment of ``items`` (hashes)."""
    users = len(lengths)
    codes = np.unique(items, return_inverse=True)[1].reshape(-1).astype(np.int64)
    width = max(int(codes.max()) + 1 if len(codes) else 1, 1)
    seg = np.repeat(np.arange(users), lengths)
    pairs, counts = np.unique(seg * width + codes, return_counts=True)
    owner = pairs // width
    p = counts / lengths[owner]
    entropy = np.bincount(owner, -p * np.log(p), users)
    size = lengths if catalogue <= 0 else np.minimum(lengths, catalogue)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.clip(entropy / np.log(np.where(size >= 2, size, 2)), 0.0, 1.0)
    result: Floats = np.where((lengths < 2) | (size < 2), math.nan, value)
    return result
