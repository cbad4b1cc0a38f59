"""Feature hashing, unit vectors and items (core.hashing, core.items)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.errors import InvalidInput
from recloop.core.hashing import hash_features, unit_vector
from recloop.core.items import make_item

keys = st.text("abcdefgh._", min_size=1, max_size=6)
scalars = st.one_of(
    st.text(max_size=8),
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.none(),
)
attributes = st.recursive(
    st.dictionaries(keys, scalars, max_size=5),
    lambda inner: st.dictionaries(
        keys, st.one_of(scalars, inner, st.lists(st.one_of(scalars, inner), max_size=3)), max_size=4
    ),
    max_leaves=12,
)
# zero, or far enough from 0 and inf that squares neither underflow nor overflow
moderate = st.floats(-1e6, 1e6).map(lambda x: 0.0 if abs(x) < 1e-100 else x)
# strings and booleans only: every token weighs exactly +-1, so sums are exact
exact_attributes = st.dictionaries(
    keys, st.one_of(st.text(max_size=8), st.booleans(), st.lists(st.text(max_size=4))), max_size=6
)


def one_hot(token: str, dim: int) -> np.ndarray:
    """Independent oracle: BLAKE2b-64, little-endian; bucket = h % dim, sign from the top bit."""
    h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    v = np.zeros(dim)
    v[h % dim] = -1.0 if h >> 63 else 1.0
    return v


def normed(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# -- hash_features -------------------------------------------------------------


@settings(deadline=None)
@given(attrs=attributes, dim=st.integers(2, 128))
def test_hash_is_none_or_unit(attrs: dict[str, Any], dim: int) -> None:
    v = hash_features(attrs, dim)
    assert v is None or (v.shape == (dim,) and float(np.linalg.norm(v)) == pytest.approx(1.0))


@settings(deadline=None)
@given(attrs=exact_attributes, dim=st.integers(2, 128))
def test_hash_deterministic_and_key_order_free(attrs: dict[str, Any], dim: int) -> None:
    first = hash_features(attrs, dim)
    again = hash_features(dict(attrs), dim)
    reordered = hash_features(dict(reversed(list(attrs.items()))), dim)
    if first is None:
        assert again is None
        assert reordered is None
    else:
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(first, reordered)


def test_hash_key_order_free_with_numbers() -> None:
    # bug: three numbers in one bucket are summed in key order, so the last bit differs
    # ("a", "b", "e" fall in bucket 0 of 2; (0.1 + 0.2) + 0.3 != (0.3 + 0.2) + 0.1)
    forwards = hash_features({"a": 0.1, "b": 0.2, "e": 0.3, "c": 1.0}, 2)
    backwards = hash_features({"c": 1.0, "e": 0.3, "b": 0.2, "a": 0.1}, 2)
    assert forwards is not None
    assert backwards is not None
    np.testing.assert_array_equal(forwards, backwards)


@pytest.mark.parametrize(
    ("attrs", "token", "dim"),
    [
        ({"genre": "jazz"}, "genre=jazz", 16),
        ({"genre": "jazz"}, "genre=jazz", 64),
        ({"year": 1972}, "year", 64),
        ({"x": {"y": "z"}}, "x.y=z", 7),
    ],
)
def test_hash_pinned_to_blake2b(attrs: dict[str, Any], token: str, dim: int) -> None:
    np.testing.assert_array_equal(hash_features(attrs, dim), one_hot(token, dim))


@pytest.mark.parametrize(
    "attrs",
    [{}, {"a": None}, {"a": 0}, {"a": 0.0}, {"a": math.nan}, {"a": []}, {"a": {}}, {"a": object()}],
)
def test_hash_none_without_features(attrs: dict[str, Any]) -> None:
    assert hash_features(attrs, 16) is None


def test_different_attributes_give_different_vectors() -> None:
    vectors = [
        hash_features(a, 64)
        for a in (
            {"genre": "jazz"},
            {"genre": "rock"},
            {"mood": "jazz"},
            {"genre": "jazz", "year": 1},
        )
    ]
    for i, v in enumerate(vectors):
        for w in vectors[i + 1 :]:
            assert v is not None
            assert w is not None
            assert not np.array_equal(v, w)


def test_nested_mappings_and_lists_flatten_with_dotted_keys() -> None:
    dotted = hash_features({"a.b": "x"}, 32)
    assert dotted is not None
    np.testing.assert_array_equal(hash_features({"a": {"b": "x"}}, 32), dotted)
    np.testing.assert_array_equal(hash_features({"a": [{"b": "x"}]}, 32), dotted)
    np.testing.assert_array_equal(
        hash_features({"tags": ["x", "y"]}, 32),
        normed(one_hot("tags=x", 32) + one_hot("tags=y", 32)),
    )


def test_scalar_token_rules() -> None:
    np.testing.assert_array_equal(hash_features({"live": True}, 32), one_hot("live=true", 32))
    np.testing.assert_array_equal(hash_features({"year": 3.5}, 32), one_hot("year", 32))
    np.testing.assert_array_equal(hash_features({"year": -2}, 32), -one_hot("year", 32))
    np.testing.assert_allclose(
        hash_features({"year": 3.0, "live": True}, 32),
        normed(3.0 * one_hot("year", 32) + one_hot("live=true", 32)),
    )


def test_hash_large_number_attribute() -> None:
    # bug: np.linalg.norm overflows to inf for a finite weight of 1e200, so the item
    # is treated as carrying no feature (and numpy warns)
    v = hash_features({"genre": "jazz", "plays": 1e200}, 64)
    assert v is not None
    np.testing.assert_allclose(v, one_hot("plays", 64), atol=1e-12)


# -- unit_vector ---------------------------------------------------------------


def test_unit_vector_scales() -> None:
    np.testing.assert_allclose(unit_vector([3.0, 4.0], 2), [0.6, 0.8])
    np.testing.assert_allclose(unit_vector(np.array([0.0, -2.0, 0.0]), 3), [0.0, -1.0, 0.0])


@settings(deadline=None)
@given(values=st.lists(moderate, min_size=3, max_size=3))
def test_unit_vector_property(values: list[float]) -> None:
    if not any(values):
        with pytest.raises(InvalidInput):
            unit_vector(values, 3)
        return
    v = unit_vector(values, 3)
    assert float(np.linalg.norm(v)) == pytest.approx(1.0)
    np.testing.assert_allclose(v * np.linalg.norm(values), values, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ([1.0, 2.0], "exactly 3 numbers, got 2"),
        ([1.0, 2.0, 3.0, 4.0], "exactly 3 numbers, got 4"),
        ([1.0, math.nan, 0.0], "NaN or infinity"),
        ([1.0, 0.0, -math.inf], "NaN or infinity"),
        ([0.0, 0.0, 0.0], "all zeros"),
    ],
)
def test_unit_vector_refuses(values: list[float], words: str) -> None:
    with pytest.raises(InvalidInput, match=words) as info:
        unit_vector(values, 3, field="items.2.vector")
    assert info.value.field == "items.2.vector"


def test_unit_vector_default_field() -> None:
    with pytest.raises(InvalidInput) as info:
        unit_vector([0.0, 0.0], 2)
    assert info.value.field == "vector"


@pytest.mark.parametrize(
    ("values", "expected"),
    [([1e200, 1e200], [math.sqrt(0.5), math.sqrt(0.5)]), ([1e-200, 0.0], [1.0, 0.0])],
)
def test_unit_vector_extreme_finite_values(values: list[float], expected: list[float]) -> None:
    # bug: the norm overflows (1e200) or underflows (1e-200), and a finite non-zero vector
    # is refused as "must not be all zeros"
    np.testing.assert_allclose(unit_vector(values, 2), expected)


# -- make_item -----------------------------------------------------------------


def test_make_item_given_vector_wins() -> None:
    attrs = {"genre": "jazz"}
    item = make_item("a", [0.0, 2.0], attrs, 2, now=5.0)
    assert (item.item_id, item.vector_source, item.updated_at) == ("a", "given", 5.0)
    np.testing.assert_array_equal(item.vector, [0.0, 1.0])
    assert item.attributes == {"genre": "jazz"}
    attrs["genre"] = "rock"
    assert item.attributes == {"genre": "jazz"}  # copied


def test_make_item_hashed() -> None:
    item = make_item("b", None, {"genre": "jazz"}, 16, now=1.0)
    assert item.vector_source == "hashed"
    np.testing.assert_array_equal(item.vector, one_hot("genre=jazz", 16))


@pytest.mark.parametrize("attrs", [None, {}, {"note": None}])
def test_make_item_needs_vector_or_features(attrs: dict[str, Any] | None) -> None:
    with pytest.raises(InvalidInput, match="vector") as info:
        make_item("c", None, attrs, 8, now=0.0, field_prefix="items.3.")
    assert info.value.field == "items.3.attributes"


def test_make_item_bad_vector_names_field() -> None:
    with pytest.raises(InvalidInput) as info:
        make_item("d", [1.0, 2.0, 3.0], None, 2, now=0.0, field_prefix="items.0.")
    assert info.value.field == "items.0.vector"
