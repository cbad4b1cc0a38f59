"""A seeded simulated world of users, items and clicks, for tests and benchmarks.

Users and items carry hidden latent vectors; a click happens with probability::

    p = sigmoid( -3.0 + 2.0 u·v + quality + genre_taste[genre]
                 + 0.4 cos(2π (hour - 20) / 24) + device_effect - 0.5 log1p(position) )

(``u``, ``v`` unit vectors; evenings click more, mobile less, lower slots less).
recloop sees only what it would in production: a noisy estimate of ``u``
(the user's preference vector, better with more interactions), the item's
attributes (its genre among them), its popularity (loosely tied to
quality), its historical CTR (noisy, unknown for new items), the hour and
the device. A model can learn most of ``p`` from the
:func:`~recloop.core.features.features` of those, while the logging policy
does not use them all.

:func:`simulate` logs impressions as ``rank`` would: candidates ordered by
a no-model score (fused popularity plus preference affinity, as
``core.ranking.fuse`` does with ``affinity_weight = 0.5``), an ε-greedy slate
(:func:`~recloop.core.exploration.epsilon_greedy`, exact propensities), the
features of every shown item, and clicks with their times. It also keeps
what production cannot know: every candidate's true click probability in
the top slot, so that off-policy estimates can be checked against the truth
(:func:`true_value`).

>>> world = make_world(seed=1, n_users=50, n_items=40)
>>> sim = simulate(world, 200, seed=2)
>>> len(sim.impressions), sim.seed
(200, 2)
>>> rows, labels, times = training_examples(sim.impressions)
>>> len(rows) == len(labels) == len(times) == 200 * 8
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recloop.core.errors import InvalidInput
from recloop.core.exploration import (
    Slot,
    effective_epsilon,
    epsilon_greedy,
    explore,
    promotion_probabilities,
    slot_propensity,
    top_probabilities,
)
from recloop.core.features import (
    ALGORITHMS,
    DEVICES,
    ContextFeatures,
    ItemFeatures,
    UserFeatures,
    at_position,
    features,
    to_matrix,
)
from recloop.core.ranking import Candidate, fuse_columns
from recloop.core.segments import SECONDS_PER_DAY, segment_of
from recloop.learning.validation import LoggedSlate

Vector = npt.NDArray[np.float64]

GENRES: Final = ("jazz", "rock", "pop", "classical", "hiphop", "folk")
TAGS: Final = tuple(f"tag{i}" for i in range(12))
CLICK_WINDOW: Final = 1800.0
"""Clicks count for an impression within this many seconds (30 minutes)."""

_BASE: Final = -3.0
_LATENT_WEIGHT: Final = 2.0
_HOUR_WEIGHT: Final = 0.4
_PEAK_HOUR: Final = 20.0
_POSITION_WEIGHT: Final = 0.5
_DEVICE_EFFECT: Final = {"desktop": 0.0, "mobile": -0.3, "tablet": 0.1, "tv": -0.1}
_ALL_DEVICES: Final = (*DEVICES, "tv")  # "tv" is no known device: device_other
_START: Final = 1_767_225_600.0  # 2026-01-01 00:00 UTC
_LATE_CLICKS: Final = 0.05  # share of clicks that come after the window


@dataclass(frozen=True, slots=True, eq=False)
class SimUser:
    """A user: hidden ``latent`` and ``genre_taste``; observable ``preference`` and ``features``."""

    user_id: str
    latent: Vector
    genre_taste: Vector
    preference: Vector
    genre_estimate: Vector
    device: str
    features: UserFeatures


@dataclass(frozen=True, slots=True, eq=False)
class SimItem:
    """An item: hidden ``latent`` and ``quality``; observable ``features`` and ``algorithm``."""

    item_id: str
    latent: Vector
    quality: float
    genre: int
    algorithm: str
    features: ItemFeatures


@dataclass(frozen=True, slots=True, eq=False)
class World:
    """Everyone and everything in the simulation, built by :func:`make_world`."""

    seed: int
    users: tuple[SimUser, ...]
    items: tuple[SimItem, ...]


@dataclass(frozen=True, slots=True, eq=False)
class ShownItem:
    """One shown item as ``rank`` logs it, plus its click time (None: no click) and true CTR."""

    item_id: str
    position: int
    score: float
    propensity: float
    explored: bool
    algorithms: tuple[str, ...]
    features: dict[str, float]
    clicked_at: float | None
    click_probability: float

    def logged(self) -> dict[str, Any]:
        """The slate entry exactly as ``rank`` logs it (``Impression.slate``)."""
        return {
            "item_id": self.item_id,
            "position": self.position,
            "score": self.score,
            "propensity": self.propensity,
            "explored": self.explored,
            "algorithms": list(self.algorithms),
            "features": dict(self.features),
        }


@dataclass(frozen=True, slots=True, eq=False)
class SimImpression:
    """A logged impression and what only the simulation knows.

    ``candidates`` are in the logging policy's greedy order;
    ``top_features`` are each candidate's features as if in the top slot and
    ``top_click_probability`` its true click probability there.
    """

    impression_id: str
    user_id: str
    segment: str
    created_at: float
    epsilon: float
    context: dict[str, Any]
    slate: tuple[ShownItem, ...]
    candidates: tuple[str, ...]
    top_features: tuple[dict[str, float], ...]
    top_click_probability: Vector
    top_logging: Vector | None = None
    """The logging policy's probability of putting each candidate on top, when it is the
    adaptive one (None: uniform ε-greedy at ``epsilon``)."""
    scores: Vector | None = None
    """Each candidate's no-model score, in ``candidates`` order."""


