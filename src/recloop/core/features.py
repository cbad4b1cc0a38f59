"""The click model's features: one function for serving and for training.

``rank`` computes every candidate's row at once (:func:`feature_matrix`, the
same values as :func:`features` row by row) and logs the shown items' rows
with the impression, as float32 (``core.slates``); a model is served those
float32 values and training reads them back. Nothing is recomputed offline,
so what a model was trained on is exactly what it is served (no
training/serving skew).

Keys, in :data:`FEATURE_NAMES` order::

    segment_<s>, segment_other         one-hot of the user's segment (SEGMENTS)
    log_interactions                   log1p(interactions)
    days_since_active                  min(days, 365); 0 when missing
    days_since_active_missing          1 when the user has no event yet
    reliability                        reliability / 100 (the guard's 0..100)
    log_popularity                     log1p(popularity)
    ctr, ctr_missing                   the item's click-through rate; 0 and 1 when unknown
    age_days, age_days_missing         min(age, 365) in days; 0 and 1 when unknown
    attr_00 .. attr_15                 the item's attributes by signed feature hashing
                                       (hashing.hash_features: a unit vector; zeros
                                       without attributes)
    hour_sin, hour_cos                 hour of day (UTC, fractional) on the unit circle
    weekday_sin, weekday_cos           day of week (UTC, Monday = 0) on the unit circle
    device_<d>, device_other           one-hot of the device (DEVICES, lower-cased);
                                       all 0 when the context names none (or "")
    affinity                           cosine of the user's preference and item vectors
    attribute_affinity                 the same over hashed attributes
    position, inverse_position         the slot (0 = top) and 1 / (1 + position)
    algorithm_<a>, algorithm_other     one-hot of the proposing algorithm (ALGORITHMS);
                                       all 0 when there is none
    rank_pct_<a>, rank_pct_other       the item's rank percentile (n - r + 1) / n in each
                                       algorithm's own list (core.ranking.Fused.rank_pct;
                                       other: the best among other algorithms' lists);
                                       0 where that algorithm did not propose it

Durations are capped (a year) so that one stale record cannot stretch a
feature's range, and a missing value gets its own indicator rather than an
invented number. Every value is a finite float.

A model stores the feature names it was trained on; :func:`to_matrix` builds
its columns by name, so a model trained on an older key set keeps aligned
columns (a key it never saw is not asked for; a key a row lacks is NaN, which
LightGBM treats as missing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recloop.core.arrays import all_of, any_of, max_of, min_of
from recloop.core.errors import InvalidInput
from recloop.core.hashing import hash_features
from recloop.core.segments import SECONDS_PER_DAY, SEGMENTS

DEVICES: Final = ("desktop", "mobile", "tablet")
"""Devices with their own one-hot column; any other name is ``device_other``."""

ALGORITHMS: Final = ("collaborative", "content_based", "popularity", "trending")
"""The default algorithms (``config.DEFAULT_ALGORITHMS``); any other is ``algorithm_other``."""

ATTRIBUTE_BUCKETS: Final = 16
"""Dimension of the hashed attribute vector."""

MAX_DAYS: Final = 365.0
"""Cap of ``days_since_active`` and ``age_days``."""

_DAYS_PER_WEEK: Final = 7
_HOURS_PER_DAY: Final = 24.0
# 1970-01-01, day 0 of the epoch, was a Thursday (Monday = 0).
_EPOCH_WEEKDAY: Final = 3


@dataclass(frozen=True, slots=True)
class UserFeatures:
    """What is known about the user: segment, interaction count, recency, reliability (0..100)."""

    segment: str
    interactions: int
    days_since_active: float | None
    reliability: float = 100.0


@dataclass(frozen=True, slots=True)
class ItemFeatures:
    """What is known about the item: popularity (a count), CTR, age in days, attributes."""

    popularity: int
    ctr: float | None
    age_days: float | None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContextFeatures:
    """The request: when (seconds since the epoch) and on which device, if known."""

    timestamp: float
    device: str | None = None


RANK_NAMES: Final = (*(f"rank_pct_{a}" for a in ALGORITHMS), "rank_pct_other")
"""Each algorithm's rank percentile of the item (``core.ranking.Fused.rank_pct``'s columns)."""


def _names() -> tuple[str, ...]:
    return (
        *(f"segment_{s}" for s in SEGMENTS),
        "segment_other",
        "log_interactions",
        "days_since_active",
        "days_since_active_missing",
        "reliability",
        "log_popularity",
        "ctr",
        "ctr_missing",
        "age_days",
        "age_days_missing",
        *(f"attr_{i:02d}" for i in range(ATTRIBUTE_BUCKETS)),
        "hour_sin",
        "hour_cos",
        "weekday_sin",
        "weekday_cos",
        *(f"device_{d}" for d in DEVICES),
        "device_other",
        "affinity",
        "attribute_affinity",
        "position",
        "inverse_position",
        *(f"algorithm_{a}" for a in ALGORITHMS),
        "algorithm_other",
        *RANK_NAMES,
    )


FEATURE_NAMES: Final[tuple[str, ...]] = _names()
"""The keys of :func:`features`, in order (see the module docstring)."""


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidInput(name, f"must be finite, got {value}")
    return float(value)


def _one_hot(prefix: str, known: Sequence[str], value: str | None) -> dict[str, float]:
    """``prefix_<k>`` for each known value plus ``prefix_other``; all 0 for None."""
    out = {f"{prefix}_{k}": 0.0 for k in known}
    out[f"{prefix}_other"] = 0.0
    if value is not None:
        out[f"{prefix}_{value}" if value in known else f"{prefix}_other"] = 1.0
    return out


def _capped(name: str, value: float | None) -> tuple[float, float]:
    """(value capped to [0, MAX_DAYS], missing indicator); negative (clock skew) counts as 0."""
    if value is None:
        return 0.0, 1.0
    return min(max(_finite(name, value), 0.0), MAX_DAYS), 0.0


def _cycle(value: float, period: float) -> tuple[float, float]:
    angle = 2.0 * math.pi * value / period
    return math.sin(angle), math.cos(angle)


def features(
    user: UserFeatures,
    item: ItemFeatures,
    context: ContextFeatures,
    affinity: float,
    attribute_affinity: float,
    position: int,
    algorithm: str | None,
    rank_pct: Sequence[float] | None = None,
) -> dict[str, float]:
    """The feature mapping of one (user, item, context) shown at ``position``.

    Keys are :data:`FEATURE_NAMES`, in that order; the module docstring says
    what each one is. ``algorithm`` is the algorithm that proposed the item
    (the first, when several did); None when none did. ``rank_pct``: the item's
    row of ``core.ranking.Fused.rank_pct`` (:data:`RANK_NAMES` order); None: no
    algorithm's list holds it (all 0).

    Raises
    ------
    InvalidInput
        for a negative count or position, a CTR outside [0, 1], a reliability
        outside [0, 100], a rank percentile outside [0, 1] or any non-finite number.

    >>> row = features(
    ...     UserFeatures("regular", 20, 2.0, 80.0),
    ...     ItemFeatures(99, None, 400.0, {"genre": "jazz"}),
    ...     ContextFeatures(timestamp=6 * 3600.0, device="Mobile"),  # Thursday 06:00 UTC
    ...     affinity=0.5, attribute_affinity=0.0, position=1, algorithm="trending",
    ... )
    >>> list(row) == list(FEATURE_NAMES)
    True
    >>> row["segment_regular"], row["reliability"], round(row["log_popularity"], 4)
    (1.0, 0.8, 4.6052)
    >>> row["ctr"], row["ctr_missing"], row["age_days"], row["age_days_missing"]
    (0.0, 1.0, 365.0, 0.0)
    >>> round(row["hour_sin"], 12), round(row["hour_cos"], 12), row["device_mobile"]
    (1.0, 0.0, 1.0)
    >>> row["position"], row["inverse_position"], row["algorithm_trending"]
    (1.0, 0.5, 1.0)
    """
    return combine(
        user_part(user),
        item_part(item),
        context_part(context),
        affinity,
        attribute_affinity,
        position,
        algorithm,
        rank_pct,
    )


# The parts, for callers that score many items for one user and request (rank): the
# user's and the context's features are computed once, each item's hashed attributes
# can be cached (they change only when the item is registered again).


def user_part(user: UserFeatures) -> dict[str, float]:
    """The user's features (the first keys of :data:`FEATURE_NAMES`)."""
    if user.interactions < 0:
        raise InvalidInput("user.interactions", f"must be >= 0, got {user.interactions}")
    if not 0.0 <= _finite("user.reliability", user.reliability) <= 100.0:
        raise InvalidInput("user.reliability", f"must be in [0, 100], got {user.reliability}")
    row = _one_hot("segment", SEGMENTS, user.segment)
    row["log_interactions"] = math.log1p(user.interactions)
    row["days_since_active"], row["days_since_active_missing"] = _capped(
        "user.days_since_active", user.days_since_active
    )
    row["reliability"] = user.reliability / 100.0
    return row


