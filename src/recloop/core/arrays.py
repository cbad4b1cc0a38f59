"""Reductions of short arrays by their ufuncs, past numpy's Python wrappers.

``a.any()``, ``a.sum()``, ``np.cumsum(a)`` and their kin are Python functions
(``numpy/_core/_methods.py``, ``fromnumeric.py``) around one ufunc call. On the
100-value arrays of a ``rank`` request the wrapper costs more than the reduction, and
more again mid-request, where its code has left the caches since the last call. The
ufuncs' own methods give the same values (the wrappers call exactly them) in one
C-level call; the hot path uses these names instead.

>>> a = np.array([0.5, 0.25, 2.0])
>>> float(sum_of(a)) == float(a.sum()), cumsum_of(a).tolist() == np.cumsum(a).tolist()
(True, True)
>>> bool(any_of(a > 1.0)), bool(all_of(a > 1.0)), float(min_of(a)), float(max_of(a))
(True, False, 0.25, 2.0)
"""

from __future__ import annotations

from typing import Final

import numpy as np

any_of: Final = np.logical_or.reduce
"""``a.any()`` of a 1-D array."""

all_of: Final = np.logical_and.reduce
"""``a.all()`` of a 1-D array."""

sum_of: Final = np.add.reduce
"""``a.sum()`` (``axis=0``)."""

min_of: Final = np.minimum.reduce
"""``a.min()`` of a non-empty 1-D array."""

max_of: Final = np.maximum.reduce
"""``a.max()`` of a non-empty 1-D array."""

cumsum_of: Final = np.add.accumulate
"""``np.cumsum(a)`` of a 1-D array."""
