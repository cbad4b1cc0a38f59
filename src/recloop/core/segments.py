"""User segments: the group whose algorithm weights and exploration rate apply.

A user is placed by the first rule that matches (DESIGN.md, "Learning rules")::

    new       interactions < new_max_interactions            (default < 5)
    inactive  now - last_event_at >= inactive_days * 86400   (default 30 days)
    power     interactions > power_min_interactions          (default > 100)
    regular   otherwise

so a user with 3 interactions is new even after a year away, and an idle
power user is inactive. A user recloop has never seen (0 interactions, no
last event) is new.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from recloop.core.errors import InvalidInput

SEGMENTS: Final = ("new", "inactive", "power", "regular")

SECONDS_PER_DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class SegmentRules:
    """The thresholds of :func:`segment_of`; see the module docstring for the rules."""

    new_max_interactions: int = 5
    inactive_days: float = 30.0
    power_min_interactions: int = 100


def segment_of(
    interactions: int, last_event_at: float | None, now: float, rules: SegmentRules = SegmentRules()
) -> str:
    """The segment of a user with ``interactions`` interactions, last active at ``last_event_at``.

    Times are seconds since the epoch; ``last_event_at`` is None for a user
    with no event yet.

    Raises
    ------
    InvalidInput
        if ``interactions`` is negative.

    >>> day = 86_400.0
    >>> segment_of(0, None, 0.0), segment_of(4, 0.0, 90 * day)
    ('new', 'new')
    >>> segment_of(500, 0.0, 30 * day), segment_of(500, 0.0, 29 * day), segment_of(50, 0.0, 0.0)
    ('inactive', 'power', 'regular')
    """
    if interactions < 0:
        raise InvalidInput("interactions", f"must be >= 0, got {interactions}")
    if interactions < rules.new_max_interactions:
        return "new"
    if last_event_at is not None and now - last_event_at >= rules.inactive_days * SECONDS_PER_DAY:
        return "inactive"
    if interactions > rules.power_min_interactions:
        return "power"
    return "regular"


def segment_codes(
    interactions: npt.NDArray[np.int64],
    last_event_at: npt.NDArray[np.float64],
    now: npt.NDArray[np.float64],
    rules: SegmentRules = SegmentRules(),
) -> npt.NDArray[np.int64]:
    """:func:`segment_of` over arrays, as indices into :data:`SEGMENTS` (``last_event_at``
    NaN for a user with no event yet).

    >>> day = 86_400.0
    >>> codes = segment_codes(np.array([0, 500, 500, 50]), np.array([np.nan, 0.0, 0.0, 0.0]),
    ...                       np.array([0.0, 30 * day, 29 * day, 0.0]))
    >>> [SEGMENTS[c] for c in codes]
    ['new', 'inactive', 'power', 'regular']
    """
    idle = (now - last_event_at) >= rules.inactive_days * SECONDS_PER_DAY  # NaN: False
    return np.select(
        [
            interactions < rules.new_max_interactions,
            idle,
            interactions > rules.power_min_interactions,
        ],
        [0, 1, 2],
        default=3,
    ).astype(np.int64)
