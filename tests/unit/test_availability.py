"""Auto-disable, cooldown, probation and manual overrides (core/availability.py)."""

from __future__ import annotations

from recloop.core.availability import (
    PROBATION_REASON,
    AlgorithmStatus,
    evidence_since,
    next_status,
)

DAY = 86_400.0


def test_enabled_algorithm_stays_enabled_without_a_reason() -> None:
    assert next_status(None, "new", "a", None, 0.0, DAY) is None
    on = AlgorithmStatus("new", "a", True, False, "ok", 0.0)
    assert next_status(on, "new", "a", None, 5.0, DAY) is None


def test_disable_then_probation_after_exactly_the_cooldown() -> None:
    off = next_status(None, "new", "a", "too low", 100.0, DAY)
    assert off == AlgorithmStatus("new", "a", False, False, "too low", 100.0)
    assert evidence_since(off) is None
    assert next_status(off, "new", "a", "too low", 100.0 + DAY - 1, DAY) is None
    back = next_status(off, "new", "a", "too low", 100.0 + DAY, DAY)
    assert back == AlgorithmStatus(
        "new", "a", True, False, PROBATION_REASON, 100.0 + DAY, 100.0 + DAY
    )
    # on probation, only evidence since its start counts
    assert evidence_since(back) == 100.0 + DAY
    again = next_status(back, "new", "a", "still too low", 200.0 + DAY, DAY)
    assert again is not None and not again.enabled and again.reason == "still too low"


def test_manual_status_is_never_changed_automatically() -> None:
    manual_on = AlgorithmStatus("power", "a", True, True, "by hand", 0.0)
    assert next_status(manual_on, "power", "a", "too low", 10 * DAY, DAY) is None
    manual_off = AlgorithmStatus("power", "a", False, True, "by hand", 0.0)
    assert next_status(manual_off, "power", "a", None, 10 * DAY, DAY) is None
