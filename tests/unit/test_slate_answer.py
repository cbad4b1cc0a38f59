"""``Slate.ranking`` (what ``rank`` answers per shown item) against the per-item loop it
replaced, kept below as it was: the same mappings, and the same bytes once encoded (the
features: the same bytes once the standard library's ``zlib`` decompresses them, since
``encode`` compresses with ISA-L)."""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.slates import Slate, decode, encode, shown_item_ids


def old_ranking(slate: Slate) -> list[dict[str, Any]]:
    """The former ``Slate.ranking`` (with the credit's probability and the inverse-propensity
    credit weights, added since)."""
    out = []
    for i, item in enumerate(slate.item_ids):
        shares, credit = (list(slate.shares[i]), slate.credits[i]) if slate.shares else ([], None)
        out.append(
            {
                "item_id": item,
                "score": slate.scores[i],
                "propensity": slate.propensities[i],
                "explored": slate.explored[i],
                "algorithms": list(slate.algorithms[i]),
                "shares": shares,
                "credit": credit,
                "credit_probability": (
                    slate.credit_probabilities[i] if slate.credit_probabilities else None
                ),
                "credit_weights": slate.credit_weights[i] if slate.credit_weights else None,
            }
        )
    return out


_NAMES = st.sampled_from(["collaborative", "content_based", "popularity", "trending"])


@st.composite
def slates(draw: st.DrawFn) -> Slate:
    n = draw(st.integers(0, 12))
    floats = st.floats(-2.0, 2.0, allow_nan=False)
    algorithms = [tuple(draw(st.lists(_NAMES, max_size=3, unique=True))) for _ in range(n)]
    logged = draw(st.booleans())
    shares = tuple(tuple(draw(floats) for _ in a) for a in algorithms) if logged else ()
    credits = tuple(draw(st.sampled_from([None, *a])) for a in algorithms) if logged else ()
    chances = tuple(draw(st.floats(0.0, 1.0)) for _ in algorithms) if draw(st.booleans()) else ()
    weights = (
        tuple({a: draw(st.floats(1.0, 100.0)) for a in names} for names in algorithms)
        if logged and chances and draw(st.booleans())
        else ()
    )
    return Slate(
        tuple(f"i{j}" for j in range(n)),
        tuple(draw(floats) for _ in range(n)),
        tuple(draw(st.floats(0.0, 1.0)) for _ in range(n)),
        tuple(draw(st.booleans()) for _ in range(n)),
        tuple(algorithms),
        np.zeros((n, 2), dtype=np.float32),
        ("x", "y"),
        shares=shares if n else (),
        credits=credits if n else (),
        credit_probabilities=chances if n else (),
        credit_weights=weights if n else (),
    )


@settings(max_examples=300, deadline=None)
@given(slate=slates())
def test_ranking_equals_the_per_item_loop(slate: Slate) -> None:
    expected = old_ranking(slate)
    got = slate.ranking()
    # the same values (the slate's tuples where the loop made lists) and the same JSON
    assert [
        {**r, "algorithms": list(r["algorithms"]), "shares": list(r["shares"])} for r in got
    ] == expected
    assert orjson.dumps(got) == orjson.dumps(expected)


def old_encode(slate: Slate) -> tuple[bytes, bytes, bytes]:
    """The former ``core.slates.encode`` (each column through a numpy array)."""
    parts: list[Any] = [slate.item_ids, slate.algorithms]
    if slate.shares:
        parts += [slate.shares, slate.credits]
        if slate.credit_probabilities:
            parts.append(slate.credit_probabilities)
            if slate.credit_weights:
                parts.append(slate.credit_weights)
    header = orjson.dumps(parts)
    numbers = (
        np.asarray(slate.scores, dtype="<f8").tobytes()
        + np.asarray(slate.propensities, dtype="<f8").tobytes()
        + np.asarray(slate.explored, dtype=np.uint8).tobytes()
    )
    features = zlib.compress(np.asarray(slate.features, dtype="<f4").tobytes(order="F"), 1)
    return header, numbers, features


