"""Rank candidates from several algorithms: weighted fusion plus preference affinity.

Each algorithm's candidates form a list, ranked by the algorithm's scores
(or as given). A candidate at rank ``r`` (from 1) of a list of ``n``
contributes, with ``method``:

- ``"percentile"`` (calibrated): ``weights[alg] * (n - r + 1) / n``, the
  weight times the candidate's rank percentile within its list (1 for the
  top, ``1/n`` for the last), so every algorithm's scores are on one scale
  whatever their own, and a list's weight moves its items by up to the whole
  weight;
- ``"rrf"``: weighted reciprocal-rank fusion (Cormack, Clarke and Büttcher,
  2009, with a weight per list), ``weights[alg] / (rrf_k + r)``. On short
  lists at ``rrf_k = 60`` the contributions differ by a few percent, so the
  weights barely move the ranking (issue 15).

An item proposed by several algorithms sums its contributions. The fused
value is divided by the largest one, so the best-fused item has
``fusion = 1``, and the user's preference is added::

    score = fusion / max(fusion) + affinity_weight * affinity

with ``affinity`` the cosine similarity of the user's preference vector and
the item's vector (:func:`cosine`, computed by the caller).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from recloop.core.arrays import all_of, cumsum_of, max_of, sum_of
from recloop.core.errors import InvalidInput
from recloop.core.features import ALGORITHMS

Method = Literal["percentile", "rrf"]

_RANK_COLUMN: dict[str | None, int] = {None: -1, **{a: i for i, a in enumerate(ALGORITHMS)}}
"""Each algorithm's column of :attr:`Fused.rank_pct` (-1: no algorithm, no column; any
other name: the last column, ``len(ALGORITHMS)``)."""
_OTHER_RANK = len(ALGORITHMS)
_WHOLE: tuple[tuple[float, ...]] = ((1.0,),)
"""An item's shares when one algorithm proposed it and its value is positive."""


def _contribution(weight: float, rank: int, n: int, method: Method, rrf_k: float) -> float:
    if method == "rrf":
        return weight / (rrf_k + rank)
    return weight * (n - rank + 1) / n


