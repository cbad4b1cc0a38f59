"""Weighted reciprocal-rank fusion with preference affinity (core.ranking)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import distance

from recloop.core.errors import InvalidInput
from recloop.core.features import ALGORITHMS
from recloop.core.ranking import (
    Candidate,
    Fused,
    Method,
    Scored,
    _fuse_arrays,
    _fuse_distinct,
    cosine,
    cosines,
    fuse,
    fuse_columns,
    share_rows,
)


def by_id(scored: list[Scored]) -> dict[str, Scored]:
    return {s.item_id: s for s in scored}


# -- fuse ---------------------------------------------------------------------------


def test_fusion_by_hand() -> None:
    candidates = [
        Candidate("x", "als", 0.9),
        Candidate("y", "als", 0.5),
        Candidate("z", "als", 0.7),
        Candidate("y", "popular"),
        Candidate("w", "popular"),
    ]
    fused = fuse(candidates, {"als": 0.7, "popular": 0.3}, {"w": 0.9, "x": -0.2})
    # als ranks by score: x 1, z 2, y 3; popular has no scores, so input order: y 1, w 2
    raw = {"x": 0.7 / 61, "y": 0.7 / 63 + 0.3 / 61, "z": 0.7 / 62, "w": 0.3 / 62}
    top = raw["y"]
    scored = by_id(fused)
    for item, value in raw.items():
        assert scored[item].fusion == pytest.approx(value / top, rel=1e-12)
    assert scored["w"].score == pytest.approx(raw["w"] / top + 0.5 * 0.9, rel=1e-12)
    assert scored["x"].score == pytest.approx(raw["x"] / top - 0.5 * 0.2, rel=1e-12)
    assert (scored["w"].affinity, scored["x"].affinity, scored["y"].affinity) == (0.9, -0.2, 0.0)
    # y 1.0, w 0.752, z 0.704, x 0.616
    assert [s.item_id for s in fused] == ["y", "w", "z", "x"]
    assert scored["y"].algorithms == ("als", "popular")
    assert scored["w"].algorithms == ("popular",)


def test_affinity_weight_and_rrf_k() -> None:
    candidates = [Candidate("a", "als"), Candidate("b", "als")]
    fused = by_id(fuse(candidates, {"als": 1.0}, {"b": 0.4}, rrf_k=0.0, affinity_weight=2.0))
    # 1/1 and 1/2, normalised by 1
    assert (fused["a"].fusion, fused["b"].fusion) == (1.0, 0.5)
    assert fused["b"].score == pytest.approx(0.5 + 2.0 * 0.4)


def test_ties_keep_first_appearance() -> None:
    weights = {"p": 1.0, "q": 1.0}
    forward = [Candidate("b", "p"), Candidate("a", "q")]
    backward = [Candidate("a", "q"), Candidate("b", "p")]
    assert [s.item_id for s in fuse(forward, weights, {})] == ["b", "a"]
    assert [s.item_id for s in fuse(backward, weights, {})] == ["a", "b"]
    # equal scores within one algorithm also keep input order
    same = [Candidate("m", "p", 0.5), Candidate("n", "p", 0.5), Candidate("o", "p", 0.9)]
    assert [s.item_id for s in fuse(same, weights, {})] == ["o", "m", "n"]


def test_an_algorithm_with_a_missing_score_is_ranked_in_input_order() -> None:
    candidates = [Candidate("x", "als", 0.1), Candidate("y", "als"), Candidate("z", "als", 0.9)]
    fused = fuse(candidates, {"als": 1.0}, {})
    assert [s.item_id for s in fused] == ["x", "y", "z"]
    assert by_id(fused)["z"].fusion == pytest.approx(61 / 63)


def test_duplicates_sum_their_contributions() -> None:
    candidates = [
        Candidate("x", "als"),
        Candidate("x", "als"),  # the same algorithm twice: both appearances count
        Candidate("y", "popular"),
        Candidate("x", "popular"),
    ]
    fused = by_id(fuse(candidates, {"als": 1.0, "popular": 1.0}, {}))
    assert set(fused) == {"x", "y"}
    assert fused["x"].algorithms == ("als", "popular")
    x = 1 / 61 + 1 / 62 + 1 / 62
    assert fused["x"].fusion == 1.0
    assert fused["y"].fusion == pytest.approx((1 / 61) / x, rel=1e-12)


def test_unassigned_and_unknown_algorithms_share_one_list_at_the_mean_weight() -> None:
    candidates = [
        Candidate("x", "als"),
        Candidate("u"),
        Candidate("v", "disabled"),
        Candidate("w", "popular"),
    ]
    fused = by_id(fuse(candidates, {"als": 0.6, "popular": 0.2}, {}))
    # u and v rank 1 and 2 in the fallback list, which weighs (0.6 + 0.2) / 2
    top = 0.6 / 61
    assert fused["x"].fusion == 1.0
    assert fused["u"].fusion == pytest.approx(0.4 / 61 / top, rel=1e-12)
    assert fused["v"].fusion == pytest.approx(0.4 / 62 / top, rel=1e-12)
    assert fused["w"].fusion == pytest.approx(0.2 / 61 / top, rel=1e-12)
    assert fused["u"].algorithms == ()
    assert fused["v"].algorithms == ("disabled",)


def test_no_weights_and_zero_weights() -> None:
    candidates = [Candidate("x"), Candidate("y", "als")]
    assert [s.fusion for s in fuse(candidates, {}, {})] == [1.0, pytest.approx(61 / 62)]
    zero = fuse(candidates, {"als": 0.0}, {"y": 0.2})
    assert [(s.item_id, s.fusion, s.score) for s in zero] == [("y", 0.0, 0.1), ("x", 0.0, 0.0)]
    assert fuse([], {"als": 1.0}, {}) == []


@pytest.mark.parametrize(
    ("candidates", "weights", "affinities", "rrf_k", "field"),
    [
        ([Candidate("x", "als")], {"als": -1.0}, {}, 60.0, "weights.als"),
        ([Candidate("x", "als")], {"als": math.inf}, {}, 60.0, "weights.als"),
        ([Candidate("x"), Candidate("y", "als", math.nan)], {}, {}, 60.0, "candidates.1.score"),
        ([Candidate("x")], {}, {"x": math.nan}, 60.0, "affinities.x"),
        ([Candidate("x")], {}, {}, -1.0, "rrf_k"),
    ],
)
def test_fuse_refuses(
    candidates: list[Candidate],
    weights: dict[str, float],
    affinities: dict[str, float],
    rrf_k: float,
    field: str,
) -> None:
    with pytest.raises(InvalidInput) as info:
        fuse(candidates, weights, affinities, rrf_k=rrf_k)
    assert info.value.field == field
    with pytest.raises(InvalidInput) as columns:  # the columnar fusion: the same error
        fuse_columns(candidates, weights, affinities, rrf_k=rrf_k)
    assert str(columns.value) == str(info.value)


def test_fuse_columns_names_the_first_bad_score_past_unscored_ones() -> None:
    candidates = [Candidate("x"), Candidate("y", "als", 0.5), Candidate("z", "als", -math.inf)]
    with pytest.raises(InvalidInput) as info:
        fuse_columns(candidates, {"als": 1.0}, {})
    assert info.value.field == "candidates.2.score"
    assert "got -inf" in str(info.value)


@st.composite
def fusion_inputs(draw: st.DrawFn) -> tuple[list[Candidate], dict[str, float], dict[str, float]]:
    items = st.sampled_from("abcdefgh")
    algorithms = st.sampled_from([None, "als", "popular", "content", "off"])
    scores = st.one_of(st.none(), st.floats(-10, 10))
    candidates = draw(st.lists(st.builds(Candidate, items, algorithms, scores), max_size=20))
    weights = draw(
        st.dictionaries(st.sampled_from(["als", "popular", "content"]), st.floats(0.01, 5))
    )
    affinities = draw(st.dictionaries(items, st.floats(-1, 1)))
    return candidates, weights, affinities


@settings(deadline=None)
@given(inputs=fusion_inputs())
def test_fusion_properties(
    inputs: tuple[list[Candidate], dict[str, float], dict[str, float]],
) -> None:
    candidates, weights, affinities = inputs
    fused = fuse(candidates, weights, affinities)
    first_seen = list(dict.fromkeys(c.item_id for c in candidates))
    assert sorted(s.item_id for s in fused) == sorted(first_seen)
    if fused:
        assert max(s.fusion for s in fused) == 1.0
    for s in fused:
        assert 0.0 < s.fusion <= 1.0
        assert s.score == s.fusion + 0.5 * affinities.get(s.item_id, 0.0)
    order = [(-s.score, first_seen.index(s.item_id)) for s in fused]
    assert order == sorted(order)


def test_percentile_fusion_by_hand() -> None:
    # als: x (rank 1 of 3), y, z; popular: z (1 of 2), w. Percentiles (n - r + 1) / n.
    candidates = [
        Candidate("x", "als", 3.0),
        Candidate("y", "als", 2.0),
        Candidate("z", "als", 1.0),
        Candidate("z", "popular", 9.0),
        Candidate("w", "popular", 1.0),
    ]
    fused = by_id(fuse(candidates, {"als": 0.6, "popular": 0.4}, {}, method="percentile"))
    raw = {"x": 0.6, "y": 0.6 * 2 / 3, "z": 0.6 / 3 + 0.4, "w": 0.4 / 2}
    for item, value in raw.items():
        assert fused[item].fusion == pytest.approx(value / 0.6, rel=1e-12)


# Two algorithms propose the same four items in opposite orders; the user's preference
# leans a little to "w", the first algorithm's last.
SHORT = [Candidate(i, "als") for i in "xyzw"] + [Candidate(i, "popular") for i in "wzyx"]
LEAN = {"w": 0.2, "x": 0.0}


@pytest.mark.parametrize("method", ["percentile", "rrf"])
def test_weights_move_the_ranking_of_short_lists_only_when_calibrated(method: Method) -> None:
    def top(weights: dict[str, float]) -> str:
        return fuse(SHORT, weights, LEAN, method=method)[0].item_id

    tops = {top({"als": 0.8, "popular": 0.2}), top({"als": 0.2, "popular": 0.8})}
    if method == "percentile":
        assert tops == {"x", "w"}  # each weighting puts its favourite algorithm's top first
    else:
        assert tops == {"w"}  # RRF at k = 60: 0.5 * 0.2 of affinity outweighs the weights


def test_fusion_method_is_checked() -> None:
    with pytest.raises(InvalidInput) as info:
        fuse(SHORT, {"als": 1.0}, {}, method="borda")  # type: ignore[arg-type]
    assert info.value.field == "method"


@settings(deadline=None)
@given(inputs=fusion_inputs())
def test_percentile_fusion_properties(
    inputs: tuple[list[Candidate], dict[str, float], dict[str, float]],
) -> None:
    candidates, weights, affinities = inputs
    fused = fuse(candidates, weights, affinities, method="percentile")
    if fused:
        assert max(s.fusion for s in fused) == 1.0
    for s in fused:
        assert 0.0 < s.fusion <= 1.0
        assert s.score == s.fusion + 0.5 * affinities.get(s.item_id, 0.0)


# -- cosine ---------------------------------------------------------------------------


# zero, or far enough from 0 that the oracle's u·u · v·v does not underflow
moderate = st.floats(-1e3, 1e3).map(lambda x: 0.0 if abs(x) < 1e-3 else x)


@settings(deadline=None)
@given(
    pair=st.integers(1, 8).flatmap(
        lambda n: st.tuples(
            st.lists(moderate, min_size=n, max_size=n), st.lists(moderate, min_size=n, max_size=n)
        )
    )
)
def test_cosine_matches_scipy(pair: tuple[list[float], list[float]]) -> None:
    u, v = pair
    similarity = cosine(u, v)
    if not any(u) or not any(v):
        assert similarity == 0.0
    else:
        assert -1.0 <= similarity <= 1.0
        assert similarity == pytest.approx(1.0 - distance.cosine(u, v), abs=1e-12)


def test_cosine_examples() -> None:
    v = np.array([-0.7, -0.1, 0.8])  # v·v / |v|² rounds to 1.0000000000000002
    assert cosine(v, v) == 1.0
    assert cosine(v, -v) == -1.0
    assert cosine([1.0, 0.0], [0.0, 3.0]) == 0.0
    assert cosine(np.zeros(3), v) == 0.0
    assert cosine(v, np.zeros(3)) == 0.0


def _former_cosines(u: list[float], rows: list[list[float]]) -> np.ndarray:
    """``cosines`` as it was written with numpy's functions (the oracle of the ufunc steps)."""
    a = np.asarray(u, dtype=np.float64)
    m = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    norms = np.linalg.norm(m, axis=1) * float(np.linalg.norm(a))
    dots = m @ a
    out = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return np.clip(out, -1.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 70)).flatmap(
        lambda s: st.tuples(
            st.lists(moderate, min_size=s[1], max_size=s[1]),
            st.lists(
                st.lists(moderate, min_size=s[1], max_size=s[1]), min_size=s[0], max_size=s[0]
            ),
        )
    )
)
def test_cosines_are_the_former_ones_bit_for_bit(
    shape: tuple[list[float], list[list[float]]],
) -> None:
    u, rows = shape
    rows[0] = [-x for x in u]  # a row opposite u: clipped at -1 if it rounds past it
    if len(rows) > 1:
        rows[1] = list(u)
    assert cosines(u, rows).tobytes() == _former_cosines(u, rows).tobytes()
    assert cosines(u, rows[0]).tobytes() == _former_cosines(u, rows[0]).tobytes()  # one row