def hashed_attributes(attributes: Mapping[str, Any]) -> list[float]:
    """An item's attribute buckets (``attr_00`` ...), all 0 without attributes."""
    hashed = hash_features(attributes, ATTRIBUTE_BUCKETS)
    return [0.0] * ATTRIBUTE_BUCKETS if hashed is None else hashed.tolist()


def item_part(item: ItemFeatures, hashed: Sequence[float] | None = None) -> dict[str, float]:
    """The item's features; ``hashed`` is :func:`hashed_attributes` of its attributes, if
    the caller has it already."""
    if item.popularity < 0:
        raise InvalidInput("item.popularity", f"must be >= 0, got {item.popularity}")
    if item.ctr is not None and not 0.0 <= _finite("item.ctr", item.ctr) <= 1.0:
        raise InvalidInput("item.ctr", f"must be in [0, 1], got {item.ctr}")
    row: dict[str, float] = {"log_popularity": math.log1p(item.popularity)}
    row["ctr"], row["ctr_missing"] = (0.0, 1.0) if item.ctr is None else (float(item.ctr), 0.0)
    row["age_days"], row["age_days_missing"] = _capped("item.age_days", item.age_days)
    buckets = hashed_attributes(item.attributes) if hashed is None else hashed
    for name, value in zip(_ATTRIBUTE_NAMES, buckets, strict=True):
        row[name] = value
    return row


