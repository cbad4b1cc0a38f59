"""The click model's features, one family at a time, and their matrix (core.features)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.errors import InvalidInput
from recloop.core.features import (
    ALGORITHMS,
    ATTRIBUTE_BUCKETS,
    DEVICES,
    FEATURE_NAMES,
    MAX_DAYS,
    RANK_NAMES,
    ContextFeatures,
    ItemColumns,
    ItemFeatures,
    UserFeatures,
    at_position,
    context_part,
    feature_matrix,
    features,
    to_matrix,
    user_part,
    write_features,
)
from recloop.core.hashing import hash_features
from recloop.core.segments import SEGMENTS

USER = UserFeatures("regular", 10, 3.0, 100.0)
ITEM = ItemFeatures(50, 0.1, 20.0, {"genre": "jazz"})
CONTEXT = ContextFeatures(1_767_225_600.0, "desktop")  # 2026-01-01 00:00 UTC, a Thursday


def row(
    user: UserFeatures = USER,
    item: ItemFeatures = ITEM,
    context: ContextFeatures = CONTEXT,
    affinity: float = 0.2,
    attribute_affinity: float = -0.1,
    position: int = 0,
    algorithm: str | None = "collaborative",
) -> dict[str, float]:
    return features(user, item, context, affinity, attribute_affinity, position, algorithm)


def group(values: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in values.items() if k.startswith(prefix)}


def test_keys_are_feature_names_in_order() -> None:
    assert list(row()) == list(FEATURE_NAMES)
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    # 5 segment + 1 + 2 + 1 + 1 + 2 + 2 + 16 + 4 + 4 devices + 2 + 2 + 5 algorithms
    # + 5 rank percentiles
    assert len(FEATURE_NAMES) == 52
    assert FEATURE_NAMES[-len(RANK_NAMES) :] == RANK_NAMES  # appended: old columns keep place


@pytest.mark.parametrize("segment", SEGMENTS)
def test_segment_one_hot(segment: str) -> None:
    values = group(row(user=UserFeatures(segment, 10, 1.0, 100.0)), "segment_")
    assert values == {f"segment_{s}": float(s == segment) for s in (*SEGMENTS, "other")}


def test_unknown_segment_is_other() -> None:
    values = group(row(user=UserFeatures("vip", 10, 1.0, 100.0)), "segment_")
    assert values["segment_other"] == 1.0
    assert sum(values.values()) == 1.0


def test_user_counts_recency_and_reliability() -> None:
    values = row(user=UserFeatures("power", 99, 12.5, 40.0))
    assert values["log_interactions"] == pytest.approx(math.log(100.0))
    assert (values["days_since_active"], values["days_since_active_missing"]) == (12.5, 0.0)
    assert values["reliability"] == 0.4


@pytest.mark.parametrize(
    ("days", "expected"),
    [(None, (0.0, 1.0)), (0.0, (0.0, 0.0)), (5_000.0, (MAX_DAYS, 0.0)), (-2.0, (0.0, 0.0))],
)
def test_days_since_active_capped_with_missing_indicator(
    days: float | None, expected: tuple[float, float]
) -> None:
    values = row(user=UserFeatures("new", 0, days, 100.0))
    assert (values["days_since_active"], values["days_since_active_missing"]) == expected


def test_item_popularity_ctr_and_age() -> None:
    values = row(item=ItemFeatures(0, 0.25, 1_000.0, {}))
    assert values["log_popularity"] == 0.0
    assert (values["ctr"], values["ctr_missing"]) == (0.25, 0.0)
    assert (values["age_days"], values["age_days_missing"]) == (MAX_DAYS, 0.0)
    unknown = row(item=ItemFeatures(7, None, None, {}))
    assert unknown["log_popularity"] == pytest.approx(math.log(8.0))
    assert (unknown["ctr"], unknown["ctr_missing"]) == (0.0, 1.0)
    assert (unknown["age_days"], unknown["age_days_missing"]) == (0.0, 1.0)


def test_attributes_are_the_signed_hash_buckets() -> None:
    attributes = {"genre": ["jazz", "soul"], "year": 1972, "live": True}
    values = group(row(item=ItemFeatures(1, None, None, attributes)), "attr_")
    assert list(values) == [f"attr_{i:02d}" for i in range(ATTRIBUTE_BUCKETS)]
    expected = hash_features(attributes, ATTRIBUTE_BUCKETS)
    assert expected is not None
    np.testing.assert_array_equal(list(values.values()), expected)
    assert any(v < 0 for v in values.values())  # signed: collisions do not only add up


def test_no_attributes_are_zeros() -> None:
    for attributes in ({}, {"note": None}):
        values = group(row(item=ItemFeatures(1, None, None, attributes)), "attr_")
        assert set(values.values()) == {0.0}


def clock_oracle(timestamp: float) -> tuple[float, int]:
    """Independent oracle: the UTC wall clock from datetime."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    hour = moment.hour + moment.minute / 60 + moment.second / 3600 + moment.microsecond / 3.6e9
    return hour, moment.weekday()


