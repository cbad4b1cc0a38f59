"""What the load is made of: the API paths, the item catalogue, events of a type mix, and
the users, candidates and experiment the read-path benchmarks ask about."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

API: Final = "/api/v1/learning"
FEEDBACK: Final = f"{API}/feedback"
ITEMS: Final = f"{API}/items"
HEALTH: Final = f"{API}/health"
EXPERIMENTS: Final = f"{API}/experiments"

ALGORITHMS: Final = ("collaborative", "content_based", "popularity", "trending")
"""The server's default ``bandit.algorithms``."""


def preferences_path(user_id: str) -> str:
    return f"{API}/users/{user_id}/preferences"


def weights_path(user_id: str) -> str:
    return f"{API}/users/{user_id}/weights"


def strategy_path(user_id: str) -> str:
    return f"{API}/users/{user_id}/strategy"


def rank_path(user_id: str) -> str:
    return f"{API}/users/{user_id}/rank"


def experiment_path(experiment_id: str) -> str:
    return f"{EXPERIMENTS}/{experiment_id}"


def assignment_path(experiment_id: str, user_id: str) -> str:
    return f"{EXPERIMENTS}/{experiment_id}/assignment/{user_id}"


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
    """Events of ``mix`` on random users and items, with ids unique under ``prefix``.

    The users are the workload's (``Workload.user_id``), or with a ``user_prefix`` as many
    users of their own, ``{user_prefix}-{n}``: the guard judges users by their history, so a
    load that must not inherit what earlier loads did to the workload's users gets fresh ones.
    """

    def __init__(
        self,
        workload: Workload,
        prefix: str,
        mix: Mix = MIXED,
        seed: int = 0,
        user_prefix: str | None = None,
    ) -> None:
        self._workload = workload
        self._prefix = prefix
        self._user_prefix = user_prefix
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
                "user_id": self._user_id(rng.randrange(w.users)),
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

    def _user_id(self, n: int) -> str:
        if self._user_prefix is None:
            return self._workload.user_id(n)
        return f"{self._user_prefix}-{n}"


# -- the read path -------------------------------------------------------------------


DAY: Final = 86_400.0
HOUR: Final = 3_600.0


@dataclass(frozen=True, slots=True)
class Cohort:
    """Known users who each liked ``likes`` items and viewed ``views`` others in the
    ``span_days`` days before ``days_ago`` days ago, landing in ``segment``."""

    segment: str
    users: int
    likes: int
    views: int = 0
    days_ago: int = 1
    span_days: int = 7

    def user_id(self, n: int) -> str:
        return f"reader-{self.segment}-{n}"

    def history(self, rng: random.Random, now: float) -> list[tuple[str, float]]:
        """One user's events as (type, timestamp), oldest first, timed as a person's would
        be: sessions of one to eight events 5 to 90 s apart, in the daytime (8:00 to 21:00
        UTC) of days in the cohort's span before ``now``.

        >>> history = Cohort("regular", 1, likes=3, views=2).history(random.Random(0), 1e9)
        >>> times = [t for _, t in history]
        >>> sorted(kind for kind, _ in history), times == sorted(times), max(times) < 1e9
        (['like', 'like', 'like', 'view', 'view'], True, True)
        """
        types = ["like"] * self.likes + ["view"] * self.views
        rng.shuffle(types)
        midnight = now // DAY * DAY
        times: list[float] = []
        while len(times) < len(types):
            day = rng.randrange(self.days_ago, self.days_ago + self.span_days)
            t = midnight - day * DAY + rng.uniform(8.0, 21.0) * HOUR
            for _ in range(rng.randint(1, 8)):
                times.append(t)
                t += rng.uniform(5.0, 90.0)
        return list(zip(types, sorted(times[: len(types)]), strict=True))