def context_part(context: ContextFeatures) -> dict[str, float]:
    """The request's features: time of day and week, device."""
    timestamp = _finite("context.timestamp", context.timestamp)
    days = math.floor(timestamp / SECONDS_PER_DAY)
    hour = (timestamp - days * SECONDS_PER_DAY) / 3600.0
    row: dict[str, float] = {}
    row["hour_sin"], row["hour_cos"] = _cycle(hour, _HOURS_PER_DAY)
    weekday = (days + _EPOCH_WEEKDAY) % _DAYS_PER_WEEK
    row["weekday_sin"], row["weekday_cos"] = _cycle(weekday, _DAYS_PER_WEEK)
    device = (context.device or "").strip().lower() or None
    row.update(_one_hot("device", DEVICES, device))
    return row


def combine(
    user: Mapping[str, float],
    item: Mapping[str, float],
    context: Mapping[str, float],
    affinity: float,
    attribute_affinity: float,
    position: int,
    algorithm: str | None,
    rank_pct: Sequence[float] | None = None,
) -> dict[str, float]:
    """The full row from the parts and the interaction features, in :data:`FEATURE_NAMES`
    order."""
    if position < 0:
        raise InvalidInput("position", f"must be >= 0, got {position}")
    percentiles = _NO_RANKS if rank_pct is None else tuple(map(float, rank_pct))
    if len(percentiles) != len(RANK_NAMES):
        raise InvalidInput("rank_pct", f"has {len(percentiles)} values, not {len(RANK_NAMES)}")
    for name, value in zip(RANK_NAMES, percentiles, strict=True):
        if not 0.0 <= value <= 1.0:  # NaN is neither
            raise InvalidInput(name, f"must be in [0, 1], got {value}")
    row = {**user, **item, **context}
    row["affinity"] = _finite("affinity", affinity)
    row["attribute_affinity"] = _finite("attribute_affinity", attribute_affinity)
    row["position"] = float(position)
    row["inverse_position"] = 1.0 / (1.0 + position)
    row.update(_ALGORITHM_ROWS.get(algorithm) or _one_hot("algorithm", ALGORITHMS, algorithm))
    row.update(zip(RANK_NAMES, percentiles, strict=True))
    return row