def test_cosine_refuses_mismatched_shapes() -> None:
    with pytest.raises(InvalidInput) as info:
        cosine([1.0, 0.0], [1.0, 0.0, 0.0])
    assert info.value.field == "v"


_IDS = st.sampled_from([f"i{n}" for n in range(12)])
_ALGORITHMS = st.sampled_from([None, "als", "popular", "trending", "disabled"])
_UNIT = st.one_of(st.floats(-1, 1), st.just(-0.0))
_SCORES = st.one_of(st.none(), st.floats(-5, 5), st.sampled_from([0.0, 1.0, 1.0]))


@settings(max_examples=400, deadline=None)
@given(
    candidates=st.lists(st.builds(Candidate, _IDS, _ALGORITHMS, _SCORES), max_size=40),
    weights=st.dictionaries(
        st.sampled_from(["als", "popular", "trending"]),
        st.one_of(st.floats(0, 3), st.just(0.0)),
    ),
    affinities=st.dictionaries(_IDS, st.floats(-1, 1)),
    rrf_k=st.sampled_from([0.0, 1.0, 60.0]),
    affinity_weight=st.sampled_from([0.0, 0.5, -1.0]),
    method=st.sampled_from(["rrf", "percentile"]),
)
def test_fuse_columns_equals_fuse_bit_for_bit(
    candidates: list[Candidate],
    weights: dict[str, float],
    affinities: dict[str, float],
    rrf_k: float,
    affinity_weight: float,
    method: Method,
) -> None:
    """The columnar fusion rank uses against the per-item one, its oracle."""
    expected = fuse(candidates, weights, affinities, rrf_k, affinity_weight, method)
    got = fuse_columns(candidates, weights, affinities, rrf_k, affinity_weight, method)
    assert got.item_ids == [s.item_id for s in expected]
    assert got.score.tolist() == [s.score for s in expected]
    assert got.fusion.tolist() == [s.fusion for s in expected]
    assert got.affinity.tolist() == [s.affinity for s in expected]
    assert got.algorithms == [s.algorithms for s in expected]
    for row, s in enumerate(expected):
        assert got.shares(row) == pytest.approx(s.shares, rel=1e-12, abs=1e-15)
    assert got.rank_pct.tolist() == rank_percentiles(candidates, weights, got.item_ids)