@pytest.mark.parametrize(
    "timestamp",
    [0.0, 1_767_225_600.0, 1_767_225_600.0 + 18.5 * 3600, 1_700_000_000.25, -86_400.0 * 3 - 60.0],
)
def test_hour_and_weekday_on_the_unit_circle(timestamp: float) -> None:
    hour, weekday = clock_oracle(timestamp)
    values = row(context=ContextFeatures(timestamp, None))
    assert values["hour_sin"] == pytest.approx(math.sin(2 * math.pi * hour / 24), abs=1e-9)
    assert values["hour_cos"] == pytest.approx(math.cos(2 * math.pi * hour / 24), abs=1e-9)
    assert values["weekday_sin"] == pytest.approx(math.sin(2 * math.pi * weekday / 7), abs=1e-12)
    assert values["weekday_cos"] == pytest.approx(math.cos(2 * math.pi * weekday / 7), abs=1e-12)


def test_midnight_thursday() -> None:
    values = row(context=ContextFeatures(0.0, None))  # 1970-01-01, a Thursday (3)
    assert (values["hour_sin"], values["hour_cos"]) == (0.0, 1.0)
    assert values["weekday_sin"] == pytest.approx(math.sin(6 * math.pi / 7))


@pytest.mark.parametrize(
    ("device", "column"),
    [
        ("desktop", "device_desktop"),
        (" Mobile ", "device_mobile"),
        ("TABLET", "device_tablet"),
        ("tv", "device_other"),
    ],
)
def test_device_one_hot(device: str, column: str) -> None:
    values = group(row(context=ContextFeatures(0.0, device)), "device_")
    assert values == {f"device_{d}": float(f"device_{d}" == column) for d in (*DEVICES, "other")}


@pytest.mark.parametrize("device", [None, "", "  "])
def test_no_device_is_all_zeros(device: str | None) -> None:
    assert set(group(row(context=ContextFeatures(0.0, device)), "device_").values()) == {0.0}


def test_affinities_pass_through() -> None:
    values = row(affinity=-0.75, attribute_affinity=0.5)
    assert (values["affinity"], values["attribute_affinity"]) == (-0.75, 0.5)


@pytest.mark.parametrize(("position", "inverse"), [(0, 1.0), (1, 0.5), (3, 0.25), (9, 0.1)])
def test_position_and_its_inverse(position: int, inverse: float) -> None:
    values = row(position=position)
    assert (values["position"], values["inverse_position"]) == (float(position), inverse)


@pytest.mark.parametrize(
    ("algorithm", "column"),
    [(a, f"algorithm_{a}") for a in ALGORITHMS] + [("als_v2", "algorithm_other")],
)
def test_algorithm_one_hot(algorithm: str, column: str) -> None:
    values = group(row(algorithm=algorithm), "algorithm_")
    assert values == {
        f"algorithm_{a}": float(f"algorithm_{a}" == column) for a in (*ALGORITHMS, "other")
    }


def test_no_algorithm_is_all_zeros() -> None:
    assert set(group(row(algorithm=None), "algorithm_").values()) == {0.0}


def test_rank_percentiles_are_each_algorithms_own_and_zero_without() -> None:
    ranked = features(USER, ITEM, CONTEXT, 0.0, 0.0, 0, "trending", [0.0, 0.5, 0.0, 1.0, 0.25])
    assert group(ranked, "rank_pct_") == {
        "rank_pct_collaborative": 0.0,
        "rank_pct_content_based": 0.5,
        "rank_pct_popularity": 0.0,
        "rank_pct_trending": 1.0,
        "rank_pct_other": 0.25,
    }
    assert set(group(row(), "rank_pct_").values()) == {0.0}  # none given: in no list