@dataclass(frozen=True, slots=True, eq=False)
class Simulation:
    """The impressions :func:`simulate` logged and the seed it used."""

    seed: int
    impressions: list[SimImpression]


def _unit(rng: np.random.Generator, dim: int) -> Vector:
    v = rng.normal(size=dim)
    return np.asarray(v / np.linalg.norm(v), dtype=np.float64)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _cosine(u: Vector, v: Vector) -> float:
    norms = float(np.linalg.norm(u) * np.linalg.norm(v))
    return float(u @ v) / norms if norms > 0 else 0.0


def make_world(
    seed: int = 0, n_users: int = 1_000, n_items: int = 300, dim: int = 8, now: float = _START
) -> World:
    """A random world, the same for the same arguments.

    >>> a, b = make_world(seed=3, n_users=5, n_items=5), make_world(seed=3, n_users=5, n_items=5)
    >>> [u.features for u in a.users] == [u.features for u in b.users]
    True
    """
    if n_users < 1 or n_items < 2 or dim < 1:
        raise InvalidInput("n_users", "need at least 1 user, 2 items and dimension 1")
    rng = np.random.default_rng(seed)
    users = []
    for i in range(n_users):
        latent = _unit(rng, dim)
        taste = rng.normal(0.0, 0.8, size=len(GENRES))
        interactions = int(rng.lognormal(2.5, 1.5))
        noise = 1.0 / math.sqrt(1.0 + interactions / 10.0)
        active = None if interactions == 0 else float(rng.exponential(10.0))
        last = None if active is None else now - active * SECONDS_PER_DAY
        users.append(
            SimUser(
                user_id=f"u{i}",
                latent=latent,
                genre_taste=taste,
                preference=latent + rng.normal(0.0, noise / math.sqrt(dim), size=dim),
                genre_estimate=taste + rng.normal(0.0, 0.6 * noise, size=len(GENRES)),
                device=str(rng.choice(DEVICES, p=[0.4, 0.5, 0.1])),
                features=UserFeatures(
                    segment=segment_of(interactions, last, now),
                    interactions=interactions,
                    days_since_active=active,
                    reliability=float(rng.choice([100.0, 80.0, 50.0], p=[0.85, 0.1, 0.05])),
                ),
            )
        )
    items = []
    for j in range(n_items):
        genre = int(rng.integers(len(GENRES)))
        tags = sorted(rng.choice(TAGS, size=2, replace=False).tolist())
        quality = float(rng.normal(0.0, 0.8))
        age = float(rng.exponential(60.0))
        ctr = None
        if age > 2.0:
            ctr = min(max(_sigmoid(_BASE + quality) + float(rng.normal(0.0, 0.01)), 0.0), 1.0)
        items.append(
            SimItem(
                item_id=f"i{j}",
                latent=_unit(rng, dim),
                quality=quality,
                genre=genre,
                algorithm=str(rng.choice(ALGORITHMS)),
                features=ItemFeatures(
                    popularity=int(rng.poisson(math.exp(4.0 + 0.3 * quality + rng.normal()))),
                    ctr=ctr,
                    age_days=age,
                    attributes={"genre": GENRES[genre], "tags": tags},
                ),
            )
        )
    return World(seed, tuple(users), tuple(items))


