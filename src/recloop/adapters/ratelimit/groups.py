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
        decided.append(None if gated(decided, gate) else await admit_many(action, asks))
    return decided


def gated(decided: Sequence[dict[int, Admission] | None], gate: bool) -> bool:
    """Whether the next group goes unasked: ``gate`` and the first group refused in part."""
    return gate and bool(decided) and bool(decided[0])