def rank_percentiles(
    candidates: list[Candidate], weights: dict[str, float], item_ids: list[str]
) -> list[list[float]]:
    """``Fused.rank_pct`` by hand: per candidate, its rank percentile in its list (ranked
    as ``fuse`` ranks it), written into its algorithm's column of its item's row (the last
    column for any algorithm not in ``ALGORITHMS``), the best where several land there."""
    lists: dict[str | None, list[Candidate]] = {}
    for c in candidates:
        lists.setdefault(c.algorithm if c.algorithm in weights else None, []).append(c)
    out = {item_id: [0.0] * (len(ALGORITHMS) + 1) for item_id in item_ids}
    for group in lists.values():
        scored = all(c.score is not None for c in group)
        ranked = sorted(group, key=lambda c: -(c.score or 0.0)) if scored else group
        for rank, c in enumerate(ranked, start=1):
            if c.algorithm is None:
                continue
            column = ALGORITHMS.index(c.algorithm) if c.algorithm in ALGORITHMS else -1
            row = out[c.item_id]
            row[column] = max(row[column], (len(group) - rank + 1) / len(group))
    return [out[item_id] for item_id in item_ids]


def test_rank_percentiles_by_hand() -> None:
    """Each algorithm's own rank of an item, on one scale: 0 where it did not propose it."""
    candidates = [
        Candidate("x", "collaborative", 3.0),
        Candidate("y", "collaborative", 2.0),
        Candidate("z", "collaborative", 1.0),
        Candidate("y", "trending", 0.5),
        Candidate("z", "als", 9.0),
        Candidate("w", "als_v2", 1.0),
        Candidate("v", None, 1.0),
    ]
    weights = {"collaborative": 1.0, "trending": 1.0, "als": 1.0, "als_v2": 1.0}
    fused = fuse_columns(candidates, weights, {}, method="percentile")
    rows = dict(zip(fused.item_ids, fused.rank_pct.tolist(), strict=True))
    #                 collaborative, content_based, popularity, trending, other
    assert rows["x"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert rows["y"] == [2 / 3, 0.0, 0.0, 1.0, 0.0]
    assert rows["z"] == [1 / 3, 0.0, 0.0, 0.0, 1.0]
    assert rows["w"] == [0.0, 0.0, 0.0, 0.0, 1.0]  # the best of the other lists: its own
    assert rows["v"] == [0.0] * 5  # no algorithm: no column (it still has a list)
    assert np.isfinite(fused.rank_pct).all()


@settings(max_examples=200, deadline=None)
@given(
    candidates=st.lists(
        st.builds(Candidate, _IDS, _ALGORITHMS, _SCORES), max_size=12, unique_by=lambda c: c.item_id
    ),
    weights=st.dictionaries(st.sampled_from(["als", "popular", "trending"]), st.floats(0, 3)),
    method=st.sampled_from(["rrf", "percentile"]),
)
def test_fuse_columns_of_distinct_items_equals_fuse(
    candidates: list[Candidate], weights: dict[str, float], method: Method
) -> None:
    """Each item proposed once (what rank is usually sent) takes a path of its own."""
    expected = fuse(candidates, weights, {}, method=method)
    got = fuse_columns(candidates, weights, {}, method=method)
    assert got.item_ids == [s.item_id for s in expected]
    assert got.score.tolist() == [s.score for s in expected]
    assert got.algorithms == [s.algorithms for s in expected]
    assert [got.shares(row) for row in range(len(got))] == [s.shares for s in expected]
    assert got.rank_pct.tolist() == rank_percentiles(candidates, weights, got.item_ids)


def test_fuse_columns_reads_the_item_ids_given_as_the_candidates_own() -> None:
    candidates = [Candidate("x", "als", 0.5), Candidate("y", "pop", 0.1), Candidate("x", "pop")]
    weights = {"als": 1.0, "pop": 2.0}
    for some in (candidates, candidates[:2]):
        ids = [c.item_id for c in some]
        given_ids = fuse_columns(some, weights, {"y": 0.5}, item_ids=ids)
        read = fuse_columns(some, weights, {"y": 0.5})
        assert given_ids.item_ids == read.item_ids
        assert given_ids.score.tobytes() == read.score.tobytes()
        assert given_ids.share_sums.tobytes() == read.share_sums.tobytes()
    with pytest.raises(InvalidInput) as info:
        fuse_columns(candidates, weights, {}, item_ids=["x", "y"])
    assert info.value.field == "item_ids"


def test_fuse_columns_of_a_negative_zero_weight_keeps_fuses_zeros() -> None:
    candidates = [Candidate("x", "als", 0.5), Candidate("y", "pop", 0.1), Candidate("z")]
    weights = {"als": -0.0, "pop": 1.0}
    expected = fuse(candidates, weights, {"x": 0.25})
    got = fuse_columns(candidates, weights, {"x": 0.25})
    pairs = [(s.item_id, s.fusion, s.score) for s in expected]
    assert list(zip(got.item_ids, got.fusion.tolist(), got.score.tolist(), strict=True)) == pairs
    assert [math.copysign(1.0, s.fusion) for s in expected] == np.copysign(1.0, got.fusion).tolist()


def test_shares_by_hand() -> None:
    # y: als rank 2 of 2 (2.0 x 1/2) and popular rank 1 of 2 (1.0 x 1); z: popular
    # rank 2 of 2 (0.5) and the no-algorithm list at the mean weight 1.5 (1.5): popular's
    # share is a quarter, the rest is no algorithm's.
    candidates = [
        Candidate("x", "als"), Candidate("y", "als"), Candidate("y", "popular"),
        Candidate("z", "popular"), Candidate("z", None),
    ]  # fmt: skip
    fused = fuse_columns(candidates, {"als": 2.0, "popular": 1.0}, {}, method="percentile")
    got = {i: dict(zip(fused.algorithms[r], fused.shares(r), strict=True))
           for r, i in enumerate(fused.item_ids)}  # fmt: skip
    assert got == {"x": {"als": 1.0}, "y": {"als": 0.5, "popular": 0.5}, "z": {"popular": 0.25}}


@settings(deadline=None)
@given(inputs=fusion_inputs())
def test_shares_of_named_lists_sum_to_one(
    inputs: tuple[list[Candidate], dict[str, float], dict[str, float]],
) -> None:
    candidates, weights, affinities = inputs
    fused = fuse_columns(candidates, weights, affinities, method="percentile")
    for row, item in enumerate(fused.item_ids):
        shares = fused.shares(row)
        assert all(0.0 <= x <= 1.0 + 1e-12 for x in shares)
        mine = [c for c in candidates if c.item_id == item]
        # every candidate of the item has an algorithm: the shares are the whole value
        if mine and all(c.algorithm is not None for c in mine):
            assert sum(shares) == pytest.approx(1.0)


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(0, 3),
    lengths=st.lists(st.integers(0, 3), max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_share_rows_equal_each_row_cut_to_its_algorithms(
    width: int, lengths: list[int], seed: int
) -> None:
    """The whole rows when every item has ``width`` algorithms, else each row sliced: the
    same tuples as the per-row slices (the oracle), whatever the items' algorithms."""
    algorithms = [tuple(f"a{j}" for j in range(min(n, width))) for n in lengths]
    shares = np.random.default_rng(seed).random((len(algorithms), width))
    expected = tuple(
        tuple(row[: len(a)]) for row, a in zip(shares.tolist(), algorithms, strict=True)
    )
    got = share_rows(shares, algorithms)
    assert got == expected
    assert all(type(row) is tuple for row in got)
    every = [tuple(f"a{j}" for j in range(width))] * len(lengths)  # the whole-row path
    assert share_rows(shares, every) == tuple(map(tuple, shares.tolist()))


@settings(max_examples=300, deadline=None)
@given(
    candidates=st.lists(
        st.builds(Candidate, _IDS, _ALGORITHMS, st.floats(-5, 5)),
        max_size=12,
        unique_by=lambda c: c.item_id,
    ),
    weights=st.dictionaries(
        st.sampled_from(["als", "popular", "trending"]), st.sampled_from([0.0, 0.5, 1.0, 2.5])
    ),
    method=st.sampled_from(["rrf", "percentile"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_shown_shares_are_the_share_matrix_rows(
    candidates: list[Candidate], weights: dict[str, float], method: Method, seed: int
) -> None:
    """The shown items' shares without the matrix (each item one named algorithm) against
    share_rows of share_matrix, the oracle, on any subset of rows in any order."""
    fused = fuse_columns(candidates, weights, {}, method=method)
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(fused))[: rng.integers(0, len(fused) + 1)].astype(np.intp)
    algorithms = [fused.algorithms[r] for r in rows.tolist()]
    expected = share_rows(fused.share_matrix(rows), algorithms)
    got = fused.shown_shares(rows, algorithms)
    assert [[math.copysign(1.0, x) if x == 0 else x for x in row] for row in got] == [
        [math.copysign(1.0, x) if x == 0 else x for x in row] for row in expected
    ]
    assert fused.single == (len(candidates) > 1 and None not in [c.algorithm for c in candidates])


def _same_fused(got: Fused, expected: Fused) -> None:
    assert got.item_ids == expected.item_ids
    assert got.algorithms == expected.algorithms
    assert got.firsts == expected.firsts
    assert got.appearance.dtype == expected.appearance.dtype
    assert got.appearance.tolist() == expected.appearance.tolist()
    for name in ("score", "fusion", "affinity", "raw", "share_sums", "rank_pct"):
        new, old = getattr(got, name), getattr(expected, name)
        assert new.dtype == old.dtype and new.shape == old.shape, name
        # bit for bit, the sign of a zero included
        assert new.tobytes() == old.tobytes(), name


@settings(max_examples=500, deadline=None)
@given(
    candidates=st.lists(
        st.builds(
            Candidate,
            _IDS,
            _ALGORITHMS,
            st.one_of(_SCORES, st.integers(-3, 3), st.just(-0.0)),
        ),
        min_size=1,
        max_size=12,
        unique_by=lambda c: c.item_id,
    ),
    weights=st.dictionaries(
        st.sampled_from(["als", "popular", "trending"]),
        st.one_of(st.floats(0, 3), st.sampled_from([0.0, -0.0, 1, 2])),
    ),
    affinities=st.dictionaries(_IDS, st.one_of(st.floats(-1, 1), st.just(-0.0))),
    rrf_k=st.sampled_from([0.0, 1.0, 60.0, 7.5]),
    affinity_weight=st.sampled_from([0.0, 0.5, -1.0, 2]),
    method=st.sampled_from(["rrf", "percentile"]),
)
def test_distinct_fusion_in_python_equals_the_numpy_path(
    candidates: list[Candidate],
    weights: dict[str, float],
    affinities: dict[str, float],
    rrf_k: float,
    affinity_weight: float,
    method: Method,
) -> None:
    """``fuse_columns`` fuses distinct items in plain Python (``_fuse_distinct``); the
    numpy path it replaced for them (``_fuse_arrays``) is its oracle, every column
    compared bit for bit."""
    ids = [c.item_id for c in candidates]
    args = (weights, affinities, rrf_k, affinity_weight, method)
    _same_fused(fuse_columns(candidates, *args), _fuse_arrays(candidates, ids, *args))
    # and the Python path is the one fuse_columns takes
    _same_fused(_fuse_distinct(candidates, ids, *args), fuse_columns(candidates, *args))


@settings(max_examples=300, deadline=None)
@given(
    candidates=st.lists(
        st.builds(
            Candidate,
            st.integers(0, 10**6).map(str),
            st.sampled_from([*ALGORITHMS, "other", "disabled", None]),
            st.one_of(st.floats(-5, 5), st.sampled_from([0.5, 0.5, -0.0, 0.0])),
        ),
        min_size=2,
        max_size=120,
        unique_by=lambda c: c.item_id,
    ),
    weights=st.dictionaries(
        st.sampled_from([*ALGORITHMS, "other"]),
        st.one_of(st.floats(0, 3), st.sampled_from([0.0, -0.0, 1])),
    ),
    affinities=st.one_of(st.just({}), st.dictionaries(st.integers(0, 10**6).map(str), _UNIT)),
    method=st.sampled_from(["rrf", "percentile"]),
)
def test_distinct_fusion_of_long_lists_of_the_default_algorithms_equals_the_numpy_path(
    candidates: list[Candidate],
    weights: dict[str, float],
    affinities: dict[str, float],
    method: Method,
) -> None:
    """As above, on requests like ``rank``'s (up to a hundred-odd candidates, the default
    algorithms' own rank columns, no affinity or some)."""
    ids = [c.item_id for c in candidates]
    args = (weights, affinities, 60.0, 0.5, method)
    _same_fused(_fuse_distinct(candidates, ids, *args), _fuse_arrays(candidates, ids, *args))


def test_distinct_fusion_names_the_first_bad_score_as_the_numpy_path() -> None:
    candidates = [
        Candidate("a", "als", 1.0),
        Candidate("b", "als"),
        Candidate("c", "als", math.inf),
    ]
    for fuse_ in (_fuse_distinct, _fuse_arrays):
        with pytest.raises(InvalidInput, match=r"candidates\.2\.score"):
            fuse_(candidates, ["a", "b", "c"], {"als": 1.0}, {}, 60.0, 0.5, "rrf")
