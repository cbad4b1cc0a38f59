"""UUID version 7 identifiers (core.ids)."""

from __future__ import annotations

import time
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.ids import uuid7

NOW_NS = st.integers(0, (1 << 48) * 1_000_000 - 1)  # every 48-bit millisecond


@settings(deadline=None)
@given(now_ns=NOW_NS)
def test_version_variant_and_timestamp(now_ns: int) -> None:
    u = uuid.UUID(uuid7(now_ns))
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert u.int >> 80 == now_ns // 1_000_000


@settings(deadline=None)
@given(ms=st.lists(st.integers(0, (1 << 48) - 1), min_size=2, max_size=20, unique=True))
def test_time_ordered(ms: list[int]) -> None:
    ms.sort()
    ids = [uuid7(m * 1_000_000 + 999_999) for m in ms]
    assert ids == sorted(ids)
    assert [uuid.UUID(i) for i in ids] == sorted(uuid.UUID(i) for i in ids)


def test_default_clock_and_uniqueness() -> None:
    before = time.time_ns() // 1_000_000
    ids = {uuid7() for _ in range(1_000)}
    after = time.time_ns() // 1_000_000
    assert len(ids) == 1_000
    assert all(before <= uuid.UUID(i).int >> 80 <= after for i in ids)
    assert len({uuid7(0) for _ in range(1_000)}) == 1_000  # random bits within one millisecond