_ATTRIBUTE_NAMES: Final = tuple(f"attr_{i:02d}" for i in range(ATTRIBUTE_BUCKETS))
_ALGORITHM_ROWS: Final = {a: _one_hot("algorithm", ALGORITHMS, a) for a in (*ALGORITHMS, None)}
_NO_RANKS: Final = (0.0,) * len(RANK_NAMES)


def at_position(row: Mapping[str, float], position: int) -> dict[str, float]:
    """``row`` with its position features set to ``position``: the same item shown elsewhere.

    Off-policy evaluation asks how an item would do in the top slot although
    it was logged lower; this rewrites only ``position`` and ``inverse_position``.

    >>> at_position({"affinity": 0.3, "position": 4.0, "inverse_position": 0.2}, 0)
    {'affinity': 0.3, 'position': 0.0, 'inverse_position': 1.0}
    """
    if position < 0:
        raise InvalidInput("position", f"must be >= 0, got {position}")
    return {**row, "position": float(position), "inverse_position": 1.0 / (1.0 + position)}


def to_matrix(
    rows: Sequence[Mapping[str, float]], names: Sequence[str] = FEATURE_NAMES
) -> npt.NDArray[np.float64]:
    """A float64 matrix, one row per mapping, one column per name in ``names``.

    A key a row lacks is NaN; keys not in ``names`` are ignored. Pass a
    model's own feature names to get the columns it was trained on.

    >>> to_matrix([{"ctr": 0.1, "affinity": 0.5}, {"affinity": -1.0, "extra": 7.0}],
    ...           names=("affinity", "ctr")).tolist()
    [[0.5, 0.1], [-1.0, nan]]
    >>> to_matrix([]).shape == (0, len(FEATURE_NAMES))
    True
    """
    nan = math.nan
    values = [[nan if (v := row.get(name)) is None else v for name in names] for row in rows]
    return np.array(values, dtype=np.float64).reshape(len(rows), len(names))


# -- every candidate at once ---------------------------------------------------------

COLUMN: Final[dict[str, int]] = {name: i for i, name in enumerate(FEATURE_NAMES)}
"""Each feature's column in :data:`FEATURE_NAMES` order."""


@dataclass(frozen=True, slots=True)
class ItemColumns:
    """What is known about many items, one entry per candidate.

    ``ctr`` and ``age_days`` are NaN where unknown; ``hashed`` holds each item's
    :func:`hashed_attributes` (one row per item, :data:`ATTRIBUTE_BUCKETS` columns).
    """

    popularity: npt.NDArray[np.int64]
    ctr: npt.NDArray[np.float64]
    age_days: npt.NDArray[np.float64]
    hashed: npt.NDArray[np.float64]


def _check_items(items: ItemColumns, n: int) -> None:
    for name in ("popularity", "ctr", "age_days"):
        if len(getattr(items, name)) != n:
            raise InvalidInput(f"item.{name}", f"has {len(getattr(items, name))} values, not {n}")
    if items.hashed.shape != (n, ATTRIBUTE_BUCKETS):
        raise InvalidInput("item.hashed", f"has shape {items.hashed.shape}, not ({n}, 16)")
    # (core.arrays: the reductions' values without numpy's Python wrappers)
    if n and int(min_of(items.popularity)) < 0:
        raise InvalidInput("item.popularity", f"must be >= 0, got {int(items.popularity.min())}")
    outside = (items.ctr < 0.0) | (items.ctr > 1.0)  # NaN (unknown) is neither; ±inf is
    if any_of(outside):
        raise InvalidInput("item.ctr", f"must be in [0, 1], got {items.ctr[outside][0]}")
    infinite = np.isinf(items.age_days)
    if any_of(infinite):
        raise InvalidInput("item.age_days", f"must be finite, got {items.age_days[infinite][0]}")


