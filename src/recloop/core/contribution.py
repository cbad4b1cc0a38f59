"""What one user's own events added to shared counts: the optimizer's, for now.

A user flagged by the guard (suspect or blocked) is left out of what others
are served; the experiments' results and the items' counts keep each user's
part apart already, the optimizer's windowed counts do not (they are sums per
segment, algorithm and hour). :func:`attributed_counts` finds a user's part
again from their logged events: each attributed event's counts
(:func:`~recloop.core.bandit.attributed`), under the segment the user was in
before it, replayed from their own history (every event but an impression is an
interaction; the last event's time decides idleness).

The replay is the processor's rule for explicit events; an implicit event's
segment is taken before each event rather than before its aggregation window,
so a user crossing a segment boundary inside a window may be counted one
event off (``docs/spam.md`` says so).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from recloop.core.bandit import PerformanceCounts, attributed, bucket_start
from recloop.core.events import Event
from recloop.core.segments import SegmentRules, segment_of

Counted = tuple[str, str, float, PerformanceCounts]
"""(segment, algorithm, bucket start, counts)."""


def attributed_counts(
    events: Sequence[Event],
    algorithms: Collection[str],
    bucket_seconds: float,
    rules: SegmentRules = SegmentRules(),
    credit_clip: float = math.inf,
) -> list[Counted]:
    """The optimizer counts ``events`` (one user's, in log order) added, summed per
    (segment, algorithm, bucket), credit weights clipped at ``credit_clip`` as the
    processor clips them (``exploration.credit_clip``).

    >>> from recloop.core.events import Event
    >>> seen = [Event(f"e{k}", "u", "i", "like", 10.0 * k) for k in range(5)]
    >>> seen.append(Event("c", "u", "i", "click", 60.0, attribution={"algorithm": "pop"}))
    >>> seen.append(Event("d", "u", "i", "click", 3_700.0, attribution={"algorithm": "pop"}))
    >>> [(s, a, b, c.clicks) for s, a, b, c in attributed_counts(seen, {"pop"}, 3_600.0)]
    [('regular', 'pop', 0.0, 1), ('regular', 'pop', 3600.0, 1)]
    """
    sums: dict[tuple[str, str, float], PerformanceCounts] = {}
    interactions = 0
    last_at: float | None = None
    for e in events:
        credited = attributed(e.attribution, e.type, e.value, credit_clip) if e.attribution else []
        for algorithm, counts in credited:
            if algorithm in algorithms:
                segment = segment_of(interactions, last_at, e.timestamp, rules)
                key = (segment, algorithm, bucket_start(e.timestamp, bucket_seconds))
                found = sums.get(key)
                sums[key] = counts if found is None else found + counts
        if e.type != "impression":
            interactions += 1
        last_at = e.timestamp if last_at is None else max(last_at, e.timestamp)
    return [(s, a, b, c) for (s, a, b), c in sums.items()]
