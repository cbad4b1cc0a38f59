"""How far each log partition is applied: the watermark replay starts after."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Progress:
    """Where one log partition stands.

    ``last_begun`` is the highest offset handed to the processor; ``watermark``
    the highest below which every offset is in committed state, so replay after a
    crash may start right after it. ``handed`` counts the events handed on,
    ``committed`` those whose outcome is committed (applied, passed over or held).

    >>> p = Progress(watermark=10, last_begun=10)
    >>> p.last_begun, p.handed = 13, 3
    >>> p.in_flight
    3
    >>> p.watermark, p.committed = 13, 3
    >>> p.in_flight
    0
    """

    watermark: int = 0
    last_begun: int = 0
    handed: int = 0
    committed: int = 0

    @property
    def in_flight(self) -> int:
        """Events handed on whose outcome is not committed yet."""
        return self.handed - self.committed