def click_probability(
    user: SimUser, item: SimItem, timestamp: float, device: str, position: int
) -> float:
    """The true probability that ``user`` clicks ``item`` at ``position`` (module docstring)."""
    hour = (timestamp % SECONDS_PER_DAY) / 3600.0
    logit = (
        _BASE
        + _LATENT_WEIGHT * float(user.latent @ item.latent)
        + item.quality
        + float(user.genre_taste[item.genre])
        + _HOUR_WEIGHT * math.cos(2.0 * math.pi * (hour - _PEAK_HOUR) / 24.0)
        + _DEVICE_EFFECT.get(device, 0.0)
        - _POSITION_WEIGHT * math.log1p(position)
    )
    return _sigmoid(logit)


def _no_model_scores(user: SimUser, items: Sequence[SimItem]) -> tuple[Vector, Vector]:
    """Fused popularity (normalised) plus half the preference affinity; and the affinities."""
    popularity = np.array([math.log1p(i.features.popularity) for i in items])
    affinity = np.array([_cosine(user.preference, i.latent) for i in items])
    top = float(popularity.max())
    fused = popularity / top if top > 0 else popularity
    return fused + 0.5 * affinity, affinity


def _rank_percentiles(items: Sequence[SimItem]) -> dict[str, list[float]]:
    """Each candidate's ``rank_pct`` row as ``rank`` computes it (``Fused.rank_pct``), each
    algorithm having ranked its candidates by popularity (what the no-model score fuses)."""
    proposed = [Candidate(i.item_id, i.algorithm, math.log1p(i.features.popularity)) for i in items]
    fused = fuse_columns(proposed, dict.fromkeys(ALGORITHMS, 1.0), {}, method="percentile")
    return dict(zip(fused.item_ids, fused.rank_pct.tolist(), strict=True))


def _row(
    user: SimUser,
    item: SimItem,
    context: ContextFeatures,
    affinity: float,
    position: int,
    rank_pct: Sequence[float],
) -> dict[str, float]:
    """The features ``rank`` would log; attribute affinity is the user's estimated genre taste."""
    norm = float(np.linalg.norm(user.genre_estimate))
    genre_affinity = float(user.genre_estimate[item.genre]) / norm if norm > 0 else 0.0
    return features(
        user.features,
        item.features,
        context,
        affinity,
        genre_affinity,
        position,
        item.algorithm,
        rank_pct,
    )


def simulate(
    world: World,
    n_impressions: int,
    epsilon: float = 0.2,
    n_candidates: int = 8,
    slate_size: int | None = None,
    days: float = 7.0,
    start: float = _START,
    seed: int | None = None,
    explore_top: int | None = None,
    temperature: float | None = None,
    evidence_half: float | None = None,
) -> Simulation:
    """Log ``n_impressions`` impressions spread over ``days``, oldest first.

    With ``explore_top`` None the slate is uniform ε-greedy
    (:func:`~recloop.core.exploration.epsilon_greedy`); given, it is ``rank``'s
    adaptive policy (:func:`~recloop.core.exploration.explore`: ``epsilon`` as
    the ceiling shrunk by the user's interactions at ``evidence_half``, the
    explored item drawn among the next ``explore_top`` by a softmax at
    ``temperature``).

    Each picks a random user, ``n_candidates`` random items and a device (the
    user's own 80% of the time, else any, ``tv`` included), ranks the
    candidates by the no-model score, shows an ε-greedy slate (the first
    ``slate_size`` slots; all when None) and draws each shown item's click.
    5% of clicks arrive after :data:`CLICK_WINDOW`, as late clicks do.
    """
    if n_candidates < 1 or n_candidates > len(world.items):
        raise InvalidInput(
            "n_candidates", f"must be in [1, {len(world.items)}], got {n_candidates}"
        )
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    rng = np.random.default_rng(seed)
    times = np.sort(start + rng.uniform(0.0, days * SECONDS_PER_DAY, size=n_impressions))
    impressions = []
    for n, timestamp in enumerate(times.tolist()):
        user = world.users[int(rng.integers(len(world.users)))]
        picked = rng.choice(len(world.items), size=n_candidates, replace=False)
        candidates = [world.items[int(j)] for j in picked]
        device = user.device if rng.random() < 0.8 else str(rng.choice(_ALL_DEVICES))
        context = ContextFeatures(timestamp, device)
        scores, affinities = _no_model_scores(user, candidates)
        order = np.argsort(-scores, kind="stable")
        greedy = [candidates[int(k)] for k in order]
        by_id = {
            item.item_id: (item, float(scores[k]), float(affinities[k]))
            for k, item in enumerate(candidates)
        }
        greedy_ids = [i.item_id for i in greedy]
        ranks = _rank_percentiles(candidates)
        top_rows = tuple(
            _row(user, i, context, by_id[i.item_id][2], 0, ranks[i.item_id]) for i in greedy
        )
        greedy_scores = scores[order]
        top_logging = None
        used = epsilon
        if explore_top is None:
            slots = epsilon_greedy(greedy_ids, epsilon, rng)
        else:
            used = effective_epsilon(epsilon, user.features.interactions, evidence_half)
            drawn = explore(greedy_scores, used, rng, explore_top, temperature)
            top_logging = top_probabilities(
                promotion_probabilities(greedy_scores, explore_top, temperature), used
            )
            slots = [
                Slot(greedy_ids[i], j, float(p), drawn.promoted > 0 and j == 0)
                for j, (i, p) in enumerate(
                    zip(drawn.order.tolist(), drawn.propensities.tolist(), strict=True)
                )
            ]
        shown = []
        for slot in slots if slate_size is None else slots[:slate_size]:
            item, score, _ = by_id[slot.item_id]
            p = click_probability(user, item, timestamp, device, slot.position)
            clicked_at = None
            if rng.random() < p:
                late = rng.random() < _LATE_CLICKS
                delay = (
                    rng.uniform(CLICK_WINDOW, 4 * CLICK_WINDOW) if late else rng.exponential(60.0)
                )
                clicked_at = timestamp + float(delay)
            shown.append(
                ShownItem(
                    slot.item_id,
                    slot.position,
                    score,
                    slot.propensity,
                    slot.explored,
                    (item.algorithm,),
                    at_position(top_rows[greedy_ids.index(slot.item_id)], slot.position),
                    clicked_at,
                    p,
                )
            )
        impressions.append(
            SimImpression(
                impression_id=f"imp{seed}-{n}",
                user_id=user.user_id,
                segment=user.features.segment,
                created_at=timestamp,
                epsilon=used,
                context={"device": device},
                slate=tuple(shown),
                candidates=tuple(greedy_ids),
                top_features=top_rows,
                top_click_probability=np.array(
                    [click_probability(user, i, timestamp, device, 0) for i in greedy]
                ),
                top_logging=top_logging,
                scores=np.asarray(greedy_scores, dtype=np.float64),
            )
        )
    return Simulation(seed, impressions)


