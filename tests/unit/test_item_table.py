"""``ItemVectors.table``: the items ``rank`` reads, in columns, against the items themselves
(``core.items.Item`` and ``core.features.hashed_attributes``, the per-item code it replaced)."""

from __future__ import annotations

import numpy as np

from recloop.adapters.memory.store import InMemoryStateStore
from recloop.core.features import ATTRIBUTE_BUCKETS, hashed_attributes
from recloop.core.items import make_item
from recloop.services.vectors import ItemVectors


async def test_table_matches_the_items_and_follows_their_changes() -> None:
    store = InMemoryStateStore()
    stored = [
        make_item("a", [1.0, 0.0, 0.0, 0.0], {"genre": "jazz"}, 4, 10.0),
        make_item("b", None, {"genre": "rock", "tags": ["x", "y"]}, 4, 20.0),
        make_item("c", [0.0, 1.0, 0.0, 0.0], None, 4, 30.0),
    ]
    await store.put_items(stored)
    vectors = ItemVectors(store, max_items=2, dim=4)  # an LRU smaller than the catalogue

    table = await vectors.table(["c", "nope", "a", "b"], hashed=True)
    assert table.known.tolist() == [True, False, True, True]
    by_id = {item.item_id: item for item in stored}
    for row, item_id in ((0, "c"), (2, "a"), (3, "b")):
        item = by_id[item_id]
        assert table.vectors[row].tolist() == list(item.vector)
        assert table.updated_at[row] == item.updated_at
        assert table.from_attributes[row] == (item.vector_source == "hashed")
        assert table.hashed[row].tolist() == hashed_attributes(item.attributes)
    assert not table.vectors[1].any() and not table.hashed[1].any()
    assert table.hashed.shape == (4, ATTRIBUTE_BUCKETS)

    # Registered again with other attributes: the next table hashes them again.
    changed = make_item("a", [0.0, 0.0, 1.0, 0.0], {"genre": "blues"}, 4, 40.0)
    await store.put_items([changed])
    vectors.changed(changed)
    again = await vectors.table(["a"], hashed=True)
    assert again.vectors[0].tolist() == list(changed.vector)
    assert again.updated_at[0] == 40.0
    assert again.hashed[0].tolist() == hashed_attributes({"genre": "blues"})
    assert again.hashed[0].tolist() != hashed_attributes({"genre": "jazz"})

    # Without hashed, no bucket columns; reordering rows keeps every column aligned.
    plain = await vectors.table(["b", "a"])
    assert plain.hashed.shape == (2, 0)
    swapped = plain.take(np.array([1, 0]))
    assert swapped.updated_at.tolist() == [40.0, 20.0]
    assert swapped.from_attributes.tolist() == [False, True]
    assert swapped.vectors.tolist() == plain.vectors[[1, 0]].tolist()
    bare = plain.take(np.array([1, 0]), vectors=False)  # what the features read, no vectors
    assert bare.vectors.shape == (2, 0)
    assert bare.updated_at.tolist() == [40.0, 20.0] and bare.known.tolist() == [True, True]


async def test_table_of_an_empty_catalogue() -> None:
    table = await ItemVectors(InMemoryStateStore(), max_items=8).table(["x", "y"], hashed=True)
    assert table.known.tolist() == [False, False]
    assert table.hashed.shape == (2, ATTRIBUTE_BUCKETS) and not table.hashed.any()


async def test_a_table_of_known_items_equals_the_same_rows_read_with_an_unknown_one() -> None:
    """Every item placed (rank's usual request) takes the path without masks: the same
    rows as when an unknown item among them sends the table down the masked path."""
    store = InMemoryStateStore()
    stored = [
        make_item(
            f"i{n}",
            None if n % 2 else [float(n), 1.0, 0.0, 0.0],
            {"genre": f"g{n % 3}"},
            4,
            float(n),
        )
        for n in range(6)
    ]
    await store.put_items(stored)
    vectors = ItemVectors(store, max_items=16, dim=4)
    ids = ["i4", "i1", "i5", "i0"]
    known = await vectors.table(ids, hashed=True)
    mixed = await vectors.table([*ids, "nope"], hashed=True)
    assert known.known.all() and not mixed.known[-1]
    for name in ("known", "vectors", "updated_at", "from_attributes", "hashed"):
        got, expected = getattr(known, name), getattr(mixed, name)[:4]
        assert got.dtype == expected.dtype and np.array_equal(got, expected), name


async def test_a_table_without_vectors_has_every_other_column_as_with_them() -> None:
    """``rank`` for a user without preferences reads no vectors: the same other columns,
    on the path of known items, the masked one and an empty catalogue."""
    store = InMemoryStateStore()
    await store.put_items(
        [make_item(f"i{n}", [float(n), 1.0, 0.0], {"genre": f"g{n % 2}"}, 3, n) for n in range(4)]
    )
    vectors = ItemVectors(store, max_items=16, dim=3)
    for ids in (["i3", "i0", "i2"], ["i1", "nope", "i3"]):
        full = await vectors.table(ids, hashed=True)
        bare = await vectors.table(ids, hashed=True, vectors=False)
        assert bare.vectors.shape == (3, 0) and full.vectors.shape == (3, 3)
        for name in ("known", "updated_at", "from_attributes", "hashed"):
            got, expected = getattr(bare, name), getattr(full, name)
            assert got.dtype == expected.dtype and np.array_equal(got, expected), name
    empty = await ItemVectors(InMemoryStateStore(), max_items=8, dim=3).table(
        ["x"], hashed=True, vectors=False
    )
    assert empty.vectors.shape == (1, 0) and empty.hashed.shape == (1, ATTRIBUTE_BUCKETS)
