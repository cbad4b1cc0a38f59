"""Items: what a user gives feedback on, with the unit vector preferences move towards."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from recloop.core.errors import InvalidInput
from recloop.core.hashing import has_features, hash_features, unit_vector
from recloop.core.preferences import Vector

VectorSource = Literal["given", "hashed"]


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    vector: Vector
    vector_source: VectorSource
    attributes: Mapping[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0


def make_item(
    item_id: str,
    vector: list[float] | None,
    attributes: Mapping[str, Any] | None,
    dim: int,
    now: float,
    field_prefix: str = "",
) -> Item:
    """Validate and build an item: the given vector made unit, else hashed attributes.

    >>> make_item("a", [0.0, 2.0], None, 2, 0.0).vector.tolist()
    [0.0, 1.0]
    >>> make_item("b", None, {"genre": "jazz"}, 8, 0.0).vector_source
    'hashed'
    """
    attributes = dict(attributes or {})
    if vector is not None:
        return Item(
            item_id, unit_vector(vector, dim, f"{field_prefix}vector"), "given", attributes, now
        )
    hashed = hash_features(attributes, dim)
    if hashed is None:
        why = (
            "the attributes' features cancel out when hashed; give a vector"
            if has_features(attributes)
            else "an item needs a vector or attributes with features to hash into one"
        )
        raise InvalidInput(f"{field_prefix}attributes", f"no vector can be derived: {why}")
    return Item(item_id, hashed, "hashed", attributes, now)