def _clicked(impression: SimImpression, shown: ShownItem, window: float) -> bool:
    return shown.clicked_at is not None and shown.clicked_at - impression.created_at <= window


def training_examples(
    impressions: Sequence[SimImpression], window: float = CLICK_WINDOW
) -> tuple[list[dict[str, float]], Vector, Vector]:
    """One example per shown item: its logged features, 1.0 if clicked within ``window``
    seconds of the impression, and the impression's time."""
    rows, labels, times = [], [], []
    for impression in impressions:
        for shown in impression.slate:
            rows.append(shown.features)
            labels.append(1.0 if _clicked(impression, shown, window) else 0.0)
            times.append(impression.created_at)
    return rows, np.array(labels), np.array(times)


def logged_slates(
    impressions: Sequence[SimImpression],
    names: Sequence[str] | None = None,
    window: float = CLICK_WINDOW,
) -> list[LoggedSlate]:
    """The top slot of each impression for off-policy estimates, features in ``names`` order
    (:data:`~recloop.core.features.FEATURE_NAMES` when None)."""
    slates = []
    for impression in impressions:
        top = impression.slate[0]
        matrix = (
            to_matrix(impression.top_features)
            if names is None
            else to_matrix(impression.top_features, names)
        )
        slates.append(
            LoggedSlate(
                features=matrix,
                shown=impression.candidates.index(top.item_id),
                propensity=top.propensity,
                reward=1.0 if _clicked(impression, top, window) else 0.0,
            )
        )
    return slates


def logging_probabilities(impression: SimImpression) -> Vector:
    """The logging policy's probability of putting each candidate in the top slot."""
    if impression.top_logging is not None:
        return impression.top_logging
    return np.array(
        [
            slot_propensity(impression.candidates, c, 0, impression.epsilon)
            for c in impression.candidates
        ]
    )


def true_value(impressions: Sequence[SimImpression], policies: Sequence[npt.ArrayLike]) -> float:
    """The true expected top-slot click rate of a policy on these impressions' contexts.

    ``policies`` gives, per impression, the probability of putting each
    candidate (in ``candidates`` order) on top. Clicks after the window are
    not counted, as the estimators' rewards do not count them.
    """
    if len(policies) != len(impressions) or not impressions:
        raise InvalidInput(
            "policies", f"need one per impression ({len(impressions)}), got {len(policies)}"
        )
    total = sum(
        float(np.asarray(p, dtype=np.float64) @ i.top_click_probability)
        for i, p in zip(impressions, policies, strict=True)
    )
    return (1.0 - _LATE_CLICKS) * total / len(impressions)
