"""Deterministic experiment assignment, bucket for bucket the same as GrowthBook's.

A user's bucket is a hash of the experiment's seed and the user's id, a
number ``h`` in [0, 1) (:func:`gb_hash`). Each variant owns a range of
buckets (:func:`bucket_ranges`); the user gets the variant whose range holds
``h`` (:func:`choose_variation`), or none: outside every range they are not
in the experiment. :func:`assign` does all three.

Hash versions (GrowthBook's ``hashVersion``), with ``fnv`` the 32-bit
FNV-1a hash (:func:`fnv1a32`)::

    v1:  h = (fnv(value + seed) mod 1000) / 1000
    v2:  h = (fnv(str(fnv(seed + value))) mod 10000) / 10000

Version 2, with 10,000 buckets, is what GrowthBook uses for new
experiments; version 1 is here for GrowthBook experiments that set no
``hashVersion``, which hash with it.

The ranges start at the cumulative weights, each as wide as ``coverage``
times its weight::

    range_i = [W_i, W_i + coverage * w_i),   W_i = w_0 + ... + w_(i-1)

so raising coverage (0.2 → 0.5 → 1.0) only widens ranges: a user once in
variant ``i`` stays in ``i``, and users only ever join.

Namespaces (GrowthBook's mutual exclusion): an experiment may name a
namespace and a range ``[start, end)`` of it. A user is in the namespace range
when ``gb_hash("__" + namespace, user_id, 1)`` (version 1, whatever the
experiment's own hash version) lies in the range (:func:`in_namespace`, the
SDK's ``inNamespace``); experiments of one namespace with disjoint ranges never
share a user. Outside the range the user is not in the experiment, before any
variant is chosen.

Compatibility with GrowthBook
-----------------------------
Every function here returns what its GrowthBook SDK counterpart returns,
bit for bit: ``fnv1a32``, ``gbhash``, ``getEqualWeights``,
``getBucketRanges``, ``chooseVariation`` and ``inNamespace`` of ``growthbook.core``
(checked against the package in ``tests/unit/test_assignment.py``), so a
team moving from GrowthBook keeps its buckets when the seed (GrowthBook's
``seed``, which defaults there to the experiment key), the user id,
coverage, weights and hash version carry over.

Non-ASCII ids: the hash runs over the string's UTF-16 code units, not its
UTF-8 bytes or its code points, as the JavaScript SDKs do (a
``charCodeAt`` loop) and as the Python SDK does (``growthbook`` 4.0.0,
the version this project tests against). A character above U+FFFF counts
as its two surrogates, and a lone surrogate (which Python strings can hold)
as itself. So every id, ASCII or not, lands in the same bucket here as in
the Python and JavaScript SDKs. For ASCII strings the code units are the
bytes.

References
----------
GrowthBook SDK specification, "Hashing" and "getBucketRanges",
https://docs.growthbook.io/lib/build-your-own
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Final

_FNV_OFFSET_BASIS = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MASK_32 = 0xFFFFFFFF

MEMO_MAX: Final = 65_536
"""Users whose variation an :class:`Assigner` remembers (all forgotten when it is full)."""

# Weights summing outside [0.99, 1.01] fall back to equal weights, as in GrowthBook.
_WEIGHT_SUM_MIN = 0.99
_WEIGHT_SUM_MAX = 1.01


def fnv1a32(data: str, h: int = _FNV_OFFSET_BASIS) -> int:
    """The 32-bit FNV-1a hash of ``data``'s UTF-16 code units.

    For each code unit ``u``: ``h = ((h XOR u) * 16777619) mod 2**32``,
    starting from ``h = 2166136261``, or from ``h`` given: the hash of a prefix, so
    that ``fnv1a32(b, fnv1a32(a)) == fnv1a32(a + b)``.

    >>> fnv1a32(""), fnv1a32("a")
    (2166136261, 3826002220)
    >>> fnv1a32("é") == fnv1a32("\\u00e9")
    True
    >>> fnv1a32("user-1", fnv1a32("exp")) == fnv1a32("expuser-1")
    True
    """
    units: bytes | tuple[int, ...]
    if data.isascii():
        units = data.encode("ascii")
    else:
        encoded = data.encode("utf-16-le", "surrogatepass")
        units = struct.unpack(f"<{len(encoded) // 2}H", encoded)
    for unit in units:
        h = ((h ^ unit) * _FNV_PRIME) & _MASK_32
    return h


def gb_hash(seed: str, value: str, version: int) -> float | None:
    """GrowthBook's hash of ``value`` under ``seed``: a bucket in [0, 1); None for unknown versions.

    v1 has 1,000 buckets, v2 10,000 (formulas in the module docstring).

    >>> gb_hash("exp", "user-1", 2), gb_hash("exp", "user-1", 1), gb_hash("exp", "user-1", 3)
    (0.3004, 0.331, None)
    """
    if version == 2:
        return (fnv1a32(str(fnv1a32(seed + value))) % 10_000) / 10_000
    if version == 1:
        return (fnv1a32(value + seed) % 1_000) / 1_000
    return None


def equal_weights(n: int) -> list[float]:
    """``n`` weights of ``1 / n``; none when ``n < 1``.

    >>> equal_weights(4), equal_weights(0)
    ([0.25, 0.25, 0.25, 0.25], [])
    """
    if n < 1:
        return []
    return [1 / n] * n


def _usable_weights(num_variations: int, weights: list[float] | None) -> list[float]:
    """``weights`` if one finite, non-negative weight per variation sums to ~1, else equal ones."""
    if (
        weights is None
        or len(weights) != num_variations
        or not all(math.isfinite(w) and w >= 0 for w in weights)
        or not _WEIGHT_SUM_MIN <= sum(weights) <= _WEIGHT_SUM_MAX
    ):
        return equal_weights(num_variations)
    return weights


def bucket_ranges(
    num_variations: int, coverage: float, weights: list[float] | None
) -> list[tuple[float, float]]:
    """The half-open bucket range ``[start, end)`` of each variation.

    ``range_i = [W_i, W_i + coverage * w_i)`` with ``W_i`` the sum of the
    weights before ``i``. ``coverage`` is clamped to [0, 1]. ``weights``
    fall back to equal weights unless there is one finite, non-negative
    weight per variation and they sum to between 0.99 and 1.01 (what the
    Python SDK accepts; the JS SDK checks only the length and the sum).

    >>> bucket_ranges(2, 0.5, None)
    [(0, 0.25), (0.5, 0.75)]
    >>> bucket_ranges(3, 1.0, [0.2, 0.3, 0.5])
    [(0, 0.2), (0.2, 0.5), (0.5, 1.0)]
    >>> bucket_ranges(2, 1.0, [0.7, 0.7])  # sums to 1.4: equal weights instead
    [(0, 0.5), (0.5, 1.0)]
    """
    coverage = min(max(coverage, 0), 1)
    cumulative: float = 0
    ranges = []
    for w in _usable_weights(num_variations, weights):
        start = cumulative
        cumulative += w
        ranges.append((start, start + coverage * w))
    return ranges


def choose_variation(n: float, ranges: list[tuple[float, float]]) -> int:
    """The index of the first range with ``start <= n < end``; -1 if none holds ``n``.

    >>> ranges = bucket_ranges(2, 0.5, None)
    >>> choose_variation(0.1, ranges), choose_variation(0.6, ranges), choose_variation(0.3, ranges)
    (0, 1, -1)
    """
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return -1


def in_namespace(user_id: str, namespace: str, start: float, end: float) -> bool:
    """Whether ``user_id`` falls in ``[start, end)`` of ``namespace`` (GrowthBook's rule).

    >>> in_namespace("user-1", "checkout", 0.0, 0.5), in_namespace("user-1", "checkout", 0.5, 1.0)
    (False, True)
    """
    n = gb_hash("__" + namespace, user_id, 1)
    return n is not None and start <= n < end


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a user landed in an experiment.

    ``hash_value`` is the user's bucket in [0, 1), None when no bucket was
    computed (empty id, unknown hash version); ``variant_index`` is None
    exactly when ``in_experiment`` is false.
    """

    variant_index: int | None
    hash_value: float | None
    in_experiment: bool


def assign(
    user_id: str,
    seed: str,
    num_variations: int,
    coverage: float = 1.0,
    weights: list[float] | None = None,
    hash_version: int = 2,
    namespace: tuple[str, float, float] | None = None,
) -> Assignment:
    """Assign ``user_id`` to a variation of the experiment seeded by ``seed``, as GrowthBook does.

    ``h = gb_hash(seed, user_id, hash_version)``, then the variation whose
    :func:`bucket_ranges` range holds ``h``. Not in the experiment when
    ``h`` falls outside every range (coverage below 1), for an empty
    ``user_id`` (GrowthBook skips users without a hash attribute) and for an
    unknown hash version. GrowthBook hashes with version 1 when an experiment sets
    none: pass ``hash_version=1`` for those. ``namespace``: ``(name, start, end)``;
    a user outside that range of the namespace is not in the experiment
    (:func:`in_namespace`; then no bucket is computed, ``hash_value`` is None).

    >>> assign("user-1", "exp", 3, coverage=0.5, weights=[0.2, 0.3, 0.5])
    Assignment(variant_index=1, hash_value=0.3004, in_experiment=True)
    >>> assign("user-1", "exp", 2, coverage=0.2)
    Assignment(variant_index=None, hash_value=0.3004, in_experiment=False)
    """
    if namespace is not None and not in_namespace(user_id, *namespace):
        return Assignment(None, None, False)
    h = gb_hash(seed, user_id, hash_version) if user_id else None
    if h is None:
        return Assignment(None, None, False)
    index = choose_variation(h, bucket_ranges(num_variations, coverage, weights))
    if index < 0:
        return Assignment(None, h, False)
    return Assignment(index, h, True)


@dataclass(frozen=True, slots=True)
class Assigner:
    """:func:`assign` for one experiment's definition, with what depends on the definition
    alone worked out once (the bucket ranges; under hash version 2, the hash of the seed,
    the prefix of what is hashed): a read answers a user with the hashing of their id.

    ``index(user_id)`` is ``assign(user_id, ...).variant_index`` for the arguments of
    :meth:`of` (a differential test holds the two together). It remembers the answers of
    up to :data:`MEMO_MAX` users (a user asks again and again; a new definition is a new
    assigner).

    >>> a = Assigner.of("exp", 3, coverage=0.5, weights=[0.2, 0.3, 0.5])
    >>> a.index("user-1"), Assigner.of("exp", 2, coverage=0.2).index("user-1")
    (1, None)
    """

    seed: str
    hash_version: int
    ranges: tuple[tuple[float, float], ...]
    namespace: tuple[str, float, float] | None
    seed_hash: int
    """``fnv1a32(seed)``: where version 2's first hash of ``seed + user_id`` goes on from."""
    memo: dict[str, int | None] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        seed: str,
        num_variations: int,
        coverage: float = 1.0,
        weights: list[float] | None = None,
        hash_version: int = 2,
        namespace: tuple[str, float, float] | None = None,
    ) -> Assigner:
        """The assigner of :func:`assign`'s arguments but the user's id."""
        ranges = tuple(bucket_ranges(num_variations, coverage, weights))
        return cls(seed, hash_version, ranges, namespace, fnv1a32(seed))

    def index(self, user_id: str) -> int | None:
        """The user's variation index; None when not in the experiment."""
        memo = self.memo
        if user_id in memo:
            return memo[user_id]
        if len(memo) >= MEMO_MAX:
            memo.clear()
        found = memo[user_id] = self._index(user_id)
        return found

    def _index(self, user_id: str) -> int | None:
        if not user_id:
            return None
        if self.namespace is not None and not in_namespace(user_id, *self.namespace):
            return None
        if self.hash_version == 2:
            h = (fnv1a32(str(fnv1a32(user_id, self.seed_hash))) % 10_000) / 10_000
        elif self.hash_version == 1:
            h = (fnv1a32(user_id + self.seed) % 1_000) / 1_000
        else:
            return None
        for i, (start, end) in enumerate(self.ranges):
            if start <= h < end:
                return i
        return None