class Proposed(Protocol):
    """What fusion reads of a candidate: a :class:`Candidate`, or a request's candidate as
    decoded (the rank routes pass theirs as they are, without a copy each)."""

    @property
    def item_id(self) -> str: ...
    @property
    def algorithm(self) -> str | None: ...
    @property
    def score(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """An item proposed by ``algorithm``, with that algorithm's score if it gives one."""

    item_id: str
    algorithm: str | None = None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class Scored:
    """A fused item: its final ``score`` and the parts it is made of."""

    item_id: str
    score: float
    fusion: float
    affinity: float
    algorithms: tuple[str, ...]
    shares: tuple[float, ...] = ()
    """Each of ``algorithms``' share of the item's fused value (:func:`shares`)."""


def _check(
    candidates: Sequence[Proposed],
    weights: Mapping[str, float],
    affinities: Mapping[str, float],
    rrf_k: float,
    affinity_weight: float,
    method: str = "rrf",
) -> None:
    if method not in ("percentile", "rrf"):
        raise InvalidInput("method", f"must be 'percentile' or 'rrf', got {method!r}")
    if not (rrf_k >= 0 and math.isfinite(rrf_k)):
        raise InvalidInput("rrf_k", f"must be finite and >= 0, got {rrf_k}")
    if not math.isfinite(affinity_weight):
        raise InvalidInput("affinity_weight", f"must be finite, got {affinity_weight}")
    for algorithm, weight in weights.items():
        if not (weight >= 0 and math.isfinite(weight)):
            raise InvalidInput(f"weights.{algorithm}", f"must be finite and >= 0, got {weight}")
    if not all(map(math.isfinite, affinities.values())):
        for item_id, affinity in affinities.items():
            if not math.isfinite(affinity):
                raise InvalidInput(f"affinities.{item_id}", f"must be finite, got {affinity}")
    for i, candidate in enumerate(candidates):
        if candidate.score is not None and not math.isfinite(candidate.score):
            raise InvalidInput(f"candidates.{i}.score", f"must be finite, got {candidate.score}")


def _ranked(group: list[Candidate]) -> list[Candidate]:
    """By score, highest first (ties in input order) if every candidate has one; else as given."""
    scored = [(c.score, c) for c in group if c.score is not None]
    if len(scored) < len(group):
        return group
    return [c for _, c in sorted(scored, key=lambda pair: -pair[0])]


def fuse(
    candidates: Sequence[Candidate],
    weights: Mapping[str, float],
    affinities: Mapping[str, float],
    rrf_k: float = 60.0,
    affinity_weight: float = 0.5,
    method: Method = "rrf",
) -> list[Scored]:
    """One :class:`Scored` per item, best first; see the module docstring for the formulas.

    Candidates are ranked within their algorithm: by score, highest first, if
    every one of them has a score, else in input order. Candidates with no
    algorithm, or one absent from ``weights`` (a disabled algorithm, say),
    are ranked together as one more list weighing the mean of ``weights``
    (1.0 if it is empty). Items with equal scores keep the order of their
    first appearance in ``candidates``. If every weight is 0, so is every
    fusion value.

    Raises
    ------
    InvalidInput
        for a negative or non-finite weight, a negative ``rrf_k`` or a
        non-finite score or affinity.

    >>> candidates = [Candidate("x", "als"), Candidate("y", "als"),
    ...               Candidate("y", "popular"), Candidate("z", "popular")]
    >>> fused = fuse(candidates, {"als": 2.0, "popular": 1.0}, {"z": 1.0}, rrf_k=1.0)
    >>> [(s.item_id, round(s.fusion, 3), round(s.score, 3)) for s in fused]
    [('y', 1.0, 1.0), ('x', 0.857, 0.857), ('z', 0.286, 0.786)]
    >>> fused[0].algorithms
    ('als', 'popular')
    """
    _check(candidates, weights, affinities, rrf_k, affinity_weight, method)
    unassigned_weight = sum(weights.values()) / len(weights) if weights else 1.0
    groups: dict[str | None, list[Candidate]] = {}
    for candidate in candidates:
        key = candidate.algorithm if candidate.algorithm in weights else None
        groups.setdefault(key, []).append(candidate)

    # Dicts keep insertion order: items in order of first appearance.
    fusion = dict.fromkeys((c.item_id for c in candidates), 0.0)
    proposers: dict[str, list[str]] = {item_id: [] for item_id in fusion}
    for candidate in candidates:
        algorithm = candidate.algorithm
        if algorithm is not None and algorithm not in proposers[candidate.item_id]:
            proposers[candidate.item_id].append(algorithm)
    parts: dict[tuple[str, str], float] = {}
    for key, group in groups.items():
        weight = unassigned_weight if key is None else weights[key]
        for rank, candidate in enumerate(_ranked(group), start=1):
            value = _contribution(weight, rank, len(group), method, rrf_k)
            fusion[candidate.item_id] += value
            if candidate.algorithm is not None:
                part = (candidate.item_id, candidate.algorithm)
                parts[part] = parts.get(part, 0.0) + value

    top = max(fusion.values(), default=0.0)
    results = []
    for item_id, value in fusion.items():
        normalised = value / top if top > 0 else 0.0
        affinity = affinities.get(item_id, 0.0)
        results.append(
            Scored(
                item_id=item_id,
                score=normalised + affinity_weight * affinity,
                fusion=normalised,
                affinity=affinity,
                algorithms=tuple(proposers[item_id]),
                shares=tuple(
                    parts[item_id, a] / value if value > 0 else 0.0 for a in proposers[item_id]
                ),
            )
        )
    results.sort(key=lambda s: -s.score)  # stable: ties stay in order of first appearance
    return results


def cosine(u: npt.ArrayLike, v: npt.ArrayLike) -> float:
    """The cosine similarity ``u·v / (|u| |v|)`` in [-1, 1]; 0.0 if either vector is zero.

    Raises
    ------
    InvalidInput
        if the vectors' shapes differ.

    >>> cosine([1.0, 0.0], [1.0, 1.0]), cosine([1.0, 0.0], [-2.0, 0.0]), cosine([0.0], [1.0])
    (0.7071067811865475, -1.0, 0.0)
    """
    a = np.asarray(u, dtype=np.float64)
    b = np.asarray(v, dtype=np.float64)
    if a.shape != b.shape:
        raise InvalidInput("v", f"has shape {b.shape}, u has {a.shape}")
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    if norms == 0.0:
        return 0.0
    return min(max(float(a @ b) / norms, -1.0), 1.0)


def cosines(u: npt.ArrayLike, rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """:func:`cosine` of ``u`` with every row of ``rows``, in one matrix product.

    >>> cosines([1.0, 0.0], [[1.0, 1.0], [-2.0, 0.0], [0.0, 0.0]]).tolist()
    [0.7071067811865475, -1.0, 0.0]
    """
    a = np.asarray(u, dtype=np.float64)
    m = np.asarray(rows, dtype=np.float64)
    if m.ndim < 2:
        m = np.atleast_2d(m)
    if m.shape[1] != a.shape[0]:
        raise InvalidInput("rows", f"have {m.shape[1]} columns, u has {a.shape[0]} values")
    # np.linalg.norm's own steps for these shapes (the rows: the square root of the sum of
    # their squares; a vector: of its dot product with itself), by ufuncs
    norms = np.sqrt(sum_of(m * m, axis=1)) * math.sqrt(a.dot(a))
    dots = m @ a
    out: npt.NDArray[np.float64] = np.zeros(dots.shape)
    np.divide(dots, norms, out=out, where=norms > 0)
    return np.minimum(np.maximum(out, -1.0, out=out), 1.0, out=out)  # np.clip's values


@dataclass(frozen=True, slots=True)
class Fused:
    """:func:`fuse`'s result in columns, best first: entry ``i`` of each is one item."""

    item_ids: list[str]
    score: npt.NDArray[np.float64]
    fusion: npt.NDArray[np.float64]
    affinity: npt.NDArray[np.float64]
    algorithms: list[tuple[str, ...]]
    share_sums: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    """Row ``i``, column ``j``: the contributions of ``algorithms[i][j]``'s candidates to
    item ``i``'s fused value (columns past ``len(algorithms[i])`` are 0)."""
    raw: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    """Each item's fused value before it is divided by the largest."""
    appearance: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    """Each item's place among the candidates' distinct item ids in order of first
    appearance (what a caller's per-id columns are reordered by)."""
    firsts: dict[str, int] = field(default_factory=dict)
    """Per weighted algorithm, the row of the item its list ranks first (its own top pick:
    what a probe shows, ``core.exploration.probe``)."""
    single: bool = False
    """Each item proposed once, by a named algorithm: ``share_sums`` is ``raw`` as one
    column (what :meth:`shown_shares` reads without the matrix)."""
    rank_pct: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.zeros((0, len(ALGORITHMS) + 1))
    )
    """Row ``i``, column ``j``: item ``i``'s rank percentile ``(n - r + 1) / n`` in the
    list of ``core.features.ALGORITHMS[j]`` (column ``len(ALGORITHMS)``: the best among
    the lists of any other algorithm), as the fusion ranked it (an algorithm absent from
    the weights: its rank among the candidates fused as one list with them); 0.0 where
    that algorithm did not propose the item (a percentile is in (0, 1]). What the click
    model reads of each algorithm's own opinion (``rank_pct_<a>``, ``core.features``)."""

    def __len__(self) -> int:
        return len(self.item_ids)

    def shares(self, row: int) -> tuple[float, ...]:
        """Each of ``algorithms[row]``' share of that item's fused value: the sum of its
        contributions over the item's (raw) fused value; 0.0 each if that is 0. They sum to
        1 unless candidates with no algorithm contributed too.
        """
        return self.shares_of([row])[0]

    def shares_of(self, rows: Sequence[int]) -> list[tuple[float, ...]]:
        """:meth:`shares` of several rows at once (``rank`` asks for the shown ones only)."""
        return list(share_rows(self.share_matrix(rows), [self.algorithms[row] for row in rows]))

    def shown_shares(
        self, rows: npt.NDArray[np.intp], algorithms: Sequence[Sequence[str]]
    ) -> tuple[tuple[float, ...], ...]:
        """:func:`share_rows` of :meth:`share_matrix` for ``rows`` (whose algorithms are
        ``algorithms``). With one algorithm per item (:attr:`single`, what ``rank`` is
        usually sent) each share is the item's fused value over itself (0.0 where that is
        not positive), computed per row without the matrix; tests/unit/test_ranking.py
        holds the two ways together."""
        if not self.single:
            return share_rows(self.share_matrix(rows), algorithms)
        if all_of(self.raw > 0.0):  # every item's value positive (the usual request)
            return _WHOLE * len(rows)
        raw: list[float] = self.raw[rows].tolist()
        return tuple([(1.0,) if r > 0.0 else (0.0,) for r in raw])

    def share_matrix(self, rows: Sequence[int] | npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """:meth:`shares` of ``rows`` as a matrix: row ``n``, column ``j`` is
        ``algorithms[rows[n]][j]``'s share (0 past its algorithms)."""
        picked = np.asarray(rows, dtype=np.intp)
        total = self.raw[picked][:, None]
        sums = self.share_sums[picked]
        return np.divide(sums, total, out=np.zeros(sums.shape), where=total > 0)


def share_rows(
    shares: npt.NDArray[np.float64], algorithms: Sequence[Sequence[str]]
) -> tuple[tuple[float, ...], ...]:
    """Row ``i`` of ``shares`` (:meth:`Fused.share_matrix`) cut to ``algorithms[i]``'s
    columns, as a tuple per item.

    Items with as many algorithms as the matrix has columns (each proposed by one algorithm:
    what ``rank`` is usually sent) are whole rows, made tuples by a C-level ``map``
    instead of a slice each (tests/unit/test_ranking.py holds both ways together).

    >>> share_rows(np.array([[0.75, 0.25], [1.0, 0.0]]), [("als", "popular"), ("als",)])
    ((0.75, 0.25), (1.0,))
    """
    values = shares.tolist()
    if set(map(len, algorithms)) <= {shares.shape[1]}:
        return tuple(map(tuple, values))
    return tuple([tuple(v[: len(a)]) for v, a in zip(values, algorithms, strict=True)])


def fuse_columns(
    candidates: Sequence[Proposed],
    weights: Mapping[str, float],
    affinities: Mapping[str, float],
    rrf_k: float = 60.0,
    affinity_weight: float = 0.5,
    method: Method = "rrf",
    item_ids: list[str] | None = None,
) -> Fused:
    """:func:`fuse` in columns, without an object per item: the same items in the same
    order with the same (bit for bit) scores, fusion values, affinities and algorithms
    (tests/unit/test_ranking.py compares them on random candidates). ``item_ids``: the
    candidates' ids in order, where the caller has read them already.

    >>> candidates = [Candidate("x", "als"), Candidate("y", "als"),
    ...               Candidate("y", "popular"), Candidate("z", "popular")]
    >>> fused = fuse_columns(candidates, {"als": 2.0, "popular": 1.0}, {"z": 1.0}, rrf_k=1.0)
    >>> fused.item_ids, fused.score.round(3).tolist(), fused.algorithms[0]
    (['y', 'x', 'z'], [1.0, 0.857, 0.786], ('als', 'popular'))

    Each item proposed once (what ``rank`` is usually sent) is fused in plain Python
    (:func:`_fuse_distinct`): on a hundred candidates, a few list passes cost less than
    the dozens of numpy calls of the general path (:func:`_fuse_arrays`), which stays
    the oracle of a differential test.
    """
    _check((), weights, affinities, rrf_k, affinity_weight, method)
    if item_ids is None:
        item_ids = [c.item_id for c in candidates]
    elif len(item_ids) != len(candidates):
        raise InvalidInput("item_ids", f"has {len(item_ids)} ids for {len(candidates)} candidates")
    if item_ids and len(set(item_ids)) == len(item_ids):
        return _fuse_distinct(
            candidates, item_ids, weights, affinities, rrf_k, affinity_weight, method
        )
    return _fuse_arrays(candidates, item_ids, weights, affinities, rrf_k, affinity_weight, method)


def _fuse_arrays(
    candidates: Sequence[Proposed],
    item_ids: list[str],
    weights: Mapping[str, float],
    affinities: Mapping[str, float],
    rrf_k: float,
    affinity_weight: float,
    method: Method,
) -> Fused:
    """:func:`fuse_columns` in numpy, for any candidates (items proposed several times
    too), past the arguments' check."""
    # Columns first (one pass each), then the candidates' scores checked in one call.
    algorithms = [c.algorithm for c in candidates]
    given = [c.score for c in candidates]
    raw_scores = np.array(given, dtype=np.float64)  # None: NaN
    every_score = bool(np.isfinite(raw_scores).all())
    if not every_score:
        for i, value in enumerate(given):
            if value is not None and not math.isfinite(value):
                raise InvalidInput(f"candidates.{i}.score", f"must be finite, got {value}")
    unassigned_weight = sum(weights.values()) / len(weights) if weights else 1.0
    index = {item_id: i for i, item_id in enumerate(dict.fromkeys(item_ids))}
    proposers: list[tuple[str, ...]]  # per item: its algorithms, in order of appearance
    column: list[int]  # per candidate: its algorithm's column in its item's row; -1
    distinct = len(index) == len(item_ids)
    if distinct:  # each item proposed once (what rank is usually sent)
        item_of = np.arange(len(item_ids), dtype=np.intp)
        proposers = [() if a is None else (a,) for a in algorithms]
        column = [-1 if a is None else 0 for a in algorithms]
        width = 0 if algorithms.count(None) == len(algorithms) else 1
    else:
        mine: list[dict[str, int]] = [{} for _ in index]  # per item: algorithm -> column
        of = [index[i] for i in item_ids]
        column = [
            -1 if a is None else mine[i].setdefault(a, len(mine[i]))
            for i, a in zip(of, algorithms, strict=True)
        ]
        proposers = [tuple(m) for m in mine]
        item_of = np.asarray(of, dtype=np.intp)
        width = max((len(p) for p in proposers), default=0)
    # per candidate: its list, numbered in order of appearance
    keys = [a if a in weights else None for a in algorithms]
    groups = {key: g for g, key in enumerate(dict.fromkeys(keys))}
    group_of = [groups[key] for key in keys]
    # Each list ranked by score, highest first (ties, and lists with an unscored
    # candidate, in input order), lists in order of appearance: fuse's order. Summed per
    # item in that order (bincount adds in input order): the same floating-point sums.
    group = np.asarray(group_of, dtype=np.intp)
    if every_score:  # (past the check above: no NaN, so no list without scores)
        by_score = -raw_scores
    else:
        unscored = np.bincount(group, weights=np.isnan(raw_scores), minlength=len(groups)) > 0
        by_score = np.where(unscored[group], 0.0, -raw_scores)
    ordered = np.lexsort((by_score, group))  # stable: ties keep input order
    sizes = np.bincount(group, minlength=len(groups))
    starts = np.cumsum(sizes) - sizes
    in_order = group[ordered]
    ranks = (np.arange(len(ordered)) - starts[in_order] + 1).astype(np.float64)
    list_weight = np.asarray(
        [unassigned_weight if key is None else weights[key] for key in groups], dtype=np.float64
    )[in_order]
    n = sizes[in_order].astype(np.float64)
    if method == "rrf":
        contributions = list_weight / (rrf_k + ranks)
    else:
        contributions = list_weight * (n - ranks + 1) / n
    percentiles = (n - ranks + 1) / n  # each candidate's, in its list
    items = len(proposers)
    item_arr = item_of[ordered]
    fusion: npt.NDArray[np.float64]
    if distinct:  # one contribution per item: bincount's sum is 0.0 + it, so is this
        fusion = np.empty(items)
        fusion[item_arr] = contributions + 0.0
        named_items = np.asarray(column, dtype=np.intp) >= 0  # (candidate i is item i)
        share_sums = np.where(named_items, fusion, 0.0).reshape(items, 1)[:, :width]
    else:
        column_arr = np.asarray(column, dtype=np.intp)[ordered]
        # (bincount of nothing is int64: astype keeps every column float64)
        summed_items = np.bincount(item_arr, weights=contributions, minlength=items)
        fusion = summed_items.astype(np.float64, copy=False)
        named = column_arr >= 0
        cells = (item_arr * width + column_arr)[named]
        summed = np.bincount(cells, weights=contributions[named], minlength=items * width)
        share_sums = summed.astype(np.float64, copy=False).reshape(items, width)
    ids = list(index)
    top = float(fusion.max()) if items else 0.0
    normalised = fusion / top if top > 0 else np.zeros_like(fusion)
    affinity = np.asarray([affinities.get(i, 0.0) for i in ids], dtype=np.float64)
    score = normalised + affinity_weight * affinity
    ranked_items = np.argsort(-score, kind="stable")
    order = ranked_items.tolist()
    row_of = np.empty(items, dtype=np.intp)
    row_of[ranked_items] = np.arange(items)
    head_rows = row_of[item_arr[starts]].tolist()  # each list's first candidate, in list order
    firsts = {key: row for key, row in zip(groups, head_rows, strict=True) if key is not None}
    # each candidate's percentile in its algorithm's column of its item's row (the best,
    # where an item is in several lists that share a column)
    rank_column = np.fromiter(
        map(_RANK_COLUMN.get, algorithms, repeat(_OTHER_RANK)), np.intp, len(algorithms)
    )[ordered]
    proposed = rank_column >= 0
    rank_pct = np.zeros((items, len(ALGORITHMS) + 1))
    np.maximum.at(
        rank_pct,
        (row_of[item_arr][proposed], rank_column[proposed]),
        percentiles[proposed],
    )
    return Fused(
        [ids[i] for i in order],
        score[order],
        normalised[order],
        affinity[order],
        [proposers[i] for i in order],
        share_sums[order],
        fusion[order],
        ranked_items,
        firsts,
        rank_pct=rank_pct,
    )


def _fuse_distinct(
    candidates: Sequence[Proposed],
    item_ids: list[str],
    weights: Mapping[str, float],
    affinities: Mapping[str, float],
    rrf_k: float,
    affinity_weight: float,
    method: Method,
) -> Fused:
    """:func:`fuse_columns` of two or more candidates with distinct items, each with a
    finite score (what ``rank`` is usually sent; anything else: :func:`_fuse_arrays`):
    the same floating-point operations as :func:`_fuse_arrays` (so the same bits:
    tests/unit/test_ranking.py holds them together) in fewer steps. Per candidate, only
    the three columns are read in Python; the rest is a dozen numpy calls and C-level
    look-ups (``map``, ``itemgetter``), each of which costs less on 100 items than a
    Python pass over them."""
    n = len(item_ids)
    algorithms = [c.algorithm for c in candidates]
    given = [c.score for c in candidates]
    if n < 2 or None in given:
        return _fuse_arrays(
            candidates, item_ids, weights, affinities, rrf_k, affinity_weight, method
        )
    raw_scores = np.fromiter(given, dtype=np.float64, count=n)
    if not all_of(np.isfinite(raw_scores)):  # _fuse_arrays names the first bad one
        return _fuse_arrays(
            candidates, item_ids, weights, affinities, rrf_k, affinity_weight, method
        )
    unassigned_weight = sum(weights.values()) / len(weights) if weights else 1.0
    # Lists numbered in order of appearance (an algorithm absent from weights: None's);
    # each candidate's list and rank column gathered by its algorithm's number.
    lists: dict[str | None, int] = {}
    code: dict[str | None, int] = {}
    list_of: list[int] = []
    column_of: list[int] = []
    for a in dict.fromkeys(algorithms):
        code[a] = len(code)
        list_of.append(lists.setdefault(a if a in weights else None, len(lists)))
        column_of.append(_RANK_COLUMN.get(a, _OTHER_RANK))
    kind = np.fromiter(map(code.__getitem__, algorithms), dtype=np.intp, count=n)
    # each algorithm a list of its own (each weighted: the usual request): its number is it
    own = list_of == list(range(len(list_of)))
    group = kind if own else np.array(list_of, dtype=np.intp)[kind]
    ordered = np.lexsort((-raw_scores, group))  # stable: ties keep input order
    sizes = np.bincount(group, minlength=len(lists))
    ends = cumsum_of(sizes)  # (core.arrays: numpy's values, fewer steps)
    in_order = group[ordered]
    # n - r + 1 of each candidate's rank r in its list of n: the list's end past its place
    # (_fuse_arrays' size - ranks + 1, the same integers)
    left = (ends[in_order] - np.arange(n)).astype(np.float64)
    list_weight = np.array(
        [unassigned_weight if key is None else weights[key] for key in lists], dtype=np.float64
    )[in_order]
    size = sizes[in_order].astype(np.float64)
    if method == "rrf":
        contributions = list_weight / (rrf_k + (size - left + 1.0))  # (its rank r)
    else:
        contributions = list_weight * left / size
    fusion = np.empty(n)
    fusion[ordered] = contributions + 0.0  # bincount's sum of one value: 0.0 + it
    top = float(max_of(fusion))
    normalised = fusion / top if top > 0 else np.zeros_like(fusion)
    if affinities:
        found = map(affinities.get, item_ids, repeat(0.0))
        affinity = np.fromiter(found, dtype=np.float64, count=n)
        score = normalised + affinity_weight * affinity
    else:
        affinity = np.zeros(n)
        # normalised + affinity_weight * 0.0: the same bits (adding a zero changes no
        # number but -0.0, and normalised holds none: fusion is a sum plus 0.0)
        score = normalised
    ranked = (-score).argsort(kind="stable")
    order = ranked.tolist()
    pick = itemgetter(*order)
    raw = fusion[ranked]
    unnamed = None in code  # (a candidate without an algorithm)
    if unnamed:
        named = np.array([a is not None for a in algorithms])[ranked]
        share_sums = np.where(named, raw, 0.0).reshape(n, 1)[:, : int(named.any())]
    else:
        share_sums = raw.reshape(n, 1)
    one = {a: () if a is None else (a,) for a in code}
    # each list's first candidate, in list order, and its row
    heads = map(order.index, ordered[ends - sizes].tolist())
    # each candidate's percentile in its algorithm's column (one per item; a candidate
    # without an algorithm, column -1, writes a spare last column, left out), by row
    width = len(ALGORITHMS) + 1
    cells = np.zeros((n, width + 1))
    cells[ordered, np.array(column_of, dtype=np.intp)[kind[ordered]]] = left / size
    return Fused(
        list(pick(item_ids)),
        score[ranked],
        normalised[ranked],
        affinity[ranked],
        list(map(one.__getitem__, pick(algorithms))),
        share_sums,
        raw,
        ranked,
        {key: row for key, row in zip(lists, heads, strict=True) if key is not None},
        not unnamed,
        cells[ranked, :width],
    )


def draws(key: str, n: int) -> list[float]:
    """``n`` uniform draws in [0, 1) from ``key`` alone: the 8-byte words of SHAKE-128(``key``)
    read big-endian, their top 53 bits over 2^53. Reproducible from the log and independent
    of any random generator's state.

    >>> draws("imp-1", 2) == draws("imp-1", 5)[:2]  # a slot's draw ignores the slots after it
    True
    >>> draws("imp-1", 2) != draws("imp-2", 2)
    True
    >>> all(0.0 <= u < 1.0 for u in draws("imp-1", 1000))
    True
    """
    drawn: list[float] = _uniform(key, n).tolist()
    return drawn


def _uniform(key: str, n: int) -> npt.NDArray[np.float64]:
    """:func:`draws` as an array."""
    words = np.frombuffer(hashlib.shake_128(key.encode()).digest(8 * n), dtype=">u8")
    uniform: npt.NDArray[np.float64] = (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return uniform


def credited(
    algorithms: Sequence[Sequence[str]], shares: npt.NDArray[np.float64], key: str
) -> tuple[str | None, ...]:
    """The algorithm each shown item's feedback credits, drawn with probability equal to
    its share of the item's fused value (None, the rest: no algorithm's).

    ``shares``: row ``i`` holds ``algorithms[i]``' shares (:meth:`Fused.share_matrix`).
    Item ``i`` (in slot order) draws ``u = draws(key, n)[i]`` (``key``: the impression
    id), so the draw is reproducible from the log and takes nothing from ``rank``'s random
    generator: the first algorithm whose cumulative share exceeds ``u``. An orchestrator
    that names it in ``attribution.algorithm`` of the item's impression and click events
    credits each proposing algorithm, in expectation, its share of them.

    >>> credited([("als", "popular"), ()], np.array([[0.75, 0.25], [0.0, 0.0]]), "imp-1")
    ('als', None)
    """
    n = len(algorithms)
    if not n or not shares.shape[1]:
        return (None,) * n
    u = _uniform(key, n)[:, None]
    below = u < np.cumsum(shares, axis=1)
    first: list[int] = below.argmax(axis=1).tolist()
    hit: list[bool] = below[:, -1].tolist()  # the last column is the whole cumulative share
    return tuple(
        names[j] if h else None  # columns past an item's algorithms add 0: never first
        for names, j, h in zip(algorithms, first, hit, strict=True)
    )
