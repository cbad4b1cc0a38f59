"""A logged slate in columns: the shown items, their numbers and features as float32.

``rank`` logs, for each shown slot (position ``i`` is entry ``i``): the item,
its score, its exact propensity, whether it was explored, the algorithms that
proposed it, and its feature row. The rows form one float32 matrix whose
columns are named once per feature set (``feature_names``), not per
impression; :func:`feature_set_id` names a set by its names, so storage keeps
the names once and each impression only the id.

Stored, a slate is three byte strings (:func:`encode`, :func:`decode`)::

    header    JSON [item_ids, algorithms] (+ [shares, credits] when logged,
              + [credit_probabilities] when logged, + [credit_weights] when logged)
    numbers   float64 scores, float64 propensities, uint8 explored (little-endian)
    features  a zlib stream of the float32 matrix in column order

A model is served the float32 values that are logged (``rank`` rounds its
feature rows to float32 before predicting), so training reads back exactly what
was served. The features are compressed by ISA-L (``isal.isal_zlib``, level 1): a
standard zlib stream, written several times faster than by zlib's own level 1 at
about the same size. Every reader decompresses with the standard library's ``zlib``,
so rows written before (by ``zlib.compress``) and since read alike.
:attr:`Slate.slate` gives the mappings impressions were logged as before (one per
shown item), for readers that want them.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson
from isal import isal_zlib

from recloop.core.errors import InvalidInput

_F32: Final = np.dtype("<f4")
_F64: Final = np.dtype("<f8")


@dataclass(frozen=True, slots=True, eq=False)
class Slate:
    """The shown items of one impression, in slot order.

    >>> s = Slate(("a", "b"), (0.9, 0.5), (0.95, 0.9), (False, True), (("als",), ()),
    ...           np.array([[0.5, 1.0], [0.25, 0.5]], dtype=np.float32), ("x", "y"))
    >>> s.slate[1]
    {'item_id': 'b', 'position': 1, 'score': 0.5, 'propensity': 0.9, 'explored': True, \
'algorithms': [], 'features': {'x': 0.25, 'y': 0.5}}
    >>> decode(*encode(s), s.feature_names) == s
    True
    """

    item_ids: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    propensities: tuple[float, ...] = ()
    explored: tuple[bool, ...] = ()
    algorithms: tuple[tuple[str, ...], ...] = ()
    matrix: npt.NDArray[np.float32] | None = None
    """One float32 row per shown item, columns :attr:`feature_names` (read :attr:`features`:
    None while a decoded slate's ``packed`` bytes have not been asked for)."""
    feature_names: tuple[str, ...] = ()
    packed: bytes | None = field(default=None, repr=False)
    """The features as :func:`encode` stored them, decompressed on first use: a reader of
    the shown items alone (the canary monitor) never pays for them."""
    shares: tuple[tuple[float, ...], ...] = ()
    """Per shown item, each of its ``algorithms``' share of its fused value (empty: not
    logged, as before issue 15)."""
    credits: tuple[str | None, ...] = ()
    """Per shown item, the algorithm its feedback should name (drawn by share; see
    ``core.ranking.credited``); empty when ``shares`` is."""
    credit_probabilities: tuple[float, ...] = ()
    """Per shown item, the probability with which its credit was drawn: the credited
    algorithm's share (share credit), or for a probed slot the probed algorithm's chance of
    being drawn by a probe (``core.exploration.Probed.probability``; the probe itself had
    probability ``epsilon`` times it); 0.0 for a slot that credits no algorithm. Empty: not
    logged (before it was)."""
    credit_weights: tuple[dict[str, float], ...] = ()
    """Per shown item, the algorithms its feedback credits by inverse propensity and their
    weights (``exploration.credit: ips``; ``core.exploration.ips_credit``); empty mappings on
    slots that credit none. Empty: not logged (probe or share credit)."""

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for name in ("scores", "propensities", "explored", "algorithms"):
            if len(getattr(self, name)) != n:
                found = len(getattr(self, name))
                raise InvalidInput(f"slate.{name}", f"has {found} entries, not {n}")
        for name in ("shares", "credits", "credit_probabilities", "credit_weights"):
            logged = getattr(self, name) if name.startswith("credit_") else self.shares
            if logged and len(getattr(self, name)) != n:
                found = len(getattr(self, name))
                raise InvalidInput(f"slate.{name}", f"has {found} entries, not {n}")
        if self.matrix is None and self.packed is None:
            if self.feature_names:
                raise InvalidInput("slate.features", "named features need their values")
            object.__setattr__(self, "matrix", np.zeros((n, 0), dtype=np.float32))
        if self.matrix is not None:
            self._check(self.matrix)

    def _check(self, matrix: npt.NDArray[np.float32]) -> None:
        shape = (len(self.item_ids), len(self.feature_names))
        if matrix.shape != shape:
            raise InvalidInput("slate.features", f"has shape {matrix.shape}, not {shape}")
        if matrix.dtype != np.float32:
            raise InvalidInput("slate.features", f"must be float32, got {matrix.dtype}")
        matrix.flags.writeable = False

    @property
    def features(self) -> npt.NDArray[np.float32]:
        """One float32 row per shown item, columns :attr:`feature_names` (read-only)."""
        if self.matrix is not None:
            return self.matrix
        assert self.packed is not None  # __post_init__: one of the two
        flat = np.frombuffer(zlib.decompress(self.packed), dtype=_F32)
        matrix = flat.reshape((len(self.feature_names), len(self))).T.astype(np.float32)
        self._check(matrix)
        object.__setattr__(self, "matrix", matrix)
        return matrix

    def __len__(self) -> int:
        return len(self.item_ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Slate):
            return NotImplemented
        return (
            self.item_ids == other.item_ids
            and self.scores == other.scores
            and self.propensities == other.propensities
            and self.explored == other.explored
            and self.algorithms == other.algorithms
            and self.shares == other.shares
            and self.credits == other.credits
            and self.credit_probabilities == other.credit_probabilities
            and self.credit_weights == other.credit_weights
            and self.feature_names == other.feature_names
            and np.array_equal(self.features, other.features, equal_nan=True)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def has_features(self) -> bool:
        """Whether rows were logged (a slate of no shown items has none)."""
        return len(self) > 0 and len(self.feature_names) > 0

    def _credit(self, i: int) -> tuple[list[float], str | None]:
        if not self.shares:
            return [], None
        return list(self.shares[i]), self.credits[i]

    def _credit_probability(self, i: int) -> float | None:
        return self.credit_probabilities[i] if self.credit_probabilities else None

    def ranking(self) -> list[dict[str, Any]]:
        """What ``rank`` answers per shown item: item_id, score, propensity, explored,
        algorithms, shares, credit, credit_probability, credit_weights (None: not logged).
        ``algorithms`` and ``shares`` are the slate's own tuples, not copies (JSON arrays all
        the same).

        >>> Slate(("a",), (0.5,), (1.0,), (False,), (("als",),), shares=((1.0,),),
        ...       credits=("als",), credit_probabilities=(1.0,)).ranking()
        [{'item_id': 'a', 'score': 0.5, 'propensity': 1.0, 'explored': False, \
'algorithms': ('als',), 'shares': (1.0,), 'credit': 'als', 'credit_probability': 1.0, \
'credit_weights': None}]
        """
        n = len(self.item_ids)
        shares = self.shares or ((),) * n
        credits = self.credits if self.shares else (None,) * n
        chances = self.credit_probabilities or (None,) * n
        weighed = self.credit_weights or (None,) * n
        return [
            {
                "item_id": item,
                "score": score,
                "propensity": propensity,
                "explored": explored,
                "algorithms": algorithms,
                "shares": share,
                "credit": credit,
                "credit_probability": chance,
                "credit_weights": wts,
            }
            for item, score, propensity, explored, algorithms, share, credit, chance, wts in zip(
                self.item_ids,
                self.scores,
                self.propensities,
                self.explored,
                self.algorithms,
                shares,
                credits,
                chances,
                weighed,
                strict=True,
            )
        ]

    @property
    def slate(self) -> list[dict[str, Any]]:
        """One mapping per shown item: item_id, position, score, propensity, explored,
        algorithms, shares, credit, credit_probability and credit_weights (when logged),
        features (name to
        value; the float32 values as logged)."""
        rows = self.features.astype(np.float64).tolist() if self.feature_names else []
        names = self.feature_names
        out = []
        for i, item in enumerate(self.item_ids):
            row: dict[str, Any] = {
                "item_id": item,
                "position": i,
                "score": self.scores[i],
                "propensity": self.propensities[i],
                "explored": self.explored[i],
                "algorithms": list(self.algorithms[i]),
            }
            if self.shares:  # logged since issue 15; older slates read as they were
                row["shares"], row["credit"] = self._credit(i)
            if self.credit_probabilities:
                row["credit_probability"] = self.credit_probabilities[i]
            if self.credit_weights:
                row["credit_weights"] = dict(self.credit_weights[i])
            row["features"] = dict(zip(names, rows[i], strict=True)) if rows else {}
            out.append(row)
        return out

    @classmethod
    def from_slate(cls, slate: Sequence[dict[str, Any]]) -> Slate:
        """A slate logged as mappings (before features were columns), sorted by position.

        A row without a feature its slate's first row has gets NaN there (missing).

        >>> s = Slate.from_slate([{"item_id": "b", "position": 1, "features": {"x": 2.0}},
        ...                       {"item_id": "a", "position": 0, "features": {"x": 1.0}}])
        >>> s.item_ids, s.features.tolist(), s.feature_names, s.propensities
        (('a', 'b'), [[1.0], [2.0]], ('x',), (1.0, 1.0))
        """
        shown = sorted(slate, key=lambda s: int(s.get("position", 0)))
        names: tuple[str, ...] = ()
        first = shown[0].get("features") if shown else None
        if isinstance(first, dict):
            names = tuple(first)
        features = np.array(
            [
                [
                    float(s["features"].get(n, np.nan))
                    if isinstance(s.get("features"), dict)
                    else np.nan
                    for n in names
                ]
                for s in shown
            ],
            dtype=np.float32,
        ).reshape(len(shown), len(names))
        return cls(
            tuple(str(s["item_id"]) for s in shown),
            tuple(float(s.get("score", 0.0)) for s in shown),
            tuple(float(s.get("propensity", 1.0)) for s in shown),
            tuple(bool(s.get("explored", False)) for s in shown),
            tuple(tuple(s.get("algorithms") or ()) for s in shown),
            features,
            names,
        )


def feature_set_id(names: Sequence[str]) -> str:
    """A feature set's id: 16 hex digits of the SHA-256 of its names, in order.

    >>> feature_set_id(("a", "b")) == feature_set_id(["a", "b"]) != feature_set_id(("b", "a"))
    True
    """
    return hashlib.sha256("\x1f".join(names).encode()).hexdigest()[:16]


def encode(slate: Slate) -> tuple[bytes, bytes, bytes]:
    """(header, numbers, features) of a slate; see the module docstring."""
    parts: list[Any] = [slate.item_ids, slate.algorithms]
    if slate.shares:
        parts += [slate.shares, slate.credits]
        if slate.credit_probabilities:
            parts.append(slate.credit_probabilities)
            if slate.credit_weights:
                parts.append(slate.credit_weights)
    header = orjson.dumps(parts)
    # the tuples' bytes without an array each (numpy's conversion of a Python sequence
    # costs several times these); the same bytes (tests/unit/test_slate_answer.py)
    numbers = _f64(slate.scores) + _f64(slate.propensities) + bytes(map(bool, slate.explored))
    features = isal_zlib.compress(np.asarray(slate.features, dtype=_F32).tobytes(order="F"), 1)
    return header, numbers, features


def _f64(values: Sequence[float]) -> bytes:
    """``values`` as little-endian float64 bytes (``np.asarray(values, "<f8").tobytes()``)."""
    packed = array("d", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def shown_item_ids(header: bytes) -> tuple[str, ...]:
    """The shown items' ids from a slate's ``header`` alone (what :func:`encode` wrote
    first), for readers that need nothing else of it (the model monitor, per impression
    logged).

    Only that first array is decoded (the standard library's scanner stops at its end),
    not the algorithms, shares and credits after it, about three quarters of a 100-item
    header; a header that does not open with an array is decoded whole.
    tests/unit/test_slate_answer.py holds it to ``orjson.loads(header)[0]``.

    >>> s = Slate(("a", "b"), (1.0, 0.5), (1.0, 1.0), (False, False), ((), ()))
    >>> shown_item_ids(encode(s)[0])
    ('a', 'b')
    """
    if header[:2] == b"[[":
        try:
            first, _ = _SCANNER.raw_decode(header.decode(), 1)
        except ValueError:  # UnicodeDecodeError is one too
            first = None
        if isinstance(first, list):
            return tuple(first)
    return tuple(orjson.loads(header)[0])


_SCANNER: Final = json.JSONDecoder()


def decode(header: bytes, numbers: bytes, features: bytes, names: Sequence[str]) -> Slate:
    """The slate :func:`encode` stored; ``names`` are its feature set's names."""
    parts = orjson.loads(header)
    item_ids, algorithms = parts[0], parts[1]
    shares, credits = (parts[2], parts[3]) if len(parts) > 3 else ([], [])
    credit_probabilities = parts[4] if len(parts) > 4 else []
    credit_weights = parts[5] if len(parts) > 5 else []
    n = len(item_ids)
    values = np.frombuffer(numbers, dtype=_F64, count=2 * n)
    explored = np.frombuffer(numbers, dtype=np.uint8, count=n, offset=16 * n)
    return Slate(
        tuple(item_ids),
        tuple(values[:n].tolist()),
        tuple(values[n:].tolist()),
        tuple(bool(x) for x in explored.tolist()),
        tuple(tuple(a) for a in algorithms),
        None,
        tuple(names),
        packed=features,
        shares=tuple(tuple(x) for x in shares),
        credits=tuple(credits),
        credit_probabilities=tuple(credit_probabilities),
        credit_weights=tuple(credit_weights),
    )
