"""Which algorithms may be recommended in a segment: auto-disable, cooldown, probation, overrides.

An algorithm is disabled in a segment when its windowed CTR is credibly too low
(:func:`recloop.core.bandit.disable_reason`). After ``cooldown`` seconds it is
re-enabled *on probation*: from then on only impressions since the probation
started count towards disabling it again, so old evidence cannot disable it
twice. A manual enable or disable is never changed automatically.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBATION_REASON = "re-enabled on probation after the cooldown"


@dataclass(frozen=True, slots=True)
class AlgorithmStatus:
    segment: str
    algorithm: str
    enabled: bool
    manual: bool
    reason: str
    since: float
    probation_since: float | None = None


def evidence_since(status: AlgorithmStatus | None) -> float | None:
    """From when impressions count towards disabling (None: the whole window)."""
    return None if status is None else status.probation_since


def next_status(
    current: AlgorithmStatus | None,
    segment: str,
    algorithm: str,
    disable_reason: str | None,
    now: float,
    cooldown_seconds: float,
) -> AlgorithmStatus | None:
    """The status to move to, or None when it stays as it is.

    ``disable_reason`` is the verdict on the evidence since :func:`evidence_since`.

    >>> off = next_status(None, "new", "trending", "CTR too low", now=0.0, cooldown_seconds=10.0)
    >>> off.enabled, off.reason
    (False, 'CTR too low')
    >>> next_status(off, "new", "trending", "CTR too low", now=5.0, cooldown_seconds=10.0) is None
    True
    >>> back = next_status(off, "new", "trending", "CTR too low", now=10.0, cooldown_seconds=10.0)
    >>> back.enabled, back.probation_since
    (True, 10.0)
    """
    if current is not None and current.manual:
        return None
    if current is None or current.enabled:
        if disable_reason is None:
            return None
        return AlgorithmStatus(segment, algorithm, False, False, disable_reason, now)
    if now - current.since >= cooldown_seconds:
        return AlgorithmStatus(segment, algorithm, True, False, PROBATION_REASON, now, now)
    return None