def feature_matrix(
    user: UserFeatures,
    items: ItemColumns,
    context: ContextFeatures,
    affinity: npt.ArrayLike,
    attribute_affinity: npt.ArrayLike,
    algorithms: Sequence[str | None] | None,
    rank_pct: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """:func:`features` of every candidate at once, shown at position 0: one row per item,
    :data:`FEATURE_NAMES` columns (float64).

    Row ``i`` equals ``features(user, item_i, context, affinity[i], attribute_affinity[i],
    0, algorithms[i], rank_pct[i])`` (``rank_pct``: ``core.ranking.Fused.rank_pct``, one
    row per item; None: all 0) (tests/unit/test_features.py compares them on random inputs;
    ``log_popularity`` may differ in the last bit, numpy's ``log1p`` against ``math``'s);
    :func:`set_positions` moves rows to their slots. ``algorithms`` None: each item was
    proposed by exactly one algorithm, the one whose column of ``rank_pct`` is not 0
    (``core.ranking.Fused.single``), which then names it.

    Raises
    ------
    InvalidInput
        as :func:`features` does, naming the same field.

    >>> m = feature_matrix(
    ...     UserFeatures("regular", 20, 2.0, 80.0),
    ...     ItemColumns(np.array([99, 0]), np.array([np.nan, 0.25]), np.array([400.0, np.nan]),
    ...                 np.zeros((2, ATTRIBUTE_BUCKETS))),
    ...     ContextFeatures(timestamp=6 * 3600.0, device="Mobile"),
    ...     affinity=[0.5, -0.5], attribute_affinity=[0.0, 0.0], algorithms=["trending", None],
    ... )
    >>> m.shape == (2, len(FEATURE_NAMES))
    True
    >>> m[:, COLUMN["ctr"]].tolist(), m[:, COLUMN["age_days_missing"]].tolist()
    ([0.0, 0.25], [0.0, 1.0])
    >>> m[:, COLUMN["algorithm_trending"]].tolist(), m[:, COLUMN["reliability"]].tolist()
    ([1.0, 0.0], [0.8, 0.8])
    """
    n = len(items.popularity) if algorithms is None else len(algorithms)
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    write_features(
        out, FEATURE_NAMES, user, items, context, affinity, attribute_affinity, algorithms, rank_pct
    )
    return out


def write_features(
    out: npt.NDArray[np.floating[Any]],
    names: tuple[str, ...],
    user: UserFeatures,
    items: ItemColumns,
    context: ContextFeatures,
    affinity: npt.ArrayLike,
    attribute_affinity: npt.ArrayLike,
    algorithms: Sequence[str | None] | None,
    rank_pct: npt.ArrayLike | None = None,
) -> None:
    """:func:`feature_matrix` written into ``out``, whose columns are ``names``
    (:data:`FEATURE_NAMES` in some order, each block of ``attr_*``, ``algorithm_*`` and
    ``rank_pct_*`` columns kept together and in order): what ``rank`` logs is float32 in
    its own column order, and each value is rounded to it once, as it is written, with the
    bits of the float64 matrix's values rounded (tests/unit/test_features.py)."""
    layout = _layout(names)
    at = layout.column
    n = out.shape[0]
    if out.shape != (n, len(names)):
        raise InvalidInput("out", f"has shape {out.shape}, not ({n}, {len(names)})")
    if algorithms is not None and len(algorithms) != n:
        raise InvalidInput("algorithms", f"has {len(algorithms)} values, not {n}")
    if algorithms is None and rank_pct is None:
        raise InvalidInput("algorithms", "are read from rank_pct, which is missing")
    _check_items(items, n)
    near = np.asarray(affinity, dtype=np.float64).reshape(n)
    by_attributes = np.asarray(attribute_affinity, dtype=np.float64).reshape(n)
    if not all_of(np.isfinite(near)):
        raise InvalidInput("affinity", f"must be finite, got {near[~np.isfinite(near)][0]}")
    if not all_of(np.isfinite(by_attributes)):
        bad = by_attributes[~np.isfinite(by_attributes)][0]
        raise InvalidInput("attribute_affinity", f"must be finite, got {bad}")
    ranks = None if rank_pct is None else _rank_columns(rank_pct, n)
    # the user's and the request's columns, every row
    out[:] = layout.reorder(_shared_row(user, context))
    np.log1p(items.popularity, out=out[:, at["log_popularity"]], dtype=np.float64)
    ctr_missing = np.isnan(items.ctr)
    out[:, at["ctr"]] = np.where(ctr_missing, 0.0, items.ctr)
    out[:, at["ctr_missing"]] = ctr_missing
    age_missing = np.isnan(items.age_days)
    age = items.age_days.clip(0.0, MAX_DAYS)
    out[:, at["age_days"]] = np.where(age_missing, 0.0, age)
    out[:, at["age_days_missing"]] = age_missing
    first = at["attr_00"]
    out[:, first : first + ATTRIBUTE_BUCKETS] = items.hashed
    out[:, at["affinity"]] = near
    out[:, at["attribute_affinity"]] = by_attributes
    hot = at[_ALGORITHM_NAMES[0]]
    if algorithms is not None:
        # each proposing algorithm's column, row by row (the columns by a C-level look-up;
        # -1 where none proposed the item)
        which = np.fromiter(map(_HOT_COLUMN.get, algorithms, repeat(_OTHER_COLUMN)), np.intp, n)
        (rows,) = (which >= 0).nonzero()
        out[rows, hot + which[rows]] = 1.0
    elif ranks is not None:  # one algorithm per item: its one-hot is its nonzero rank cell
        out[:, hot : hot + len(_ALGORITHM_NAMES)] = ranks > 0.0
    if ranks is not None:
        ranked = at[RANK_NAMES[0]]
        out[:, ranked : ranked + len(RANK_NAMES)] = ranks


_ALGORITHM_NAMES: Final = (*(f"algorithm_{a}" for a in ALGORITHMS), "algorithm_other")


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where a matrix with columns in another order than :data:`FEATURE_NAMES` holds each
    feature."""

    column: dict[str, int]
    reorder: Callable[[list[float]], Sequence[float]]
    """A row in :data:`FEATURE_NAMES` order, put in the matrix's."""


@lru_cache(maxsize=8)
def _layout(names: tuple[str, ...]) -> _Layout:
    """The :class:`_Layout` of columns ``names`` (a request's matrix has one of a few)."""
    if sorted(names) != sorted(FEATURE_NAMES):
        raise InvalidInput("names", f"must be FEATURE_NAMES in some order, got {names}")
    column = {name: i for i, name in enumerate(names)}
    for block in (_ATTRIBUTE_NAMES, _ALGORITHM_NAMES, RANK_NAMES):
        start = column[block[0]]
        if [column[name] for name in block] != list(range(start, start + len(block))):
            raise InvalidInput("names", f"must keep {block[0]} .. {block[-1]} together")
    if names == FEATURE_NAMES:
        return _Layout(column, _same)
    return _Layout(column, itemgetter(*(COLUMN[name] for name in names)))


def _same(row: list[float]) -> list[float]:
    return row


def _rank_columns(rank_pct: npt.ArrayLike, n: int) -> npt.NDArray[np.float64]:
    """``rank_pct`` as float64, checked: ``n`` rows of :data:`RANK_NAMES`, each in [0, 1]."""
    values = np.asarray(rank_pct, dtype=np.float64)
    if values.shape != (n, len(RANK_NAMES)):
        raise InvalidInput("rank_pct", f"has shape {values.shape}, not ({n}, {len(RANK_NAMES)})")
    # the extremes first (a NaN propagates to both and fails either test): two reductions
    if n and not (min_of(values, axis=None) >= 0.0 and max_of(values, axis=None) <= 1.0):
        inside = (values >= 0.0) & (values <= 1.0)  # NaN is neither
        row, column = np.argwhere(~inside)[0].tolist()
        raise InvalidInput(RANK_NAMES[column], f"must be in [0, 1], got {values[row, column]}")
    return values


def _shared_row(user: UserFeatures, context: ContextFeatures) -> list[float]:
    """A row of :data:`FEATURE_NAMES` with the user's and the context's features, shown at
    position 0 (``inverse_position`` 1) and 0 in every item column.

    >>> row = _shared_row(UserFeatures("new", 0, None), ContextFeatures(0.0))
    >>> row[COLUMN["segment_new"]], row[COLUMN["inverse_position"]], row[COLUMN["ctr"]]
    (1.0, 1.0, 0.0)
    """
    return list({**_ITEM_ROW, **user_part(user), **context_part(context)}.values())


_ITEM_ROW: Final = {name: 1.0 if name == "inverse_position" else 0.0 for name in FEATURE_NAMES}
"""A row's values before the user's and the context's are written over them (the dict
keeps :data:`FEATURE_NAMES` order)."""

_OTHER_COLUMN: Final = len(ALGORITHMS)
_HOT_COLUMN: Final[dict[str | None, int]] = {
    None: -1,  # no algorithm proposed the item: no column
    **{a: i for i, a in enumerate(ALGORITHMS)},
}
"""Each algorithm's one-hot column, counted from ``algorithm_<first>`` (any other name:
:data:`_OTHER_COLUMN`)."""


def set_positions(matrix: npt.NDArray[np.floating[Any]], names: Sequence[str]) -> None:
    """Write each row's slot (row ``i`` shown at position ``i``) into the ``position`` and
    ``inverse_position`` columns of ``matrix`` (columns named by ``names``), in place;
    a feature set without them is left as it is.

    >>> m = np.zeros((3, 2))
    >>> set_positions(m, ("position", "inverse_position"))
    >>> m.tolist()
    [[0.0, 1.0], [1.0, 0.5], [2.0, 0.3333333333333333]]
    """
    columns = _position_columns(tuple(names))
    if columns is None:
        return
    positions, inverse = _slot_values(matrix.shape[0])
    matrix[:, columns[0]] = positions
    matrix[:, columns[1]] = inverse


@lru_cache(maxsize=16)
def _position_columns(names: tuple[str, ...]) -> tuple[int, int] | None:
    """The ``position`` and ``inverse_position`` columns of a feature set (None: not both
    there); a request's slate names one of a few sets."""
    if "position" not in names or "inverse_position" not in names:
        return None
    return names.index("position"), names.index("inverse_position")


@lru_cache(maxsize=64)
def _slot_values(n: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The ``position`` and ``inverse_position`` values of ``n`` slots (read-only): the
    same for every slate of ``n`` shown items."""
    positions = np.arange(n, dtype=np.float64)
    inverse = 1.0 / (1.0 + positions)
    positions.flags.writeable = inverse.flags.writeable = False
    return positions, inverse


def columns_of(
    matrix: npt.NDArray[np.floating[Any]], names: Sequence[str], wanted: Sequence[str]
) -> npt.NDArray[np.float64]:
    """The columns ``wanted`` of ``matrix`` (whose columns are ``names``), as float64; a
    name ``matrix`` lacks is a NaN column (LightGBM's missing), as in :func:`to_matrix`.

    >>> columns_of(np.array([[1.0, 2.0]]), ("a", "b"), ("b", "c", "a")).tolist()
    [[2.0, nan, 1.0]]
    """
    index = {name: i for i, name in enumerate(names)}
    out = np.full((matrix.shape[0], len(wanted)), np.nan, dtype=np.float64)
    for j, name in enumerate(wanted):
        i = index.get(name)
        if i is not None:
            out[:, j] = matrix[:, i]
    return out