@pytest.mark.parametrize(
    ("rank_pct", "field"),
    [
        ([0.0, 0.5, 0.0, 1.0], "rank_pct"),
        ([0.0, 0.5, 0.0, 1.5, 0.0], "rank_pct_trending"),
        ([math.nan, 0.5, 0.0, 1.0, 0.0], "rank_pct_collaborative"),
        ([0.0, 0.5, 0.0, 1.0, -0.1], "rank_pct_other"),
    ],
)
def test_rank_percentiles_are_checked_in_both_forms(rank_pct: list[float], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        features(USER, ITEM, CONTEXT, 0.0, 0.0, 0, "trending", rank_pct)
    assert caught.value.field == field
    items = ItemColumns(np.zeros(2, dtype=np.int64), np.zeros(2), np.zeros(2), np.zeros((2, 16)))
    matrix = np.zeros((2, len(rank_pct)))
    matrix[1] = rank_pct
    with pytest.raises(InvalidInput) as caught:
        feature_matrix(USER, items, CONTEXT, [0.0] * 2, [0.0] * 2, [None] * 2, matrix)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"user": UserFeatures("new", -1, None, 100.0)}, "user.interactions"),
        ({"user": UserFeatures("new", 1, None, 101.0)}, "user.reliability"),
        ({"user": UserFeatures("new", 1, math.nan, 100.0)}, "user.days_since_active"),
        ({"item": ItemFeatures(-1, None, None, {})}, "item.popularity"),
        ({"item": ItemFeatures(1, 1.5, None, {})}, "item.ctr"),
        ({"item": ItemFeatures(1, None, math.inf, {})}, "item.age_days"),
        ({"context": ContextFeatures(math.nan, None)}, "context.timestamp"),
        ({"affinity": math.nan}, "affinity"),
        ({"attribute_affinity": -math.inf}, "attribute_affinity"),
        ({"position": -1}, "position"),
    ],
)
def test_invalid_inputs_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        row(**kwargs)
    assert caught.value.field == field


@settings(deadline=None, max_examples=60)
@given(
    segment=st.sampled_from([*SEGMENTS, "vip"]),
    interactions=st.integers(0, 10**9),
    days=st.one_of(st.none(), st.floats(-1e6, 1e6)),
    reliability=st.floats(0, 100),
    popularity=st.integers(0, 10**12),
    ctr=st.one_of(st.none(), st.floats(0, 1)),
    timestamp=st.floats(-1e10, 1e10),
    device=st.one_of(st.none(), st.text(max_size=8)),
    position=st.integers(0, 1000),
    algorithm=st.one_of(st.none(), st.sampled_from([*ALGORITHMS, "x"])),
)
def test_every_value_is_finite_and_one_hots_have_at_most_one(
    segment: str,
    interactions: int,
    days: float | None,
    reliability: float,
    popularity: int,
    ctr: float | None,
    timestamp: float,
    device: str | None,
    position: int,
    algorithm: str | None,
) -> None:
    values = features(
        UserFeatures(segment, interactions, days, reliability),
        ItemFeatures(popularity, ctr, days, {"genre": "jazz"}),
        ContextFeatures(timestamp, device),
        0.0,
        0.0,
        position,
        algorithm,
    )
    assert list(values) == list(FEATURE_NAMES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())
    assert sum(group(values, "segment_").values()) == 1.0
    assert sum(group(values, "device_").values()) == float(bool(device and device.strip()))
    assert sum(group(values, "algorithm_").values()) == float(algorithm is not None)


def test_at_position_changes_only_the_position_features() -> None:
    logged = row(position=3)
    top = at_position(logged, 0)
    assert top == row(position=0)
    assert logged["position"] == 3.0  # the logged row is not modified
    with pytest.raises(InvalidInput):
        at_position(logged, -1)


def test_to_matrix_follows_feature_names() -> None:
    rows = [row(position=0), row(position=2, algorithm=None)]
    matrix = to_matrix(rows)
    assert matrix.dtype == np.float64
    assert matrix.shape == (2, len(FEATURE_NAMES))
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(matrix[i], [r[name] for name in FEATURE_NAMES])