def assert_same_encoding(
    got: tuple[bytes, bytes, bytes], former: tuple[bytes, bytes, bytes]
) -> None:
    """The header and numbers byte for byte; the features as zlib reads them back."""
    assert got[:2] == former[:2]
    assert zlib.decompress(got[2]) == zlib.decompress(former[2])


@settings(max_examples=300, deadline=None)
@given(slate=slates())
def test_encode_gives_the_bytes_it_gave(slate: Slate) -> None:
    assert_same_encoding(encode(slate), old_encode(slate))


def test_encode_of_numpy_scalars_and_ints_gives_the_bytes_it_gave() -> None:
    slate = Slate(
        ("a", "b", "c"),
        (np.float64(0.25), 1, -0.0),
        (1.0, np.float64(0.5), 1e-300),
        (np.True_, False, True),
        ((), (), ()),
    )
    assert_same_encoding(encode(slate), old_encode(slate))


_SPECIAL = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, 0.25], dtype=np.float32)


@st.composite
def feature_slates(draw: st.DrawFn) -> Slate:
    """Slates of any size whose features are random float32 values: some columns constant
    (as the user's and the request's are), some with NaN and the infinities, the rest any
    bit pattern that is a float32."""
    n = draw(st.integers(0, 120))
    width = draw(st.integers(1, 48))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    matrix = rng.integers(0, 2**32, size=(n, width), dtype=np.uint32).view(np.float32)
    matrix = np.where(rng.random((n, width)) < 0.2, rng.choice(_SPECIAL, (n, width)), matrix)
    constant = rng.random(width) < draw(st.floats(0.0, 1.0))
    matrix[:, constant] = rng.choice(_SPECIAL, int(constant.sum()))
    return Slate(
        tuple(f"i{j}" for j in range(n)),
        (0.5,) * n,
        (1.0,) * n,
        (False,) * n,
        ((),) * n,
        matrix.astype(np.float32),
        tuple(f"f{j}" for j in range(width)),
    )


@settings(max_examples=300, deadline=None)
@given(slate=feature_slates())
def test_the_features_decompress_with_zlib_to_the_matrix(slate: Slate) -> None:
    """ISA-L's stream against the standard library's zlib, the oracle: the same bytes back
    (the column-ordered float32 matrix), and the same slate decoded."""
    header, numbers, features = encode(slate)
    assert zlib.decompress(features) == slate.features.astype("<f4").tobytes(order="F")
    assert decode(header, numbers, features, slate.feature_names) == slate


@settings(max_examples=100, deadline=None)
@given(slate=feature_slates())
def test_a_slate_stored_by_zlib_still_decodes(slate: Slate) -> None:
    """Rows written before ISA-L (zlib.compress, level 1) read as they did."""
    assert decode(*old_encode(slate), slate.feature_names) == slate


@settings(max_examples=300, deadline=None)
@given(slate=slates(), ids=st.lists(st.text(max_size=12), max_size=12))
def test_shown_item_ids_are_the_whole_headers_first_array(slate: Slate, ids: list[str]) -> None:
    """The first array alone against the whole header decoded (the oracle), on any ids:
    quotes, backslashes, brackets, control and non-ASCII characters."""
    ids = ids[: len(slate)] + [f"i{j}" for j in range(len(ids), len(slate))]
    named = replace(slate, item_ids=tuple(ids))
    header = encode(named)[0]
    assert shown_item_ids(header) == tuple(orjson.loads(header)[0]) == named.item_ids


def test_shown_item_ids_of_a_header_not_opening_with_an_array_decode_it_whole() -> None:
    assert shown_item_ids(b' [["a"], []]') == ("a",)  # whitespace: the whole header
    assert shown_item_ids(b'["ab", []]') == ("a", "b")  # a string first: as orjson reads it