@dataclass(frozen=True, slots=True)
class Readers:
    """The users the read-path benchmarks ask about, and what they send.

    Known users (``cohorts``) get their events before the first read
    benchmark, so they have preference vectors and span every segment
    (``new`` < 5 interactions, ``power`` > 100, ``inactive`` idle ≥ 30 days,
    ``regular`` otherwise), within the server's default per-user rate limits
    (60 explicit and 600 implicit events a minute). Unknown users have never
    been seen: segment ``new``, no preferences. Requests come in blocks of
    ``block``: a ``known_share`` of them name a known user at random, the
    rest the block's own unknown users, ``visits`` requests each (a short
    session), shuffled.
    """

    cohorts: tuple[Cohort, ...] = (
        Cohort("new", 200, likes=2),
        Cohort("regular", 700, likes=20),
        Cohort("power", 50, likes=50, views=60),
        Cohort("inactive", 50, likes=20, days_ago=60),
    )
    known_share: float = 0.3
    visits: int = 4
    block: int = 200
    candidates: int = 100
    """Candidates per ``POST /rank``, spread evenly over the algorithms."""
    rank_bodies: int = 64
    """Distinct candidate lists the rank requests cycle through."""

    def known(self) -> list[str]:
        return [c.user_id(n) for c in self.cohorts for n in range(c.users)]

    def seed_batches(
        self, workload: Workload, prefix: str, now: datetime, size: int = 1_000
    ) -> Iterator[dict[str, Any]]:
        """``POST /feedback`` bodies giving every known user their history (see
        :meth:`Cohort.history`) on random items, each user's events in order."""
        rng = random.Random(1)
        events = (
            {
                "event_id": f"{prefix}-{cohort.user_id(n)}-{i}",
                "user_id": cohort.user_id(n),
                "item_id": workload.item_id(rng.randrange(workload.items)),
                "type": event_type,
                "timestamp": datetime.fromtimestamp(at, UTC).isoformat(),
            }
            for cohort in self.cohorts
            for n in range(cohort.users)
            for i, (event_type, at) in enumerate(cohort.history(rng, now.timestamp()))
        )
        while batch := list(itertools.islice(events, size)):
            yield {"events": batch}

    def user_ids(self, prefix: str, count: int, seed: int = 0) -> list[str]:
        """``count`` users to ask about in order; unknown ones are named ``{prefix}-{n}``.

        >>> readers = Readers(block=10, known_share=0.2, visits=4)
        >>> ids = readers.user_ids("anon", 25)
        >>> len(ids), sum(i.startswith("anon-") for i in ids[:10]), ids[:10].count("anon-0")
        (25, 8, 4)
        """
        rng = random.Random(seed)
        known = self.known()
        per_block = round(self.block * (1.0 - self.known_share) / self.visits)
        unknown = itertools.count()
        ids: list[str] = []
        while len(ids) < count:
            block = [
                f"{prefix}-{n}"
                for n in itertools.islice(unknown, per_block)
                for _ in range(self.visits)
            ]
            block += rng.choices(known, k=self.block - len(block))
            rng.shuffle(block)
            ids += block
        return ids[:count]

    def rank_body(self, workload: Workload, rng: random.Random) -> bytes:
        """A ``POST /rank`` body: distinct registered items, each with an algorithm and a score."""
        items = rng.sample(range(workload.items), self.candidates)
        candidates = [
            {
                "item_id": workload.item_id(n),
                "algorithm": ALGORITHMS[i % len(ALGORITHMS)],
                "score": round(rng.random(), 4),
            }
            for i, n in enumerate(items)
        ]
        return orjson.dumps({"candidates": candidates})


def read_experiment(experiment_id: str) -> dict[str, Any]:
    """The experiment running during the read benchmarks: two variants 50/50, one metric."""
    return {
        "experiment_id": experiment_id,
        "name": "read-path benchmark",
        "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
        "metrics": [{"name": "bought", "type": "binomial", "event": "purchase"}],
    }


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """The requests of one read load, replayed in order by every load generator.

    Request ``i`` is ``method paths[i % len(paths)]`` with body
    ``bodies[i % len(bodies)]`` (none when there are no bodies).
    """

    method: str
    paths: tuple[str, ...]
    bodies: tuple[bytes, ...] = ()

    def write(self, directory: Path) -> tuple[Path, Path | None]:
        """The plan as files for ``replay.lua``: paths, then bodies, one per line."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = directory / "paths.txt"
        paths.write_text("".join(f"{p}\n" for p in self.paths))
        if not self.bodies:
            return paths, None
        bodies = directory / "bodies.txt"
        bodies.write_bytes(b"".join(b + b"\n" for b in self.bodies))
        return paths, bodies
