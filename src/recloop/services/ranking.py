"""What the orchestrator asks per request: the strategy for a user, a ranking of candidates.

``rank`` fuses the candidates' own scores by the segment's algorithm weights,
adds the user's preference affinity, explores the top slot with probability
ε — the segment's ε as a ceiling, shrunk as the user's interactions grow, the
explored item drawn among the next best by a softmax of their scores
(``core.exploration.explore``) — and logs the impression durably — every shown item
with its exact propensity and the features used — before answering, so that
later clicks carrying its ``impression_id`` can be joined to it for training.

With ``probe`` an exploring draw is a probe instead (``core.exploration.probe``): one
algorithm drawn by weight, its own top pick on top, and that slot's ``credit`` names it
alone (the other slots none), so the bandit learns each algorithm's own click rate
without bias; ε may then shrink with the segment's evidence too
(``segment_evidence_half``). With ``credit: ips`` every visit credits instead: the top
slot's ``credit_weights`` name every algorithm whose own top pick it shows, each weighed
by the inverse of the slot's propensity (``core.exploration.ips_credit``), so the counts
learn from every visit, not from probes alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recloop.config import Settings
from recloop.core.arrays import all_of, any_of
from recloop.core.errors import InvalidInput, NotFound
from recloop.core.events import Event
from recloop.core.experiments import Experiment, overrides, strategy_weights
from recloop.core.exploration import effective_epsilon, explore, ips_credit, probe
from recloop.core.features import FEATURE_NAMES, set_positions
from recloop.core.ids import uuid7
from recloop.core.preferences import Preferences
from recloop.core.ranking import (
    Candidate,
    Method,
    Proposed,
    cosines,
    credited,
    fuse_columns,
)
from recloop.core.segments import SegmentRules, segment_of
from recloop.core.slates import Slate
from recloop.ports import EventLog, Impression, ImpressionStore
from recloop.resilience import RetryCounts, retry_read
from recloop.services.batching import GroupCommit
from recloop.services.experiments import ExperimentService
from recloop.services.learning import LearningService, Route
from recloop.services.optimizer import Optimizer, SegmentWeights
from recloop.services.preferences import PreferenceService
from recloop.services.vectors import ItemRows, ItemVectors

RANKING_NAMES: Final = ("fusion", "affinity")
"""The features an impression logs without continuous learning: the fused rank and the
preference affinity."""

LOGGED_NAMES: Final = (*RANKING_NAMES, *(n for n in FEATURE_NAMES if n != "affinity"))
"""The features an impression logs with continuous learning: the fused rank, then the
click model's (``core.features.FEATURE_NAMES``, affinity first)."""

_FEATURE_COLUMNS: Final = LOGGED_NAMES[1:]
"""The click model's features as logged: ``FEATURE_NAMES`` with the affinity first
(``rank`` writes them into the logged matrix past its fusion column)."""


@dataclass(frozen=True, slots=True)
class RankConfig:
    """What ranking reads of the settings (the ``exploration``, ``rank`` and ``segments``
    sections, whose fields say what each means): :meth:`of` is the one place it is read."""

    epsilons: Mapping[str, float]
    segment_rules: SegmentRules
    rrf_k: float
    affinity_weight: float
    seed: int | None
    fusion: Method
    evidence_half: float | None
    explore_top: int
    temperature: float | None
    probe: bool
    segment_evidence_half: float | None
    affinity_list: str | None
    ips: bool = False
    credit_clip: float = 3.0

    @classmethod
    def of(cls, settings: Settings) -> RankConfig:
        x, rank = settings.exploration, settings.rank
        return cls(
            epsilons=dict(x.epsilon),
            segment_rules=settings.segments.rules,
            rrf_k=rank.rrf_k,
            affinity_weight=rank.affinity_weight,
            seed=x.seed,
            fusion=rank.fusion,
            evidence_half=x.evidence_half,
            explore_top=x.top,
            temperature=x.temperature,
            probe=x.probe,
            segment_evidence_half=x.segment_evidence_half,
            affinity_list=rank.affinity_list,
            ips=x.probe and x.credit == "ips",
            credit_clip=x.credit_clip,
        )


