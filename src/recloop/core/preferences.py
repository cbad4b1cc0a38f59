"""Per-user preference vectors learnt by an exponential moving average.

The update rule (DESIGN.md, "Learning rules")::

    p <- alpha * s * v + (1 - alpha) * p
    alpha = clamp(base_alpha * |signal| * reliability / 100, 0, alpha_max)

with ``v`` the item's unit vector and ``s = sign(signal)``. Explicit events
are applied one by one; implicit events of one (user, item) are summed over
the aggregation window (:class:`ImplicitAggregate`) and applied as one
update with the summed signal.

Each :class:`UserState` also carries the highest log offset applied from each
stream (explicit and implicit). They are stored with the vector in one
transaction, so replaying the log after a crash skips what is already in
the vector: every event is applied exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LearningRate:
    base_alpha: float = 0.1
    alpha_max: float = 0.5

    def __call__(self, signal: float, reliability: float = 100.0) -> float:
        """The step size for one update.

        >>> rate = LearningRate(base_alpha=0.1, alpha_max=0.5)
        >>> rate(1.0), rate(-2.0), rate(100.0), rate(1.0, reliability=50.0)
        (0.1, 0.2, 0.5, 0.05)
        """
        alpha = self.base_alpha * abs(signal) * reliability / 100.0
        return min(max(alpha, 0.0), self.alpha_max)


def ema_update(p: Vector, v: Vector, signal: float, alpha: float) -> Vector:
    """One EMA step of ``p`` towards ``v`` (or away from it for a negative signal).

    >>> p = np.zeros(2); v = np.array([1.0, 0.0])
    >>> ema_update(p, v, 1.0, 0.5).tolist(), ema_update(p, v, -1.0, 0.5).tolist()
    ([0.5, 0.0], [-0.5, 0.0])
    """
    if alpha == 0.0 or signal == 0.0:
        return p
    s = 1.0 if signal > 0 else -1.0
    return alpha * s * v + (1.0 - alpha) * p


@dataclass(slots=True)
class ImplicitAggregate:
    """The implicit events of one (user, item) since the last flush."""

    signal: float = 0.0
    interactions: int = 0
    impressions: int = 0
    max_offset: int = -1
    first_at: float = math.inf
    last_at: float = -math.inf

    def add(self, signal: float, is_impression: bool, offset: int, timestamp: float) -> None:
        if is_impression:
            self.impressions += 1
        else:
            self.interactions += 1
            self.signal += signal
        self.max_offset = max(self.max_offset, offset)
        self.first_at = min(self.first_at, timestamp)
        self.last_at = max(self.last_at, timestamp)


@dataclass(frozen=True, slots=True)
class Preferences:
    """An immutable view of a :class:`UserState`, for readers.

    Cheap to take: vectors are never changed in place (every update builds a
    new array), so the snapshot shares the state's current array.
    """

    user_id: str
    vector: Vector
    events_applied: int
    events_skipped: int
    interactions: int
    impressions: int
    first_event_at: float | None
    last_event_at: float | None
    updated_at: float | None
    events_held: int = 0


@dataclass(slots=True)
class UserState:
    """What recloop knows of one user; see the module docstring for the offsets."""

    user_id: str
    vector: Vector
    events_applied: int = 0
    events_skipped: int = 0
    interactions: int = 0
    impressions: int = 0
    first_event_at: float | None = None
    last_event_at: float | None = None
    updated_at: float | None = None
    explicit_offset: int = -1
    implicit_offset: int = -1
    events_held: int = 0
    """Events kept but not learnt from: the user was suspect or blocked when they applied."""

    @classmethod
    def new(cls, user_id: str, dim: int) -> UserState:
        return cls(user_id=user_id, vector=np.zeros(dim))

    def snapshot(self) -> Preferences:
        return Preferences(
            self.user_id,
            self.vector,
            self.events_applied,
            self.events_skipped,
            self.interactions,
            self.impressions,
            self.first_event_at,
            self.last_event_at,
            self.updated_at,
            self.events_held,
        )

    def _touch(self, first_at: float, last_at: float, now: float) -> None:
        if self.first_event_at is None or first_at < self.first_event_at:
            self.first_event_at = first_at
        if self.last_event_at is None or last_at > self.last_event_at:
            self.last_event_at = last_at
        self.updated_at = now

    def apply_explicit(
        self,
        offset: int,
        signal: float,
        item_vector: Vector | None,
        timestamp: float,
        rate: LearningRate,
        now: float,
        reliability: float = 100.0,
    ) -> bool:
        """Apply one explicit event; False (and nothing changed) if already applied."""
        if offset <= self.explicit_offset:
            return False
        if item_vector is None:
            self.events_skipped += 1
        else:
            alpha = rate(signal, reliability)
            self.vector = ema_update(self.vector, item_vector, signal, alpha)
            self.events_applied += 1
        self.interactions += 1
        self.explicit_offset = offset
        self._touch(timestamp, timestamp, now)
        return True

    def hold_explicit(self, offset: int, timestamp: float, now: float) -> bool:
        """Record an explicit event without learning from it (an unreliable user)."""
        if offset <= self.explicit_offset:
            return False
        self.events_held += 1
        self.explicit_offset = offset
        self._touch(timestamp, timestamp, now)
        return True

    def hold_implicit(self, agg: ImplicitAggregate, now: float) -> None:
        """Record an aggregate without learning from it (an unreliable user)."""
        self.events_held += agg.interactions + agg.impressions
        self.implicit_offset = max(self.implicit_offset, agg.max_offset)
        self._touch(agg.first_at, agg.last_at, now)

    def apply_implicit(
        self,
        agg: ImplicitAggregate,
        item_vector: Vector | None,
        rate: LearningRate,
        now: float,
        reliability: float = 100.0,
    ) -> None:
        """Apply one (user, item) aggregate as a single EMA step.

        The caller only aggregates events above ``implicit_offset``.
        """
        if agg.interactions:
            if item_vector is None:
                self.events_skipped += agg.interactions
            else:
                alpha = rate(agg.signal, reliability)
                self.vector = ema_update(self.vector, item_vector, agg.signal, alpha)
                self.events_applied += agg.interactions
            self.interactions += agg.interactions
        self.impressions += agg.impressions
        self.implicit_offset = max(self.implicit_offset, agg.max_offset)
        self._touch(agg.first_at, agg.last_at, now)
