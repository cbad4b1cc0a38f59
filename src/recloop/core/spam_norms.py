"""What the population makes normal: robust norms of the rating-profile statistics.

A fixed threshold on a profile statistic is a statement about one world: in
a site where half the ratings are 5 stars, ``extremity`` > 0.6 is an
ordinary generous rater, and where items are chosen nearly uniformly,
``popularity`` near 1 is an ordinary person. :class:`ProfileNorms` holds,
per statistic, the population's median and robust spread (1.4826 times the
median absolute deviation) of its deviations rescaled to the typical
profile size (times ``sqrt(n / typical n)``: most of these statistics are
means over the profile, whose noise falls as ``1 / sqrt(n)``), so that a
signal counts only when the user is also unusual *for this population*:
:meth:`ProfileNorms.gate` is 0 up to ``z0`` robust standard deviations from
the median and 1 from ``z0 + span``. Attackers are a minority, so the median
and the MAD are the genuine users'. The norms are pooled over profile sizes:
per size band they were not (an attack of 60 profiles of 100 ratings was
most of its band and set the band's norm; benchmarks.spam_eval, seed 7).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> rows = [{"extremity": float(x)} for x in rng.normal(0.5, 0.1, 400)]
>>> norms = ProfileNorms.fit(rows, [20] * 400)
>>> round(norms.z("extremity", 0.9, 20), 1), norms.gate("extremity", 0.55, 20)
(4.0, 0.0)
>>> norms.gate("extremity", 0.9, 20), norms.gate("unknown", 0.9, 20)
(1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

__all__ = ["LOW_SIDE", "ProfileNorms"]

LOW_SIDE: Final = frozenset({"mean_var_ratio", "agreement"})
"""Statistics whose unusual side is the low one."""


@dataclass(frozen=True, slots=True)
class ProfileNorms:
    """Per statistic: ``{None: (median, robust sd at the typical size)}`` over all
    profiles; ``typical`` is the median profile size.

    ``z0`` and ``span`` shape :meth:`gate`; ``profiles`` is how many profiles
    the norms were fitted on.
    """

    table: Mapping[str, Mapping[int | None, tuple[float, float]]]
    profiles: int
    z0: float = 2.5
    span: float = 1.0
    typical: float = 1.0
    z0_of: Mapping[str, float] = field(default_factory=dict)
    """``z0`` of particular statistics, where it differs."""

    @classmethod
    def fit(
        cls,
        rows: Sequence[Mapping[str, float]],
        sizes: Sequence[int],
        z0: float = 2.5,
        span: float = 1.0,
        z0_of: Mapping[str, float] | None = None,
    ) -> ProfileNorms:
        """Norms of the statistics in ``rows`` (one mapping per profile, NaN for none),
        ``sizes`` the profiles' numbers of ratings."""
        names = sorted({name for row in rows for name in row})
        n = np.asarray(sizes, dtype=np.float64)
        typical = float(np.median(n)) if len(n) else 1.0
        shrink = np.sqrt(np.maximum(n, 1.0) / max(typical, 1.0))
        table: dict[str, dict[int | None, tuple[float, float]]] = {}
        for name in names:
            values = np.array([row.get(name, math.nan) for row in rows], dtype=np.float64)
            ok = np.isfinite(values)
            per: dict[int | None, tuple[float, float]] = {}
            pooled = _robust(values[ok])
            if pooled is None:
                continue
            centre = pooled[0]
            # deviations as they would be at the typical profile size
            scaled = _robust(centre + (values[ok] - centre) * shrink[ok])
            per[None] = (centre, scaled[1] if scaled is not None else pooled[1])
            table[name] = per
        return cls(table, len(rows), z0, span, typical, dict(z0_of or {}))

    def z(self, name: str, value: float, n: int) -> float:
        """Robust z-score of ``value`` for a profile of ``n`` ratings (NaN if unknown)."""
        per = self.table.get(name)
        if per is None or not math.isfinite(value):
            return math.nan
        centre, scale = per[None]
        return (value - centre) * math.sqrt(max(n, 1) / max(self.typical, 1.0)) / scale

    def gate(self, name: str, value: float, n: int) -> float:
        """0 for a value ordinary in this population, up to 1 for an unusual one; 1 for a
        statistic without norms (the fixed threshold alone decides)."""
        z = self.z(name, value, n)
        if not math.isfinite(z):
            return 1.0
        beyond = -z if name in LOW_SIDE else z
        z0 = self.z0_of.get(name, self.z0)
        return (
            min(max((beyond - z0) / self.span, 0.0), 1.0) if self.span > 0 else float(beyond > z0)
        )


def _robust(values: np.ndarray) -> tuple[float, float] | None:
    """Median and a robust sd: 1.4826 MAD, at least half the sd (discrete statistics
    often have a MAD of 0) and at least 1e-6."""
    if len(values) < 5:
        return None
    centre = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - centre)))
    return centre, max(mad, 0.5 * float(values.std()), 1e-6)
