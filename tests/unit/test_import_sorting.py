"""``importing.sorting.ExternalSort``: bounded memory, and the same order as ``sorted``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.importing.sorting import FRAME, ExternalSort

Item = tuple[float, int, str, dict[str, Any]]


@settings(max_examples=150, deadline=None)
@given(
    times=st.lists(
        st.floats(-1e9, 1e9, allow_nan=False) | st.sampled_from([0.0, 1.0]), max_size=300
    ),
    buffer=st.integers(1, 50),
    arrangement=st.sampled_from(["as drawn", "in order", "in order but two swapped"]),
    swap=st.tuples(st.integers(0, 299), st.integers(0, 299)),
)
def test_external_sort_gives_what_sorted_gives_holding_at_most_its_buffer(
    times: list[float], buffer: int, arrangement: str, swap: tuple[int, int]
) -> None:
    """Random input, and input already in order (its runs do not overlap: read one after
    the other) or nearly (two rows swapped: some runs overlap, merged)."""
    if arrangement != "as drawn":
        times = sorted(times)
    if arrangement == "in order but two swapped" and times:
        a, b = swap[0] % len(times), swap[1] % len(times)
        times[a], times[b] = times[b], times[a]
    items: list[Item] = [(t, i, f"row-{i}", {"n": i}) for i, t in enumerate(times)]
    with tempfile.TemporaryDirectory() as tmp:
        order: ExternalSort[Item] = ExternalSort(Path(tmp), "t", buffer, Item)
        for item in items:
            order.add(item)
        assert order.runs == len(items) // buffer  # every full buffer went to disk
        assert order.count == len(items)
        got = list(order.sorted())
        assert not list(Path(tmp).iterdir())  # the runs are deleted once read
    assert got == sorted(items, key=lambda item: (item[0], item[1]))


def test_runs_longer_than_a_frame_are_read_back_whole(tmp_path: Path) -> None:
    n = 3 * FRAME + 7
    order: ExternalSort[tuple[float, int, bytes]] = ExternalSort(
        tmp_path, "t", 2 * FRAME, tuple[float, int, bytes]
    )
    for i in range(n):
        order.add((float((i * 7919) % n), i, b"x" * (i % 5)))
    assert order.runs == 1
    got = list(order.sorted())
    assert [item[0] for item in got] == [float(t) for t in range(n)]
