"""``importing.rows``: the JSON Lines shortcuts (a row with only API fields and no nulls
decoded as read, without renaming; the id rule checked only when the line's bytes may
break it) give what the full path gives."""

from __future__ import annotations

import json
from pathlib import Path

from recloop.importing.rows import read

ROWS = [
    {"user_id": "u1", "item_id": "i1", "type": "rating", "value": 4, "timestamp": 1.7e9},
    {"user_id": "u1", "item_id": "i2", "type": "click", "timestamp": "2026-01-02T03:04:05Z",
     "attribution": {"algorithm": "popularity", "impression_id": "s1", "variant": None}},
    {"user_id": "u2", "item_id": "i3", "type": "view", "timestamp": 1.7e9, "event_id": None},
    {"user_id": "u2", "item_id": "i3", "type": "like", "timestamp": 1.7e9, "extra": 1},
    {"user_id": "u3", "item_id": "i4", "type": "click", "timestamp": 1.7e9,
     "attribution.algorithm": "trending", "context": {"score": 0.5}},
    {"user_id": "u3", "item_id": "i4", "type": "bogus", "timestamp": 1.7e9},
    {"user_id": "u4", "item_id": "i5", "type": "view"},
    {"user_id": "u/5", "item_id": "i5", "type": "view", "timestamp": 1.7e9},
    {"user_id": "u6", "item_id": "..", "type": "view", "timestamp": 1.7e9},
    {"user_id": "u6", "item_id": "i\u0001", "type": "view", "timestamp": 1.7e9},
]  # fmt: skip


def test_rows_read_as_they_are_equal_rows_renamed(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    shortcut: set[str] = set()
    renamed: set[str] = set()
    # a mapping of a column no row has: every row goes through the renaming
    fast = list(read(path, {}, shortcut))
    slow = list(read(path, {"absent": "value"}, renamed))
    assert [r.event for r in fast] == [r.event for r in slow]
    errors = [[None if r.error is None else (r.error.field, str(r.error)) for r in rows]
              for rows in (fast, slow)]  # fmt: skip
    assert errors[0] == errors[1]
    assert shortcut == renamed == {"extra"}
    assert [r.event is None for r in fast] == [False] * 5 + [True] * 5
    # the id rule (core.ids), checked when the line's bytes may break it
    assert [r.error.field for r in fast[7:] if r.error] == ["user_id", "item_id", "item_id"]
    assert fast[4].event is not None and fast[4].event.attribution is not None
    assert fast[4].event.attribution.algorithm == "trending"  # dotted: nested by renaming