def test_to_matrix_missing_keys_are_nan_and_extra_keys_ignored() -> None:
    full = row()
    older = {k: v for k, v in full.items() if not k.startswith("device_")}  # logged before devices
    newer = {**full, "future_feature": 3.0}
    matrix = to_matrix([older, newer])
    devices = [FEATURE_NAMES.index(f"device_{d}") for d in (*DEVICES, "other")]
    assert np.isnan(matrix[0, devices]).all()
    assert not np.isnan(np.delete(matrix[0], devices)).any()
    np.testing.assert_array_equal(matrix[1], to_matrix([full])[0])


def test_to_matrix_aligns_to_an_older_models_columns() -> None:
    old_names = ("affinity", "ctr", "retired_feature", "position")
    matrix = to_matrix([row(affinity=0.3, position=2)], old_names)
    np.testing.assert_array_equal(matrix, [[0.3, 0.1, np.nan, 2.0]])


def test_to_matrix_of_nothing() -> None:
    assert to_matrix([]).shape == (0, len(FEATURE_NAMES))
    empty_row = to_matrix([{}], ("a", "b"))
    assert empty_row.shape == (1, 2)
    assert np.isnan(empty_row).all()


# -- every candidate at once: feature_matrix against features, row by row ---------------


@settings(deadline=None, max_examples=100)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 10**6),  # popularity
            st.one_of(st.none(), st.floats(0, 1)),  # ctr
            st.one_of(st.none(), st.floats(0, 1e5)),  # age in days
            st.floats(-1, 1),  # affinity
            st.floats(-1, 1),  # attribute affinity
            st.one_of(st.none(), st.sampled_from([*ALGORITHMS, "x", ""])),
            st.lists(
                st.one_of(st.just(0.0), st.floats(0, 1)), min_size=5, max_size=5
            ),  # rank percentiles
        ),
        max_size=12,
    )
)
def test_feature_matrix_rows_are_the_rows_of_features(rows: list[tuple[Any, ...]]) -> None:
    n = len(rows)
    hashed = np.arange(n * ATTRIBUTE_BUCKETS, dtype=np.float64).reshape(n, ATTRIBUTE_BUCKETS)
    items = ItemColumns(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([math.nan if r[1] is None else r[1] for r in rows], dtype=np.float64),
        np.array([math.nan if r[2] is None else r[2] for r in rows], dtype=np.float64),
        hashed,
    )
    ranks = np.array([r[6] for r in rows], dtype=np.float64).reshape(n, len(RANK_NAMES))
    matrix = feature_matrix(
        USER,
        items,
        CONTEXT,
        [r[3] for r in rows],
        [r[4] for r in rows],
        [r[5] for r in rows],
        ranks,
    )
    for i, (popularity, ctr, age, near, by_attributes, algorithm, pct) in enumerate(rows):
        expected = features(
            USER,
            ItemFeatures(popularity, ctr, age, {}),
            CONTEXT,
            near,
            by_attributes,
            0,
            algorithm,
            pct,
        )
        expected.update(zip(FEATURE_NAMES[14:30], hashed[i].tolist(), strict=True))
        # (numpy's log1p may differ from math's in the last bit: log_popularity to 1e-15)
        assert matrix[i].tolist() == pytest.approx(list(expected.values()), rel=1e-15, abs=0)