@dataclass(frozen=True, slots=True)
class Strategy:
    """How to recommend for one user now, experiment overrides applied.

    A running experiment's variant ``config`` may override ``weights`` (what they
    become: ``core.experiments.strategy_weights``), ``epsilon`` and
    ``model_slot``; when several experiments override the same thing, one wins
    (``core.experiments.resolve``) and only the winner is listed.
    """

    user: UserContext
    segment_weights: SegmentWeights
    weights: dict[str, float]
    epsilon: float
    """The user's exploration rate: the segment's (or a variant's) ε as a ceiling, shrunk by
    the user's interactions (``core.exploration.effective_epsilon``)."""
    experiments: list[dict[str, Any]]
    model_slot: str | None = None
    route: Route = field(default_factory=Route)
    """The model serving the user (its slot and version; all None without a model)."""


@dataclass(frozen=True, slots=True)
class UserContext:
    """A user as the read path sees them: committed preferences (None if unknown) and segment."""

    user_id: str
    preferences: Preferences | None
    segment: str


def _picker(rows: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """``rows``' entries of a sequence, as a tuple (``itemgetter`` of one row gives the
    entry alone, of none fails)."""
    if len(rows) > 1:
        return itemgetter(*rows)
    return lambda values: tuple([values[i] for i in rows])


def impression_writer(store: ImpressionStore) -> GroupCommit[Impression, None]:
    """Impressions are logged by group commit, like events."""

    async def write(batch: list[Impression]) -> list[None]:
        await store.add_impressions(batch)
        return [None] * len(batch)

    return GroupCommit("impression-writer", write, max_items=5_000)


class Ranker:
    def __init__(
        self,
        preferences: PreferenceService,
        optimizer: Optimizer,
        vectors: ItemVectors,
        impressions: GroupCommit[Impression, None],
        store: ImpressionStore,
        log_: EventLog,
        config: RankConfig,
        clock: Callable[[], float] = time.time,
        experiments: ExperimentService | None = None,
        learning: LearningService | None = None,
        retries: RetryCounts | None = None,
    ) -> None:
        self._retries = retries
        self._experiments = experiments
        self._learning = learning
        self._preferences = preferences
        self._optimizer = optimizer
        self._vectors = vectors
        self._impressions = impressions
        self._store = store
        self._log = log_
        self._config = config
        self._clock = clock
        self._rng = np.random.default_rng(config.seed)
        listed = config.affinity_list
        if listed is not None and listed not in optimizer.algorithms:
            raise InvalidInput(
                "rank.affinity_list",
                f"must be one of bandit.algorithms {list(optimizer.algorithms)}, got {listed!r}",
            )

    async def user(self, user_id: str) -> UserContext:
        prefs = await self._preferences.find(user_id)
        interactions = 0 if prefs is None else prefs.interactions
        last = None if prefs is None else prefs.last_event_at
        segment = segment_of(interactions, last, self._clock(), self._config.segment_rules)
        return UserContext(user_id, prefs, segment)

    async def strategy(self, user_id: str, expose: bool = True) -> Strategy:
        """The user's segment and weights, the exploration rate, the experiments they are in
        (their exposures recorded unless ``expose`` is false: a look), with the variants'
        overrides applied."""
        user = await self.user(user_id)
        segment_weights = await self._optimizer.weights(user.segment)
        assigned: list[tuple[Experiment, str]] = []
        if self._experiments is not None:
            assigned = (
                await self._experiments.expose_running(user_id)
                if expose
                else self._experiments.running_variants(user_id)
            )
        changed = overrides(assigned)
        route = Route()
        if self._learning is not None:
            route = self._learning.route(user_id, changed.model_slot)
        ceiling = changed.epsilon
        if ceiling is None:
            ceiling = self._config.epsilons[user.segment]
        interactions = 0 if user.preferences is None else user.preferences.interactions
        epsilon = effective_epsilon(ceiling, interactions, self._config.evidence_half)
        if self._config.probe and self._config.segment_evidence_half is not None:
            # probes teach the segment's weights: fewer as the segment's evidence grows
            epsilon = effective_epsilon(
                epsilon, segment_weights.evidence, self._config.segment_evidence_half
            )
        return Strategy(
            user,
            segment_weights,
            strategy_weights(changed, segment_weights.weights),
            epsilon,
            [{"experiment_id": e.experiment_id, "variant": v} for e, v in assigned],
            route.slot if route.slot is not None else changed.model_slot,
            route,
        )

    async def rank(
        self,
        user_id: str,
        candidates: Sequence[Proposed],
        k: int | None,
        context: Mapping[str, Any] | None,
    ) -> tuple[Impression, Strategy]:
        strategy = await self.strategy(user_id)
        user, epsilon = strategy.user, strategy.epsilon
        item_ids = [c.item_id for c in candidates]
        ids = list(dict.fromkeys(item_ids))
        prefers = user.preferences is not None and bool(any_of(user.preferences.vector))
        # One read of the items in columns: vectors for affinity, the rest for features.
        table: ItemRows | None = None
        if prefers or self._learning is not None:
            table = await self._vectors.table(
                ids, hashed=self._learning is not None, vectors=prefers
            )
        affinities: dict[str, float] = {}
        if prefers and user.preferences is not None and table is not None and any_of(table.known):
            if all_of(table.known):  # every candidate known (the usual request): no gather
                values = cosines(user.preferences.vector, table.vectors)
                affinities = dict(zip(ids, values.tolist(), strict=True))
            else:
                known = np.flatnonzero(table.known)
                values = cosines(user.preferences.vector, table.vectors[known])
                affinities = dict(
                    zip((ids[i] for i in known.tolist()), values.tolist(), strict=True)
                )
        affinity_weight, listed = self._config.affinity_weight, self._config.affinity_list
        if listed is not None:  # the affinity is one more list, weighed by the bandit
            affinity_weight = 0.0
            candidates = [*candidates, *(Candidate(i, listed, v) for i, v in affinities.items())]
            item_ids = [*item_ids, *affinities]
        fused = fuse_columns(
            candidates,
            strategy.weights,
            affinities,
            rrf_k=self._config.rrf_k,
            affinity_weight=affinity_weight,
            method=self._config.fusion,
            item_ids=item_ids,
        )
        route = strategy.route
        n = len(fused)
        names: tuple[str, ...] = RANKING_NAMES
        scores = fused.score
        if self._learning is None:
            logged = np.empty((n, len(names)), dtype=np.float32)
            logged[:, 0] = fused.fusion
            logged[:, 1] = fused.affinity
        else:
            # Every candidate's features, logged (float32) with the impression: a model
            # is served those values and later learns from exactly them.
            # Written straight into the logged columns (no float64 matrix to copy).
            now = self._clock()
            prefs = user.preferences
            names = LOGGED_NAMES
            logged = np.empty((n, len(names)), dtype=np.float32)
            logged[:, 0] = fused.fusion
            self._learning.feature_matrix(
                user_id,
                user.segment,
                0 if prefs is None else prefs.interactions,
                None if prefs is None else prefs.last_event_at,
                fused,
                table.take(fused.appearance, vectors=False) if table is not None else None,
                context or {},
                now,
                out=logged[:, 1:],
                names=_FEATURE_COLUMNS,
            )
            if route.model is not None:
                scores = self._learning.predict(route.model, logged, names)
        # the greedy order: a model's, else the fused rows' own (None: no reordering)
        order = np.argsort(-scores, kind="stable") if route.model is not None else None
        probed: str | None = None
        chance = 0.0
        probing = self._config.probe and bool(fused.firsts)
        top_credits: dict[str, float] = {}
        if probing:
            names_probed = [a for a in fused.firsts if strategy.weights.get(a, 0.0) > 0.0]
            picks: Sequence[int] | npt.NDArray[np.intp] = [fused.firsts[a] for a in names_probed]
            if order is not None:
                place = np.empty(n, dtype=np.intp)
                place[order] = np.arange(n)  # a fused row's place in the greedy order
                picks = place[picks]
            drawn = probe(
                picks,
                [strategy.weights[a] for a in names_probed],
                n,
                epsilon,
                self._rng,
            )
            explored = drawn.explored
            if drawn.algorithm is not None:
                probed, chance = names_probed[drawn.algorithm], drawn.probability
            if self._config.ips and names_probed and n:
                weights = ips_credit(
                    picks,
                    int(explored.order[0]),
                    float(explored.propensities[0]),
                    self._config.credit_clip,
                )
                top_credits = {
                    a: w for a, w in zip(names_probed, weights.tolist(), strict=True) if w > 0.0
                }
        else:
            explored = explore(
                scores if order is None else scores[order],
                epsilon,
                self._rng,
                self._config.explore_top,
                self._config.temperature,
            )
        positions = explored.order if k is None else explored.order[:k]
        shown_rows = positions if order is None else order[positions]
        rows = shown_rows.tolist()
        # the shown rows' columns: indexed by the array (a list index is converted first),
        # lists reordered by itemgetter (a tuple, no Python loop)
        pick = _picker(rows)
        propensities = explored.propensities[: len(rows)].tolist()
        features = logged[shown_rows]
        set_positions(features, names)
        impression_id = uuid7()
        algorithms = pick(fused.algorithms)
        shares = fused.shown_shares(shown_rows, algorithms)
        credit_weights: tuple[dict[str, float], ...] = ()
        if probing and self._config.ips:  # the top slot credits by inverse propensity
            credits: tuple[str | None, ...] = (None,) * len(rows)
            chances = (0.0,) * len(rows)
            credit_weights = (top_credits, *({},) * (len(rows) - 1))[: len(rows)]
        elif probing:  # the probed slot credits its algorithm alone; the rest none
            credits = (probed, *(None,) * (len(rows) - 1))[: len(rows)]
            chances = (chance, *(0.0,) * (len(rows) - 1))[: len(rows)]
        else:
            credits = credited(algorithms, fused.share_matrix(shown_rows), impression_id)
            chances = tuple(
                s[a.index(c)] if c is not None else 0.0
                for s, a, c in zip(shares, algorithms, credits, strict=True)
            )
        item_ids = fused.item_ids
        impression = Impression(
            impression_id=impression_id,
            user_id=user_id,
            segment=user.segment,
            created_at=self._clock(),
            epsilon=epsilon,
            shown=Slate(
                pick(item_ids),
                tuple(scores[shown_rows].tolist()),
                tuple(propensities),
                ((explored.promoted > 0,) + (False,) * (len(rows) - 1)) if rows else (),
                algorithms,
                features,
                names,
                shares=shares,
                credits=credits,
                credit_probabilities=chances,
                credit_weights=credit_weights,
            ),
            context=dict(context or {}),
            experiments=strategy.experiments,
            model_version=route.version,
            model_slot=strategy.model_slot,
        )
        await self._impressions.submit([impression])
        return impression, strategy

    async def impression(self, impression_id: str) -> tuple[Impression, list[Event]]:
        """A logged impression with the feedback events that name it."""
        retries = self._retries
        found = await retry_read(
            "get_impression", self._store.get_impression, impression_id, counts=retries
        )
        if found is None:
            raise NotFound("impression", impression_id)
        feedback = await retry_read(
            "read_impression_feedback",
            self._log.read_impression_feedback,
            impression_id,
            counts=retries,
        )
        return found, feedback
