"""``admit_groups`` for a limiter that decides one class at a time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from recloop.core.ratelimit import Admission

AdmitMany = Callable[[str, Sequence[tuple[str, int]]], Awaitable[dict[int, Admission]]]


async def admit_each(
    admit_many: AdmitMany,
    groups: Sequence[tuple[str, Sequence[tuple[str, int]]]],
    gate: bool,
) -> list[dict[int, Admission] | None]:
    """Each group's ``admit_many``, in order; with ``gate``, the groups after a first
    group refused in part are not asked (None)."""
    decided: list[dict[int, Admission] | None] = []
    for action, asks in groups:
        if gate and decided and decided[0]:
            decided.append(None)  # the first group was refused in part
        else:
            decided.append(await admit_many(action, asks))
    return decided