def former_feature_matrix(
    user: UserFeatures,
    items: ItemColumns,
    context: ContextFeatures,
    affinity: Any,
    attribute_affinity: Any,
    algorithms: list[str | None],
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``feature_matrix`` as it was before the shared row was written in one assignment (its
    checks left out: the inputs here are valid), the oracle of the test below."""
    n = len(algorithms)
    column = {name: i for i, name in enumerate(FEATURE_NAMES)}
    users = slice(0, column["log_popularity"])
    contexts = slice(column["hour_sin"], column["affinity"])
    out = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float64)
    shared = {**user_part(user), **context_part(context)}
    out[:, users] = [shared[name] for name in FEATURE_NAMES[users]]
    out[:, contexts] = [shared[name] for name in FEATURE_NAMES[contexts]]
    out[:, column["log_popularity"]] = np.log1p(items.popularity.astype(np.float64))
    ctr_missing = np.isnan(items.ctr)
    out[:, column["ctr"]] = np.where(ctr_missing, 0.0, items.ctr)
    out[:, column["ctr_missing"]] = ctr_missing
    age_missing = np.isnan(items.age_days)
    out[:, column["age_days"]] = np.where(age_missing, 0.0, np.clip(items.age_days, 0.0, MAX_DAYS))
    out[:, column["age_days_missing"]] = age_missing
    first = column["attr_00"]
    out[:, first : first + ATTRIBUTE_BUCKETS] = items.hashed
    out[:, column["affinity"]] = np.asarray(affinity, dtype=np.float64).reshape(n)
    out[:, column["attribute_affinity"]] = np.asarray(attribute_affinity, dtype=np.float64)
    out[:, column["inverse_position"]] = 1.0
    for r, a in enumerate(algorithms):
        if a is not None:
            name = f"algorithm_{a}" if a in ALGORITHMS else "algorithm_other"
            out[r, column[name]] = 1.0
    return out


@settings(deadline=None, max_examples=200)
@given(
    segment=st.sampled_from([*SEGMENTS, "elsewhere"]),
    interactions=st.integers(0, 10**9),
    days=st.one_of(st.none(), st.floats(-10, 1e4)),
    reliability=st.floats(0, 100),
    timestamp=st.floats(0, 4e9),
    device=st.one_of(st.none(), st.sampled_from([*DEVICES, "TV", " Mobile ", ""])),
    rows=st.lists(
        st.tuples(
            st.integers(0, 10**12),  # popularity
            st.one_of(st.just(math.nan), st.floats(0, 1)),  # ctr
            st.one_of(st.just(math.nan), st.floats(-1e3, 1e5)),  # age in days
            st.floats(-1, 1),  # affinity
            st.floats(-1, 1),  # attribute affinity
            st.one_of(st.none(), st.sampled_from([*ALGORITHMS, "x", ""])),
            st.lists(st.floats(-1, 1), min_size=ATTRIBUTE_BUCKETS, max_size=ATTRIBUTE_BUCKETS),
        ),
        max_size=30,
    ),
)
def test_feature_matrix_is_the_former_one_bit_for_bit(
    segment: str,
    interactions: int,
    days: float | None,
    reliability: float,
    timestamp: float,
    device: str | None,
    rows: list[tuple[Any, ...]],
) -> None:
    user = UserFeatures(segment, interactions, days, reliability)
    context = ContextFeatures(timestamp, device)
    n = len(rows)
    items = ItemColumns(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2] for r in rows], dtype=np.float64),
        np.array([r[6] for r in rows], dtype=np.float64).reshape(n, ATTRIBUTE_BUCKETS),
    )
    near, by_attributes = [r[3] for r in rows], [r[4] for r in rows]
    algorithms = [r[5] for r in rows]
    found = feature_matrix(user, items, context, near, by_attributes, algorithms)
    expected = former_feature_matrix(user, items, context, near, by_attributes, algorithms)
    assert found.dtype == expected.dtype and found.shape == expected.shape
    assert found.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    ("ctr", "age", "field", "value"),
    [
        ([0.5, math.nan, 1.5], [1.0, 2.0, 3.0], "item.ctr", "1.5"),
        ([math.nan, -math.inf, 2.0], [1.0, 2.0, 3.0], "item.ctr", "-inf"),
        ([math.nan, 0.5, 0.5], [1.0, math.nan, math.inf], "item.age_days", "inf"),
    ],
)
def test_feature_matrix_names_the_first_bad_item_value(
    ctr: list[float], age: list[float], field: str, value: str
) -> None:
    items = ItemColumns(
        np.zeros(3, dtype=np.int64), np.array(ctr), np.array(age), np.zeros((3, 16))
    )
    with pytest.raises(InvalidInput) as caught:
        feature_matrix(USER, items, CONTEXT, [0.0] * 3, [0.0] * 3, [None] * 3)
    assert caught.value.field == field
    assert str(caught.value).endswith(f"got {value}")


_AFFINITY_FIRST = ("affinity", *(n for n in FEATURE_NAMES if n != "affinity"))
"""The click model's columns as ``rank`` logs them (``services.ranking.LOGGED_NAMES[1:]``)."""


@settings(deadline=None, max_examples=200)
@given(
    segment=st.sampled_from([*SEGMENTS, "elsewhere"]),
    interactions=st.integers(0, 10**9),
    days=st.one_of(st.none(), st.floats(-10, 1e4)),
    reliability=st.floats(0, 100),
    timestamp=st.floats(0, 4e9),
    device=st.one_of(st.none(), st.sampled_from([*DEVICES, "TV", ""])),
    rows=st.lists(
        st.tuples(
            st.integers(0, 10**12),  # popularity
            st.one_of(st.just(math.nan), st.floats(0, 1)),  # ctr
            st.one_of(st.just(math.nan), st.floats(-1e3, 1e5)),  # age in days
            st.floats(-1, 1),  # affinity
            st.floats(-1, 1),  # attribute affinity
            st.sampled_from([*ALGORITHMS, "x", "y"]),  # the one proposing algorithm
            st.floats(0, 1, exclude_min=True),  # its rank percentile
            st.lists(st.floats(-1, 1), min_size=ATTRIBUTE_BUCKETS, max_size=ATTRIBUTE_BUCKETS),
        ),
        max_size=30,
    ),
)
def test_features_written_as_logged_are_the_float64_matrix_rounded(
    segment: str,
    interactions: int,
    days: float | None,
    reliability: float,
    timestamp: float,
    device: str | None,
    rows: list[tuple[Any, ...]],
) -> None:
    """``write_features`` into float32 columns in ``rank``'s logged order, the algorithms
    read from the rank percentiles or given, holds the bits that ``rank`` logged before:
    the float64 matrix's columns copied into float32 by slices."""
    user = UserFeatures(segment, interactions, days, reliability)
    context = ContextFeatures(timestamp, device)
    n = len(rows)
    items = ItemColumns(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2] for r in rows], dtype=np.float64),
        np.array([r[7] for r in rows], dtype=np.float64).reshape(n, ATTRIBUTE_BUCKETS),
    )
    near, by_attributes = [r[3] for r in rows], [r[4] for r in rows]
    algorithms = [r[5] for r in rows]
    ranks = np.zeros((n, len(RANK_NAMES)))
    for i, (a, pct) in enumerate(zip(algorithms, [r[6] for r in rows], strict=True)):
        ranks[i, ALGORITHMS.index(a) if a in ALGORITHMS else len(ALGORITHMS)] = pct
    matrix = feature_matrix(user, items, context, near, by_attributes, algorithms, ranks)
    at = FEATURE_NAMES.index("affinity")
    expected = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)  # rank's former slices
    expected[:, 0] = matrix[:, at]
    expected[:, 1 : 1 + at] = matrix[:, :at]
    expected[:, 1 + at :] = matrix[:, at + 1 :]
    for given_algorithms in (None, algorithms):
        logged = np.full((n, 1 + len(FEATURE_NAMES)), np.nan, dtype=np.float32)
        args = (user, items, context, near, by_attributes, given_algorithms, ranks)
        write_features(logged[:, 1:], _AFFINITY_FIRST, *args)
        assert np.isnan(logged[:, 0]).all()  # nothing written outside its columns
        assert logged[:, 1:].tobytes() == expected.tobytes()
        assert feature_matrix(*args).tobytes() == matrix.tobytes()


def test_write_features_refuses_a_layout_that_splits_a_block() -> None:
    items = ItemColumns(np.zeros(1, dtype=np.int64), np.zeros(1), np.zeros(1), np.zeros((1, 16)))
    names = list(FEATURE_NAMES)
    third, fourth = names.index("attr_03"), names.index("attr_04")
    names[third], names[fourth] = "attr_04", "attr_03"
    for columns, field in ((tuple(names), "names"), (FEATURE_NAMES[1:], "names")):
        out = np.zeros((1, len(columns)))
        with pytest.raises(InvalidInput) as caught:
            write_features(out, columns, USER, items, CONTEXT, [0.0], [0.0], [None])
        assert caught.value.field == field
    out = np.zeros((1, len(FEATURE_NAMES)))
    with pytest.raises(InvalidInput) as caught:  # the algorithms read from no percentiles
        write_features(out, FEATURE_NAMES, USER, items, CONTEXT, [0.0], [0.0], None)
    assert caught.value.field == "algorithms"
