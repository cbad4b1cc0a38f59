"""Runs of equal values in a sorted array: where each starts, where it ends, how long.

``np.r_[True, k[1:] != k[:-1]]`` says the same, but ``np.r_`` costs about ten µs a
call whatever the array's size: the guard's fold and the rate limiter take a dozen
such marks per round, and on the small rounds of a stream of one-event requests those
calls were a third of the fold. These write into one preallocated array instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]


def run_starts(k: npt.NDArray[Any]) -> Bools:
    """True where a run of equal values starts (``k`` sorted, or grouped).

    >>> run_starts(np.array([3, 3, 5, 7, 7])).tolist()
    [True, False, True, True, False]
    >>> run_starts(np.array([], np.int64)).tolist()
    []
    """
    out = np.empty(len(k), np.bool_)
    if len(k):
        out[0] = True
        np.not_equal(k[1:], k[:-1], out=out[1:])
    return out


def run_ends(k: npt.NDArray[Any]) -> Bools:
    """True where a run of equal values ends.

    >>> run_ends(np.array([3, 3, 5, 7, 7])).tolist()
    [False, True, True, False, True]
    """
    out = np.empty(len(k), np.bool_)
    if len(k):
        out[-1] = True
        np.not_equal(k[1:], k[:-1], out=out[:-1])
    return out


def repeats(k: npt.NDArray[Any]) -> Bools:
    """True where a value equals the one before it (``~run_starts(k)``).

    >>> repeats(np.array([3, 3, 5, 7, 7])).tolist()
    [False, True, False, False, True]
    """
    out = np.empty(len(k), np.bool_)
    if len(k):
        out[0] = False
        np.equal(k[1:], k[:-1], out=out[1:])
    return out


def shifted(a: npt.NDArray[Any], first: int) -> npt.NDArray[Any]:
    """``a`` one place later, ``first`` in front (``np.r_[first, a[:-1]]``).

    >>> shifted(np.array([4, 5, 6]), -1).tolist()
    [-1, 4, 5]
    """
    out = np.empty(len(a), a.dtype)
    if len(a):
        out[0] = first
        out[1:] = a[:-1]
    return out


def run_sizes(starts: Ints, n: int) -> Ints:
    """Each run's length, from the runs' start positions in an array of ``n``
    (``np.diff(np.r_[starts, n])``).

    >>> run_sizes(np.array([0, 2, 3]), 5).tolist()
    [2, 1, 2]
    """
    out = np.empty(len(starts), np.int64)
    if len(starts):
        np.subtract(starts[1:], starts[:-1], out=out[:-1])
        out[-1] = n - starts[-1]
    return out
