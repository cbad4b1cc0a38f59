"""What the load is made of: the API paths, the item catalogue, and events of a type mix."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

API: Final = "/api/v1/learning"
FEEDBACK: Final = f"{API}/feedback"
ITEMS: Final = f"{API}/items"
HEALTH: Final = f"{API}/health"


def preferences_path(user_id: str) -> str:
    return f"{API}/users/{user_id}/preferences"


Mix = tuple[tuple[str, int], ...]
"""Feedback types with their relative weights."""

IMPLICIT_MIX: Final[Mix] = (("view", 35), ("click", 15), ("impression", 20))
EXPLICIT_MIX: Final[Mix] = (("like", 20), ("rating", 10))
MIXED: Final[Mix] = IMPLICIT_MIX + EXPLICIT_MIX
"""70 % implicit (aggregated per user and item), 30 % explicit (applied at once)."""


@dataclass(frozen=True, slots=True)
class Workload:
    """How many users act on how many items; every item is registered before the load."""

    users: int = 20_000
    items: int = 5_000
    items_per_request: int = 1_000

    def user_id(self, n: int) -> str:
        return f"user-{n % self.users}"

    def item_id(self, n: int) -> str:
        return f"item-{n % self.items}"

    def item_batches(self) -> Iterator[dict[str, Any]]:
        """Bodies for ``POST /items``; vectors are hashed from the attributes.

        Three one-hot attributes: an odd number of ±1 hashed features can never
        cancel out to a zero vector.
        """
        for start in range(0, self.items, self.items_per_request):
            stop = min(start + self.items_per_request, self.items)
            yield {
                "items": [
                    {
                        "item_id": self.item_id(n),
                        "attributes": {
                            "genre": f"genre-{n % 24}",
                            "brand": f"brand-{n % 97}",
                            "sku": f"sku-{n}",
                        },
                    }
                    for n in range(start, stop)
                ]
            }


class EventFactory:
    """Events of ``mix`` on random users and items, with ids unique under ``prefix``."""

    def __init__(self, workload: Workload, prefix: str, mix: Mix = MIXED, seed: int = 0) -> None:
        self._workload = workload
        self._prefix = prefix
        self._types = [t for t, _ in mix]
        self._weights = [w for _, w in mix]
        self._rng = random.Random(seed)
        self._count = 0

    @property
    def count(self) -> int:
        """Events made so far."""
        return self._count

    def batch(self, size: int) -> list[dict[str, Any]]:
        rng, w = self._rng, self._workload
        events = []
        for event_type in rng.choices(self._types, self._weights, k=size):
            self._count += 1
            event: dict[str, Any] = {
                "event_id": f"{self._prefix}-{self._count}",
                "user_id": w.user_id(rng.randrange(w.users)),
                "item_id": w.item_id(rng.randrange(w.items)),
                "type": event_type,
            }
            if event_type == "rating":
                event["value"] = rng.randint(1, 5)
            events.append(event)
        return events

    def body(self, size: int) -> bytes:
        """A ``POST /feedback`` body holding a batch of ``size`` events."""
        return orjson.dumps({"events": self.batch(size)})
